"""``python -m gateway audit keygen|verify|fetch|export|sessions|session``: the audit
log's signing key, offline verification, reading a shipped copy back, and reading the
log: events by time, principal, topic, connection and type (JSON lines or CSV, with a
verification summary on stderr), the client sessions, and one session replayed.

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
import csv
import json
import re
import ssl
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from gateway.audit import fetch, keys, query, shipping, verify
from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.upstream.clients import client_settings


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
    _query_arguments(sub)
    return parser


def _query_arguments(sub: Any) -> None:
    def common(command: argparse.ArgumentParser) -> None:
        command.add_argument("paths", nargs="*", type=Path, default=[Path()], metavar="PATH")
        command.add_argument("--from", dest="since", help="RFC 3339 time or epoch seconds")
        command.add_argument("--to", dest="until", help="RFC 3339 time or epoch seconds")
        command.add_argument("--principal", help="only this principal")

    export = sub.add_parser("export", help="events in a time range, as JSON lines or CSV")
    common(export)
    export.add_argument("--topic", help="only events naming this topic")
    export.add_argument("--connection", help="only this connection id")
    export.add_argument("--type", action="append", default=[], help="only this event type")
    export.add_argument("--checkpoints", action="store_true", help="include checkpoints")
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    export.add_argument("--out", type=Path, help="write here instead of stdout")
    export.add_argument("--public-key", type=Path, help="verify with this public key (PEM)")
    export.add_argument(
        "--no-verify", action="store_true", help="export even when verification fails"
    )
    listing = sub.add_parser("sessions", help="client connections in a time range")
    common(listing)
    listing.add_argument("--json", action="store_true", help="one JSON object per session")
    one = sub.add_parser("session", help="replay one connection's events in order")
    one.add_argument("connection", help="the connection id (from audit sessions)")
    one.add_argument("paths", nargs="*", type=Path, default=[Path()], metavar="PATH")
    one.add_argument("--json", action="store_true", help="the events as JSON lines")


def _filter(ns: argparse.Namespace) -> query.Filter:
    """The query's filter; raises ValueError naming the bad option."""
    times: dict[str, float | None] = {}
    for option, value in (("--from", ns.since), ("--to", ns.until)):
        try:
            times[option] = None if value is None else query.parse_time(value)
        except ValueError:
            raise ValueError(f"{option} {value!r}: not an RFC 3339 time or epoch seconds") from None
    return query.Filter(
        since=times["--from"],
        until=times["--to"],
        principal=ns.principal,
        topic=getattr(ns, "topic", None),
        connection=getattr(ns, "connection", None),
        types=frozenset(getattr(ns, "type", ()) or ()),
        checkpoints=getattr(ns, "checkpoints", False),
    )


def _missing(paths: list[Path], command: str) -> int | None:
    for path in paths:
        if not path.exists():
            print(f"audit {command}: no such file or directory: {path}", file=sys.stderr)
            return 2
    return None


def _export(ns: argparse.Namespace) -> int:
    if (code := _missing(ns.paths, "export")) is not None:
        return code
    try:
        where = _filter(ns)
        public = keys.load_public_pem(ns.public_key.read_bytes()) if ns.public_key else None
    except (OSError, ValueError) as exc:
        print(f"audit export: {exc}", file=sys.stderr)
        return 2
    # The summary an auditor needs beside the events: does the log they came from hold?
    reports = verify.verify(ns.paths, public, allow_unsealed=True)
    for report in reports:
        for line in verify.describe(report):
            print(line, file=sys.stderr)
    if not reports:
        print("audit export: no audit segments found", file=sys.stderr)
        return 1
    failed = not all(r.ok for r in reports)
    if failed and not ns.no_verify:
        print("audit export: the log does not verify; nothing exported", file=sys.stderr)
        return 1
    out = ns.out.open("w", encoding="utf-8", newline="") if ns.out else sys.stdout
    try:
        count = _write_events(out, ns.format, query.events(ns.paths, where))
    finally:
        if ns.out:
            out.close()
    print(f"exported {count} events", file=sys.stderr)
    return 1 if failed else 0


def _write_events(out: TextIO, kind: str, found: Iterable[dict[str, Any]]) -> int:
    count = 0
    if kind == "csv":
        writer = csv.writer(out)
        writer.writerow(query.CSV_COLUMNS)
        for event in found:
            writer.writerow(query.csv_row(event))
            count += 1
        return count
    for event in found:
        out.write(json.dumps(event, sort_keys=True, separators=(",", ":")) + "\n")
        count += 1
    return count


def _sessions(ns: argparse.Namespace) -> int:
    if (code := _missing(ns.paths, "sessions")) is not None:
        return code
    try:
        where = _filter(ns)
    except ValueError as exc:
        print(f"audit sessions: {exc}", file=sys.stderr)
        return 2
    found = query.sessions(ns.paths, where)
    if ns.json:
        for session in found:
            print(json.dumps(session.as_json(), sort_keys=True))
        return 0
    print(f"{'opened':24}  {'connection':32}  {'principal':16}  {'listener':10}  requests  closed")
    for session in found:
        closed = query.format_time(session.closed) if session.closed else "open"
        print(
            f"{query.format_time(session.opened):24}  {session.connection:32}  "
            f"{session.principal or '-':16}  {session.listener or '-':10}  "
            f"{session.requests:8}  {closed} {session.reason or ''}".rstrip()
        )
    return 0


def _session(ns: argparse.Namespace) -> int:
    if (code := _missing(ns.paths, "session")) is not None:
        return code
    if not re.fullmatch(r"[0-9a-f]{32}", ns.connection):
        print(f"audit session: {ns.connection!r} is not a connection id", file=sys.stderr)
        return 2
    found = query.replay(ns.paths, ns.connection)
    if not found:
        print(f"audit session: no events of connection {ns.connection}", file=sys.stderr)
        return 1
    for event in found:
        if ns.json:
            print(json.dumps(event, sort_keys=True, separators=(",", ":")))
        else:
            print(query.describe(event))
    return 0


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
        return client_settings(getattr(config.clusters, name))
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
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (`| head`): not an error of the log or of the command.
        sys.stderr.close()
        return 0


def _main(argv: list[str]) -> int:
    ns = _parser().parse_args(argv)
    if ns.command == "keygen":
        return _keygen(ns.out)
    if ns.command == "fetch":
        return _fetch(ns)
    if ns.command == "export":
        return _export(ns)
    if ns.command == "sessions":
        return _sessions(ns)
    if ns.command == "session":
        return _session(ns)
    return _verify(ns)
