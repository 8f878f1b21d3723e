"""``python -m gateway audit keygen|verify``: the audit log's signing key, and offline
verification of a log.

``keygen --out FILE`` writes a new Ed25519 private key (PEM, mode 0600; an existing
file is never replaced) and prints the public key (PEM) and its key id, to be published
for auditors. ``verify [PATH ...] [--public-key PEM]`` checks the segments in the given
directories or files (default: the current directory): exit 0 when every chain
verifies, 1 naming the first bad line, 2 for a usage error. Without ``--public-key``
the signatures are checked against the key embedded in each checkpoint, which proves
only that the log is consistent with itself: anyone who rewrote it could have signed
it with a key of their own.

This module only parses arguments and prints; it reads and writes key and segment
files, never the running gateway's state.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.audit import keys, verify


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gateway audit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    keygen = sub.add_parser("keygen", help="write a new checkpoint signing key")
    keygen.add_argument("--out", type=Path, required=True, help="private key file to create")
    check = sub.add_parser("verify", help="verify hashes, chain links and signatures")
    check.add_argument("paths", nargs="*", type=Path, default=[Path()], metavar="PATH")
    check.add_argument("--public-key", type=Path, help="the instance's published public key (PEM)")
    check.add_argument(
        "--allow-unsealed",
        action="store_true",
        help="accept lines after the last checkpoint (a log still being written)",
    )
    return parser


def _keygen(out: Path) -> int:
    try:
        private = keys.generate(out)
    except FileExistsError:
        print(f"audit keygen: {out} exists; not replacing a signing key", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"audit keygen: {out}: {exc.strerror}", file=sys.stderr)
        return 1
    public = private.public_key()
    print(f"# private key written to {out} (mode 0600); publish this public key:")
    print(keys.public_pem(public), end="")
    print(f"key_id: {keys.key_id(public)}")
    return 0


def _verify(ns: argparse.Namespace) -> int:
    public = None
    if ns.public_key is not None:
        try:
            public = keys.load_public_pem(ns.public_key.read_bytes())
        except (OSError, ValueError) as exc:
            print(f"audit verify: {ns.public_key}: {exc}", file=sys.stderr)
            return 2
    missing = [p for p in ns.paths if not p.exists()]
    if missing:
        print(f"audit verify: no such file or directory: {missing[0]}", file=sys.stderr)
        return 2
    reports = verify.verify(ns.paths, public, allow_unsealed=ns.allow_unsealed)
    if not reports:
        print("audit verify: no audit segments found", file=sys.stderr)
        return 1
    if public is None:
        print(
            "warning: no --public-key: signatures were checked against the key recorded "
            "in each checkpoint, which proves only that the log is consistent with itself",
            file=sys.stderr,
        )
    for report in reports:
        for line in verify.describe(report):
            print(line)
    return 0 if all(r.ok for r in reports) else 1


def main(argv: list[str]) -> int:
    ns = _parser().parse_args(argv)
    if ns.command == "keygen":
        return _keygen(ns.out)
    return _verify(ns)
