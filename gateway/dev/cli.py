"""`python -m gateway dev up | down | status | node`: argparse and output, nothing else.

`dev run` (clusters plus a gateway in the foreground) lives in `gateway/__main__.py`,
because it runs the gateway itself, which this package does not import.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from gateway.dev import faults, mirror, registry
from gateway.dev.clusters import down, status, up
from gateway.dev.errors import DevError, ToolMissingError
from gateway.dev.layout import CLUSTER_NAMES, NODE_COUNTS, PRIMARY_BROKERS_ENV, default_run_dir
from gateway.dev.state import ClusterInfo, NodeInfo

NODE_ACTIONS: dict[str, Callable[..., NodeInfo]] = {
    "pause": faults.pause_node,
    "resume": faults.resume_node,
    "kill": faults.kill_node,
    "stop": faults.stop_node,
    "start": faults.start_node,
    "restart": faults.restart_node,
}


def _print_table(infos: list[ClusterInfo]) -> None:
    rows = [("NAME", "NODE", "STATE", "BOOTSTRAP", "CONTROLLER", "PID", "LOG")]
    for info in infos:
        for node in info.nodes:
            pid = str(node.pid) if node.pid is not None else "-"
            where = (node.bootstrap, node.controller, pid, node.log_file)
            rows.append((info.name, str(node.node_id), node.state, *where))
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
    schemas = registry.status(default_run_dir())
    if schemas is not None:
        state = f"running (pid {schemas.pid})" if schemas.running else "stopped"
        print(f"schema registry (Karapace): {schemas.url} {state}; log {schemas.log_file}")
    elif registry.karapace_dir() is None:
        print(f"schema registry: not started (no Karapace folder; set {registry.KARAPACE_DIR_ENV})")
    replication = mirror.status(default_run_dir())
    if replication is not None:
        state = f"running (pid {replication.pid})" if replication.running else "stopped"
        print(
            f"MirrorMaker 2: {replication.source} -> {replication.target} {state}, topics "
            f"{replication.topics!r}, groups {replication.groups!r}; log {replication.log_file}"
        )


def _as_json(infos: list[ClusterInfo]) -> str:
    """The clusters, the schema registry and MirrorMaker 2 (null where never started)."""
    run = default_run_dir()
    schemas, replication = registry.status(run), mirror.status(run)
    doc = {
        "clusters": [dataclasses.asdict(info) for info in infos],
        "registry": dataclasses.asdict(schemas) if schemas is not None else None,
        "mirror": dataclasses.asdict(replication) if replication is not None else None,
    }
    return json.dumps(doc, indent=2)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway dev",
        description="Run local primary and secondary Kafka clusters for the gateway.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up", help="start both clusters (no-op if running)")
    up_parser.add_argument(
        "--primary-brokers",
        type=int,
        choices=NODE_COUNTS,
        help=f"nodes in the primary cluster (default: ${PRIMARY_BROKERS_ENV}, else as it "
        "runs, else 1)",
    )
    up_parser.add_argument("--json", action="store_true", help="print cluster info as JSON")
    sub.add_parser("down", help="stop the clusters started by `up` (data is kept)")
    status_parser = sub.add_parser("status", help="show addresses and whether each is running")
    status_parser.add_argument("--json", action="store_true", help="print cluster info as JSON")
    node_parser = sub.add_parser("node", help="fault controls: pause, kill, move one node")
    node_parser.add_argument("action", choices=sorted(NODE_ACTIONS))
    node_parser.add_argument("node_id", type=int, help="1, or 1..3 for a three-node primary")
    node_parser.add_argument("--cluster", choices=CLUSTER_NAMES, default="primary")
    node_parser.add_argument(
        "--new-address", action="store_true", help="restart: come back on the other client port"
    )
    node_parser.add_argument("--json", action="store_true", help="print node info as JSON")
    return parser


def _node_command(args: argparse.Namespace) -> NodeInfo:
    extra = {"new_address": True} if args.new_address else {}
    if extra and args.action != "restart":
        raise DevError("--new-address goes with `node restart` only")
    return NODE_ACTIONS[args.action](args.cluster, args.node_id, **extra)


def _run(args: argparse.Namespace) -> list[ClusterInfo] | NodeInfo | None:
    if args.command == "down":
        down()
        return None
    if args.command == "node":
        return _node_command(args)
    if args.command == "up":
        return up(primary_brokers=args.primary_brokers)
    return status()


def main(argv: list[str]) -> int:
    """`python -m gateway dev ...`; returns the process exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    # The readiness probe's per-login INFO lines are noise on a terminal.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        result = _run(args)
    except ToolMissingError as err:
        print(err, file=sys.stderr)
        return 2
    except DevError as err:
        print(f"gateway dev {args.command}: {err}", file=sys.stderr)
        return 1
    if result is None:
        print("dev clusters stopped")
    elif isinstance(result, NodeInfo):
        doc = dataclasses.asdict(result)
        print(
            json.dumps(doc, indent=2) if args.json else " ".join(f"{k}={v}" for k, v in doc.items())
        )
    elif args.json:
        print(_as_json(result))
    else:
        _print_table(result)
    return 0
