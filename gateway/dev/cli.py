"""`python -m gateway dev up | down | status [--json]`: argparse and output, nothing else.

`dev run` (clusters plus a gateway in the foreground) lives in `gateway/__main__.py`,
because it runs the gateway itself, which this package does not import.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from gateway.dev.clusters import down, status, up
from gateway.dev.errors import DevError, ToolMissingError
from gateway.dev.state import ClusterInfo


def _print_table(infos: list[ClusterInfo]) -> None:
    rows = [("NAME", "STATE", "BOOTSTRAP", "CONTROLLER", "PID", "LOG")]
    for info in infos:
        state = "running" if info.pid is not None else "stopped"
        pid = str(info.pid) if info.pid is not None else "-"
        rows.append((info.name, state, info.bootstrap, info.controller, pid, info.log_file))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]))
    if infos:
        first = infos[0]
        print(
            f"\nlogin: {first.username} / {first.sasl_mechanism} over {first.security_protocol}; "
            f"password in {Path(first.password_file).parent.parent}/<name>/admin.password"
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway dev",
        description="Run local primary and secondary Kafka clusters for the gateway.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up", help="start both clusters (no-op if running)")
    up_parser.add_argument("--json", action="store_true", help="print cluster info as JSON")
    sub.add_parser("down", help="stop the clusters started by `up` (data is kept)")
    status_parser = sub.add_parser("status", help="show addresses and whether each is running")
    status_parser.add_argument("--json", action="store_true", help="print cluster info as JSON")
    return parser


def main(argv: list[str]) -> int:
    """`python -m gateway dev ...`; returns the process exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    # The readiness probe's per-login INFO lines are noise on a terminal.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        if args.command == "down":
            down()
            print("dev clusters stopped")
            return 0
        infos = up() if args.command == "up" else status()
    except ToolMissingError as err:
        print(err, file=sys.stderr)
        return 2
    except DevError as err:
        print(f"gateway dev {args.command}: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([dataclasses.asdict(info) for info in infos], indent=2))
    else:
        _print_table(infos)
    return 0
