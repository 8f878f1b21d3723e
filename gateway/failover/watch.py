"""The replication lag, watched from inside the gateway: every
``clusters.replication.watch_interval_seconds`` the records of each mirrored topic
that the secondary still lacks (as ``gateway failover status`` counts them, see
:mod:`gateway.failover.replication`), exported as metrics and shown by ``GET /clusters``.

MirrorMaker's offset syncs are read as a tail: the first round reads the topic from its
beginning, later rounds only what was appended since, so a round costs the end offsets
of the mirrored partitions and the reading of records not yet synced (up to
``pending_read_limit`` per partition), however long MirrorMaker has been running.

A round that cannot read a cluster counts an error and keeps the last figures (with
their time, so a stale figure shows as one); the clients are opened again next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from gateway import metrics
from gateway.config import ClusterConfig, ReplicationConfig
from gateway.failover.mirror_records import (
    MirrorRecordError,
    OffsetSync,
    decode_offset_sync,
    offset_syncs_topic,
)
from gateway.failover.replication import (
    PartitionLag,
    Side,
    mirrored,
    topic_lag,
)
from gateway.upstream.clients import client_settings

log = logging.getLogger(__name__)

_CLIENT_ID = "soc2-gateway-replication-watch"


class SyncTail:
    """MirrorMaker's offset syncs (on the source cluster), the last per partition,
    read incrementally by a consumer of their own that stays assigned."""

    def __init__(self, config: ClusterConfig, topic: str) -> None:
        self.topic = topic
        self.latest: dict[tuple[str, int], OffsetSync] = {}
        self._consumer: Any = AIOKafkaConsumer(
            **client_settings(config),
            client_id=_CLIENT_ID,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        self._assigned: list[TopicPartition] = []

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def read(self, partitions: list[int]) -> dict[tuple[str, int], OffsetSync]:
        """Everything appended up to now (``partitions``: the topic's, none when it does
        not exist yet)."""
        tps = [TopicPartition(self.topic, p) for p in partitions]
        if not tps:
            return self.latest
        if tps != self._assigned:
            self._consumer.assign(tps)
            await self._consumer.seek_to_beginning(*tps)
            self._assigned = tps
            self.latest.clear()
        ends = await self._consumer.end_offsets(tps)
        while [tp for tp in tps if await self._consumer.position(tp) < ends[tp]]:
            batches = await self._consumer.getmany(*tps, timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    if record.offset < ends[tp]:
                        sync = decode_offset_sync(record.key, record.value)
                        self.latest[(sync.topic, sync.partition)] = sync
        return self.latest


class ReplicationWatch:
    """Rounds of lag measurement between ``source`` and ``target`` in the background."""

    def __init__(
        self, source: ClusterConfig, target: ClusterConfig, config: ReplicationConfig
    ) -> None:
        self.source = source
        self.target = target
        self.config = config
        self.partitions: tuple[PartitionLag, ...] = ()
        self.read_at: float | None = None
        self.error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._exported: set[str] = set()

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
            "topics": self._by_topic(),
        }

    def _by_topic(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for p in self.partitions:
            found[p.topic] = found.get(p.topic, 0) + p.pending
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
        tail = SyncTail(self.source, offset_syncs_topic(self.config.target_alias))
        await tail.start()
        try:
            async with Side(self.source, _CLIENT_ID) as src, Side(self.target, _CLIENT_ID) as tgt:
                while True:
                    await self.round(src, tgt, tail)
                    await asyncio.sleep(interval)
        finally:
            await tail.stop()

    async def round(self, src: Side, tgt: Side, tail: SyncTail) -> None:
        """One measurement; raises when a cluster cannot be read."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.config.round_timeout_seconds):
                syncs = await tail.read(await src.partitions(tail.topic))
                names = mirrored(await src.consumer.topics(), await tgt.consumer.topics())
                chosen = self.config.topic_pattern
                names = [t for t in names if chosen is None or chosen.fullmatch(t)]
                partitions = [
                    lag
                    for name in names
                    for lag in await topic_lag(
                        src, tgt, name, syncs, self.config.pending_read_limit
                    )
                ]
        finally:
            metrics.REPLICATION_ROUND_SECONDS.observe(time.perf_counter() - started)
        self.partitions = tuple(partitions)
        self.read_at = time.time()
        if self.error is not None:
            log.info("replication watch: reading both clusters again")
        self.error = None
        self._export()
        metrics.REPLICATION_ROUNDS.labels("ok").inc()

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
        by_topic = self._by_topic()
        for topic, pending in by_topic.items():
            metrics.REPLICATION_PENDING.labels(topic).set(pending)
        for gone in self._exported - by_topic.keys():
            with contextlib.suppress(KeyError):
                metrics.REPLICATION_PENDING.remove(gone)
        self._exported = set(by_topic)
        caught_up = all(p.caught_up for p in self.partitions)
        metrics.REPLICATION_CAUGHT_UP.set(1 if caught_up else 0)
        metrics.REPLICATION_READ_AT.set(self.read_at or 0)
