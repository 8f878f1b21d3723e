"""``python -m gateway failover status --config FILE [--json]``: how far MirrorMaker 2
has replicated the primary to the secondary, read now from both clusters with the
gateway's own credentials (see :mod:`gateway.failover.replication`): per mirrored
partition the records a switch now would lose, per consumer group whether its offsets
are synced.

``python -m gateway failover drill --to secondary --dry-run --config FILE [--json]``:
what a planned switchover would meet now (see :mod:`gateway.failover.drill`): the
records to wait for, the partitions whose offsets are the same on both clusters, each
group's handoff and re-read records, topics not mirrored. The drill itself (fence,
switch, release) is not built: without ``--dry-run`` it is refused. Prints no secret."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.failover.drill import DrillPlan, drill_plan
from gateway.failover.mirror_records import MirrorRecordError
from gateway.failover.replication import ReplicationStatus, replication_status

T = TypeVar("T")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gateway failover", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="replication lag and group offset sync now")
    _reading_arguments(status, "status")
    drill = sub.add_parser("drill", help="what a planned switchover would meet now")
    drill.add_argument("--to", choices=["secondary"], required=True, help="the cluster to move to")
    drill.add_argument(
        "--dry-run", action="store_true", help="report what a drill would do; change nothing"
    )
    _reading_arguments(drill, "plan")
    return parser


def _reading_arguments(parser: argparse.ArgumentParser, shown: str) -> None:
    """What every command that reads both clusters takes."""
    parser.add_argument("--config", type=Path, required=True, help="the gateway's config")
    parser.add_argument("--json", action="store_true", help=f"print the {shown} as JSON")
    parser.add_argument("--topics", type=re.compile, help="only topics matching this regex")
    parser.add_argument("--groups", type=re.compile, help="only groups matching this regex")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="give up after this many seconds"
    )


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def status_text(status: ReplicationStatus) -> str:
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(status.read_at))
    state = "caught up" if status.caught_up else f"{status.pending} record(s) pending"
    if not status.partitions:
        state = "no mirrored topic (on both clusters, matching --topics)"
    lines = [f"replication {status.source} -> {status.target} at {when}: {state}"]
    if status.partitions:
        rows: list[tuple[str, ...]] = [
            ("TOPIC", "PARTITION", "SOURCE_END", "TARGET_END", "SYNCED", "PENDING")
        ]
        for p in status.partitions:
            synced = f"{p.synced.upstream}->{p.synced.downstream}" if p.synced else "-"
            pending = str(p.pending) if p.exact else f"<={p.pending}"
            rows.append(
                (p.topic, str(p.partition), str(p.source_end), str(p.target_end), synced, pending)
            )
        lines += ["", *_table(rows)]
    if status.groups:
        rows = [("GROUP", "TOPIC", "PARTITION", "SOURCE", "CHECKPOINT", "TARGET", "SYNCED")]
        for g in status.groups:
            point = f"{g.checkpoint.upstream}->{g.checkpoint.downstream}" if g.checkpoint else "-"
            rows.append(
                (
                    g.group,
                    g.topic,
                    str(g.partition),
                    "-" if g.source_committed is None else str(g.source_committed),
                    point,
                    "-" if g.target_committed is None else str(g.target_committed),
                    "yes" if g.synced else "no",
                )
            )
        lines += ["", *_table(rows)]
    return "\n".join(lines)


def drill_text(plan: DrillPlan) -> str:
    status = plan.status
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(status.read_at))
    behind = [p for p in status.partitions if not p.caught_up]
    wait = (
        "nothing to wait for: the target holds every committed record"
        if not behind
        else f"writes would be held while {status.pending} record(s) on {len(behind)} "
        "partition(s) are copied"
    )
    same = len(plan.same_offsets)
    reread = plan.reread
    lines = [
        f"drill {status.source} -> {status.target} (dry run, nothing changed) at {when}",
        f"  {wait}",
        f"  offsets: {same} of {len(status.partitions)} mirrored partition(s) hold the same "
        "offsets on both clusters (groups move there exactly); the others are "
        "translated by MirrorMaker's checkpoints",
        "  re-read by groups after the switch: "
        + ("unknown (a group has no checkpoint)" if reread is None else str(reread)),
    ]
    if plan.not_mirrored:
        lines.append(
            "  not on the target (would answer UNKNOWN_TOPIC_OR_PARTITION): "
            + ", ".join(plan.not_mirrored)
        )
    if plan.handoffs:
        rows: list[tuple[str, ...]] = [
            ("GROUP", "TOPIC", "PARTITION", "COMMITTED", "HANDOFF", "REREAD", "SYNCED_NOW")
        ]
        for h in plan.handoffs:
            synced = "-" if h.target_committed is None else str(h.target_committed)
            rows.append(
                (
                    h.group,
                    h.topic,
                    str(h.partition),
                    str(h.source_committed),
                    "-" if h.handoff is None else str(h.handoff),
                    "?" if h.reread is None else str(h.reread),
                    synced,
                )
            )
        lines += ["", *_table(rows)]
    lines += ["", "The drill itself (fence writes, switch, release) is not built yet."]
    return "\n".join(lines)


async def _read(ns: argparse.Namespace, read: Callable[..., Awaitable[T]]) -> T:
    """``read`` (the replication status, a drill's plan) of the configured clusters."""
    config = load_config(ns.config)
    if config.clusters.secondary is None:
        raise ConfigError(f"{ns.config}: clusters.secondary is not configured")
    replication = config.clusters.replication
    async with asyncio.timeout(ns.timeout):
        return await read(
            config.clusters.primary,
            config.clusters.secondary,
            source_alias=replication.source_alias,
            target_alias=replication.target_alias,
            topics=ns.topics or replication.topic_pattern,
            groups=ns.groups,
        )


def main(argv: list[str]) -> int:
    ns = _parser().parse_args(argv)
    what = f"failover {ns.command}"
    if ns.command == "drill" and not ns.dry_run:
        print(
            f"{what}: only --dry-run is built: the drill itself (fence writes, switch, "
            "release) is not yet",
            file=sys.stderr,
        )
        return 2
    try:
        if ns.command == "drill":
            plan = asyncio.run(_read(ns, drill_plan))
            print(json.dumps(plan.as_json(), indent=2) if ns.json else drill_text(plan))
            return 0
        status = asyncio.run(_read(ns, replication_status))
    except ConfigError as exc:
        print(f"{what}: {exc}", file=sys.stderr)
        return 2
    except TimeoutError:
        print(f"{what}: no answer within {ns.timeout:.0f}s", file=sys.stderr)
        return 1
    except MirrorRecordError as exc:
        print(f"{what}: MirrorMaker's records: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a cluster that cannot be read: say which error, no trace
        print(f"{what}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(status.as_json(), indent=2) if ns.json else status_text(status))
    return 0
