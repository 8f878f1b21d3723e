"""The replication lag, watched from inside the gateway: every
``clusters.replication.watch_interval_seconds`` the records of each mirrored topic
that the secondary still lacks, and per consumer group the partitions whose offsets
are not synced yet (as ``gateway failover status`` counts them, see
:mod:`gateway.failover.replication`), exported as metrics and shown by ``GET /clusters``.

MirrorMaker's offset syncs and checkpoints are read as tails: the first round reads
each topic from its beginning, later rounds only what was appended since, so a round
costs the end offsets of the mirrored partitions, the reading of records not yet
synced (up to ``pending_read_limit`` per partition) and one offset listing per group
on each cluster, however long MirrorMaker has been running.

A round that cannot read a cluster counts an error and keeps the last figures (with
their time, so a stale figure shows as one); the clients are opened again next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from gateway import metrics
from gateway.config import ClusterConfig, ReplicationConfig
from gateway.failover.mirror_records import Checkpoint, MirrorRecordError, OffsetSync
from gateway.failover.replication import (
    GroupSync,
    PartitionLag,
    Side,
    Tail,
    checkpoint_tail,
    group_syncs,
    mirrored,
    partition_lags,
    sync_tail,
)

log = logging.getLogger(__name__)

_CLIENT_ID = "soc2-gateway-replication-watch"


class ReplicationWatch:
    """Rounds of lag measurement between ``source`` and ``target`` in the background."""

    def __init__(
        self, source: ClusterConfig, target: ClusterConfig, config: ReplicationConfig
    ) -> None:
        self.source = source
        self.target = target
        self.config = config
        self.partitions: tuple[PartitionLag, ...] = ()
        self.groups: tuple[GroupSync, ...] = ()
        self.read_at: float | None = None
        self.error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._exported_topics: set[str] = set()
        self._exported_groups: set[str] = set()

    def start(self) -> None:
        if self.config.watch_interval_seconds is not None:
            self._task = asyncio.ensure_future(self._run(self.config.watch_interval_seconds))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def describe(self) -> dict[str, Any]:
        """What ``GET /clusters`` shows: the last round's figures and when they were read."""
        return {
            "source": self.config.source_alias,
            "target": self.config.target_alias,
            "read_at": self.read_at,
            "error": self.error,
            "caught_up": self.read_at is not None and all(p.caught_up for p in self.partitions),
            "pending": sum(p.pending for p in self.partitions),
            "pending_exact": all(p.exact for p in self.partitions),
            "topics": self._pending_by_topic(),
            "groups": {
                group: {"partitions": total, "unsynced": unsynced}
                for group, (total, unsynced) in self._groups().items()
            },
        }

    def _pending_by_topic(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for p in self.partitions:
            found[p.topic] = found.get(p.topic, 0) + p.pending
        return found

    def _groups(self) -> dict[str, tuple[int, int]]:
        """Per group: its partitions with a checkpoint, and how many of those are not
        synced (the checkpoint is not for the group's current commit on the source)."""
        found: dict[str, tuple[int, int]] = {}
        for g in self.groups:
            total, unsynced = found.get(g.group, (0, 0))
            found[g.group] = (total + 1, unsynced + (0 if g.synced else 1))
        return found

    async def _run(self, interval: float) -> None:
        while True:
            try:
                await self._open_and_watch(interval)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a cluster that cannot be read: next round retries
                self._failed(exc)
            await asyncio.sleep(interval)

    async def _open_and_watch(self, interval: float) -> None:
        async with (
            sync_tail(self.source, self.config.target_alias, _CLIENT_ID) as syncs,
            checkpoint_tail(self.target, self.config.source_alias, _CLIENT_ID) as checkpoints,
            Side(self.source, _CLIENT_ID) as src,
            Side(self.target, _CLIENT_ID) as tgt,
        ):
            while True:
                await self.round(src, tgt, syncs, checkpoints)
                await asyncio.sleep(interval)

    async def round(
        self,
        src: Side,
        tgt: Side,
        syncs: Tail[tuple[str, int], OffsetSync],
        checkpoints: Tail[tuple[str, str, int], Checkpoint],
    ) -> None:
        """One measurement; raises when a cluster cannot be read."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.config.round_timeout_seconds):
                partitions = await self._partitions(src, tgt, syncs)
                groups = await self._group_syncs(src, tgt, checkpoints)
        finally:
            metrics.REPLICATION_ROUND_SECONDS.observe(time.perf_counter() - started)
        self.partitions, self.groups = partitions, groups
        self.read_at = time.time()
        if self.error is not None:
            log.info("replication watch: reading both clusters again")
        self.error = None
        self._export()
        metrics.REPLICATION_ROUNDS.labels("ok").inc()

    async def _partitions(
        self, src: Side, tgt: Side, syncs: Tail[tuple[str, int], OffsetSync]
    ) -> tuple[PartitionLag, ...]:
        latest = await syncs.read(src)
        names = mirrored(await src.consumer.topics(), await tgt.consumer.topics())
        chosen = self.config.topic_pattern
        names = [t for t in names if chosen is None or chosen.fullmatch(t)]
        limit = self.config.pending_read_limit
        return tuple(await partition_lags(src, tgt, names, latest, limit))

    async def _group_syncs(
        self, src: Side, tgt: Side, checkpoints: Tail[tuple[str, str, int], Checkpoint]
    ) -> tuple[GroupSync, ...]:
        latest = await checkpoints.read(tgt)
        groups, topics = self.config.group_pattern, self.config.topic_pattern
        chosen = [
            c
            for c in latest.values()
            if (groups is None or groups.fullmatch(c.group))
            and (topics is None or topics.fullmatch(c.topic))
        ]
        src.forget_committed()  # this round's commits, not the last round's
        tgt.forget_committed()
        return tuple(await group_syncs(src, tgt, chosen))

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, TimeoutError):
            why = f"no answer within {self.config.round_timeout_seconds:g}s"
        elif isinstance(exc, MirrorRecordError):
            why = f"MirrorMaker's records: {exc}"
        else:
            why = f"{type(exc).__name__}: {exc}"
        if why != self.error:
            log.warning("replication watch: %s", why)
        self.error = why
        metrics.REPLICATION_ROUNDS.labels("error").inc()

    def _export(self) -> None:
        by_topic = self._pending_by_topic()
        for topic, pending in by_topic.items():
            metrics.REPLICATION_PENDING.labels(topic).set(pending)
        _forget(metrics.REPLICATION_PENDING, self._exported_topics - by_topic.keys())
        self._exported_topics = set(by_topic)
        by_group = self._groups()
        for group, (_, unsynced) in by_group.items():
            metrics.REPLICATION_GROUP_UNSYNCED.labels(group).set(unsynced)
        _forget(metrics.REPLICATION_GROUP_UNSYNCED, self._exported_groups - by_group.keys())
        self._exported_groups = set(by_group)
        caught_up = all(p.caught_up for p in self.partitions)
        metrics.REPLICATION_CAUGHT_UP.set(1 if caught_up else 0)
        metrics.REPLICATION_READ_AT.set(self.read_at or 0)


def _forget(gauge: Any, labels: set[str]) -> None:
    for label in labels:
        with contextlib.suppress(KeyError):
            gauge.remove(label)
