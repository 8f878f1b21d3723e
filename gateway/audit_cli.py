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
import asyncio
import ssl
import sys
from pathlib import Path
from typing import Any

from gateway.audit import fetch, kafka_sink, keys, shipping, verify
from gateway.config import load_config
from gateway.errors import ConfigError


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
    _fetch_arguments(sub)
    return parser


def _fetch_arguments(sub: Any) -> None:
    command = sub.add_parser("fetch", help="read an audit topic back into segment files")
    command.add_argument("--topic", default="_gateway_audit", help="the audit topic")
    command.add_argument("--out", type=Path, required=True, help="directory for the segments")
    command.add_argument("--config", type=Path, help="gateway config: use one of its clusters")
    command.add_argument("--cluster", default=None, help="with --config: primary or secondary")
    command.add_argument("--bootstrap", help="host:port[,host:port...] (without --config)")
    command.add_argument(
        "--security-protocol",
        default="PLAINTEXT",
        choices=["PLAINTEXT", "SASL_PLAINTEXT", "SSL", "SASL_SSL"],
    )
    command.add_argument("--sasl-mechanism", choices=["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
    command.add_argument("--username")
    command.add_argument("--password-file", type=Path, help="file holding the password")
    command.add_argument("--ca-file", type=Path, help="CA bundle for SSL")


def _fetch_settings(ns: argparse.Namespace) -> dict[str, Any]:
    if ns.config is not None:
        config = load_config(ns.config)
        name = ns.cluster or (
            config.audit.kafka.cluster if config.audit and config.audit.kafka else None
        )
        if name not in config.cluster_names:
            raise ConfigError(
                f"--cluster: name one of {', '.join(config.cluster_names)} (got {name!r})"
            )
        return kafka_sink.client_settings(getattr(config.clusters, name))
    if ns.bootstrap is None:
        raise ConfigError("give --bootstrap HOST:PORT or --config FILE")
    settings: dict[str, Any] = {
        "bootstrap_servers": ns.bootstrap.split(","),
        "security_protocol": ns.security_protocol,
    }
    if ns.security_protocol.endswith("SSL"):
        settings["ssl_context"] = ssl.create_default_context(
            cafile=str(ns.ca_file) if ns.ca_file else None
        )
    if ns.security_protocol.startswith("SASL_"):
        if ns.sasl_mechanism is None or ns.username is None or ns.password_file is None:
            raise ConfigError(
                "SASL needs --sasl-mechanism, --username and --password-file "
                "(never a password on the command line)"
            )
        try:
            password = ns.password_file.read_text().rstrip("\n")
        except OSError as exc:
            raise ConfigError(f"cannot read {ns.password_file}: {exc.strerror}") from None
        settings.update(
            sasl_mechanism=ns.sasl_mechanism,
            sasl_plain_username=ns.username,
            sasl_plain_password=password,
        )
    return settings


def _fetch(ns: argparse.Namespace) -> int:
    try:
        settings = _fetch_settings(ns)
        result = asyncio.run(fetch.fetch(settings, ns.topic, ns.out))
    except (ConfigError, fetch.FetchError) as exc:
        print(f"audit fetch: {exc}", file=sys.stderr)
        return 2
    except shipping.ConflictingDuplicate as exc:
        print(f"audit fetch: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"audit fetch: {ns.out}: {exc.strerror}", file=sys.stderr)
        return 2
    for instance, count in sorted(result.lines.items()):
        print(f"{instance}: {count} lines")
    print(
        f"{result.records} records read, {result.duplicates} identical duplicates dropped; "
        f"now run: python -m gateway audit verify {ns.out}"
    )
    return 0


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
    if ns.command == "fetch":
        return _fetch(ns)
    return _verify(ns)
