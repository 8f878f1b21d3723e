"""``python -m gateway masking keygen --out FILE``: write a new masking key (32 random
bytes as hex, mode 0600; an existing file is never replaced, since hashed values would
change meaning). Prints the key's fingerprint, never the key."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.masking import keyfile


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gateway masking", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    keygen = sub.add_parser("keygen", help="write a new masking key")
    keygen.add_argument("--out", type=Path, required=True, help="key file to create")
    return parser


def main(argv: list[str]) -> int:
    ns = _parser().parse_args(argv)
    out: Path = ns.out
    try:
        key = keyfile.generate(out)
    except FileExistsError:
        print(f"masking keygen: {out} exists; not replacing a masking key", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"masking keygen: {out}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"# masking key written to {out} (mode 0600); fingerprint {key.fingerprint}")
    return 0
