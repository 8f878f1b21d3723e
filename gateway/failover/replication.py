"""How far MirrorMaker 2 has replicated the source cluster to the target, read from
both clusters and from MirrorMaker's own records, with the gateway's credentials.

Per mirrored partition (a topic on both clusters, not an internal one): the source's
last stable offset, the target's end offset, MirrorMaker's last offset sync (source
offset → target offset), and how many committed source records lie past that sync
(``pending``): the records a switch now would lose. They are counted by reading them
with ``read_committed`` (so transaction markers and aborted records, which MirrorMaker
does not copy, are not counted), up to ``pending_read_limit`` per partition; beyond
that the offset distance is given as an upper bound (``exact`` False). A partition is
caught up when nothing is pending and the target holds the synced record.

This relies on MirrorMaker emitting an offset sync for every record
(``offset.lag.max = 0``, as the dev setup and the README's table have it): with a
larger lag its last sync may trail records it has already copied, which then count as
pending.

Partitions without a leader on the source cannot be read and are left out; on the
target they count as holding nothing.

Per consumer group and partition with a checkpoint: the group's committed offset on the
source, MirrorMaker's last checkpoint (source offset → target offset) and the group's
committed offset on the target: synced when the checkpoint is for the source's
current commit.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from gateway.config import ClusterConfig
from gateway.failover.mirror_records import (
    Checkpoint,
    MirrorRecordError,
    OffsetSync,
    checkpoints_topic,
    decode_checkpoint,
    decode_offset_sync,
    offset_syncs_topic,
)
from gateway.upstream.clients import client_settings

PENDING_READ_LIMIT = 10_000
UNKNOWN_TOPIC_OR_PARTITION = 3
_CLIENT_ID = "soc2-gateway-replication"
# MirrorMaker's default topics.exclude, and its heartbeats: never mirrored data.
_NOT_MIRRORED = re.compile(r".*[-.]internal|.*\.replica|__.*|(.*\.)?heartbeats|mm2-.*")

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class PartitionLag:
    topic: str
    partition: int
    source_end: int
    target_end: int
    synced: OffsetSync | None
    pending: int
    exact: bool

    @property
    def caught_up(self) -> bool:
        if self.pending or not self.exact:
            return False
        return self.synced is None or self.target_end > self.synced.downstream

    def as_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["synced"] = point_json(self.synced)
        doc["caught_up"] = self.caught_up
        return doc


@dataclass(frozen=True, slots=True)
class GroupSync:
    group: str
    topic: str
    partition: int
    source_committed: int | None
    checkpoint: Checkpoint | None
    target_committed: int | None

    @property
    def synced(self) -> bool:
        return (
            self.checkpoint is not None
            and self.source_committed is not None
            and self.checkpoint.upstream == self.source_committed
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "topic": self.topic,
            "partition": self.partition,
            "source_committed": self.source_committed,
            "checkpoint": point_json(self.checkpoint),
            "target_committed": self.target_committed,
            "synced": self.synced,
        }


@dataclass(frozen=True, slots=True)
class ReplicationStatus:
    source: str
    target: str
    read_at: float
    partitions: tuple[PartitionLag, ...]
    groups: tuple[GroupSync, ...]

    @property
    def caught_up(self) -> bool:
        return all(p.caught_up for p in self.partitions)

    @property
    def pending(self) -> int:
        return sum(p.pending for p in self.partitions)

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "read_at": self.read_at,
            "caught_up": self.caught_up,
            "pending": self.pending,
            "pending_exact": all(p.exact for p in self.partitions),
            "partitions": [p.as_json() for p in self.partitions],
            "groups": [g.as_json() for g in self.groups],
        }


def mirrored(source_topics: Iterable[str], target_topics: Iterable[str]) -> list[str]:
    """Topics on both clusters that MirrorMaker could have mirrored (not its own, not
    internal ones)."""
    return mirrorable(set(source_topics) & set(target_topics))


def mirrorable(topics: Iterable[str]) -> list[str]:
    """Those of ``topics`` MirrorMaker could mirror (not its own, not internal ones)."""
    return sorted(t for t in set(topics) if not _NOT_MIRRORED.fullmatch(t))


async def replication_status(
    source: ClusterConfig,
    target: ClusterConfig,
    *,
    source_alias: str = "primary",
    target_alias: str = "secondary",
    topics: re.Pattern[str] | None = None,
    groups: re.Pattern[str] | None = None,
    pending_read_limit: int = PENDING_READ_LIMIT,
) -> ReplicationStatus:
    """Read the replication state now (see the module's docstring)."""
    async with reading(source, target, source_alias, target_alias) as clusters:
        names = mirrored(await clusters.src.consumer.topics(), await clusters.tgt.consumer.topics())
        names = [t for t in names if topics is None or topics.fullmatch(t)]
        status, _ = await clusters.status(names, groups, pending_read_limit)
    return status


@dataclass
class Reading:
    """Both clusters and MirrorMaker's offset syncs and checkpoints, open for a read."""

    src: Side
    tgt: Side
    syncs: Tail[tuple[str, int], OffsetSync]
    checkpoints: Tail[tuple[str, str, int], Checkpoint]
    source_alias: str
    target_alias: str

    async def status(
        self, names: list[str], groups: re.Pattern[str] | None, limit: int
    ) -> tuple[ReplicationStatus, dict[tuple[str, str, int], Checkpoint]]:
        """The status of the mirrored topics ``names`` and of the groups matching
        ``groups``, and MirrorMaker's latest checkpoint per (group, topic, partition)."""
        syncs = await self.syncs.read(self.src)
        partitions = await partition_lags(self.src, self.tgt, names, syncs, limit)
        latest = await self.checkpoints.read(self.tgt)
        chosen = [c for c in latest.values() if groups is None or groups.fullmatch(c.group)]
        synced = await group_syncs(self.src, self.tgt, chosen)
        status = ReplicationStatus(
            self.source_alias, self.target_alias, time.time(), tuple(partitions), tuple(synced)
        )
        return status, latest


@asynccontextmanager
async def reading(
    source: ClusterConfig, target: ClusterConfig, source_alias: str, target_alias: str
) -> AsyncIterator[Reading]:
    """Open both clusters and MirrorMaker's two tails for one read."""
    async with (
        Side(source) as src,
        Side(target) as tgt,
        sync_tail(source, target_alias) as sync_reader,
        checkpoint_tail(target, source_alias) as checkpoint_reader,
    ):
        yield Reading(src, tgt, sync_reader, checkpoint_reader, source_alias, target_alias)


def point_json(point: OffsetSync | Checkpoint | None) -> dict[str, int] | None:
    """An offset sync or checkpoint as JSON: which source offset became which target one."""
    return None if point is None else {"source": point.upstream, "target": point.downstream}


async def group_syncs(src: Side, tgt: Side, checkpoints: Iterable[Checkpoint]) -> list[GroupSync]:
    """Each checkpoint beside the group's commit on both clusters, in (group, topic,
    partition) order (each group's offsets are listed once per :class:`Side`)."""
    return [
        GroupSync(
            c.group,
            c.topic,
            c.partition,
            (await src.committed(c.group)).get((c.topic, c.partition)),
            c,
            (await tgt.committed(c.group)).get((c.topic, c.partition)),
        )
        for c in sorted(checkpoints, key=lambda c: (c.group, c.topic, c.partition))
    ]


async def partition_lags(
    src: Side, tgt: Side, topics: list[str], syncs: dict[Any, OffsetSync], limit: int
) -> list[PartitionLag]:
    """Per partition of ``topics``, what the target still lacks: the offsets of all of
    them are listed together on each cluster, and the committed records past the last
    sync are counted by reading all the partitions that have some at once."""
    layout = await src.partitions_of(topics)
    tps = [TopicPartition(t, p) for t in topics for p in layout.get(t, ())]
    if not tps:
        return []
    source_starts, source_ends = await src.offsets(tps)
    on_target = await tgt.partitions_of(topics)
    target_tps = [tp for tp in tps if tp.partition in on_target.get(tp.topic, ())]
    _, target_ends = await tgt.offsets(target_tps, starts=False)
    synced_of = {tp: syncs.get((tp.topic, tp.partition)) for tp in tps}
    spans: dict[TopicPartition, tuple[int, int]] = {}
    for tp, synced in synced_of.items():
        start = max(source_starts[tp], synced.upstream + 1 if synced is not None else 0)
        spans[tp] = (start, source_ends[tp])
    counted = await src.count_committed(
        {tp: span for tp, span in spans.items() if 0 < span[1] - span[0] <= limit}
    )
    found = []
    for tp in tps:
        start, end = spans[tp]
        if end <= start:
            pending, exact = 0, True
        elif tp in counted:
            pending, exact = counted[tp], True
        else:
            pending, exact = end - start, False
        found.append(
            PartitionLag(
                tp.topic, tp.partition, end, target_ends.get(tp, 0), synced_of[tp], pending, exact
            )
        )
    return found


class Side:
    """One cluster: a read_committed consumer without a group, and an admin client."""

    def __init__(self, config: ClusterConfig, client_id: str = _CLIENT_ID) -> None:
        settings = client_settings(config)
        self.consumer: Any = AIOKafkaConsumer(
            **settings,
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        self.admin: Any = AIOKafkaAdminClient(**settings, client_id=client_id)
        self._committed: dict[str, dict[tuple[str, int], int]] = {}

    async def __aenter__(self) -> Side:
        # A client whose start failed still holds its connections and tasks: stopped
        # here too, so a cluster that cannot be reached leaks nothing.
        try:
            await self.consumer.start()
        except BaseException:
            await self.consumer.stop()
            raise
        try:
            await self.admin.start()
        except BaseException:
            await self.admin.close()
            await self.consumer.stop()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def partitions(self, topic: str) -> list[int]:
        """The partition ids of ``topic`` (none when it does not exist)."""
        return [int(p["partition"]) for p in (await self._described([topic])).get(topic, [])]

    async def partitions_of(self, topics: list[str]) -> dict[str, list[int]]:
        """The partition ids of each of ``topics`` that exists, in one request; only
        partitions with a leader (the others cannot be read: asking their offsets
        would wait for a leader until the caller's timeout)."""
        return {
            topic: [int(p["partition"]) for p in partitions if p["leader"] >= 0]
            for topic, partitions in (await self._described(topics)).items()
        }

    async def _described(self, topics: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Per topic of ``topics`` that exists, its partitions' metadata in partition order,
        in one request."""
        if not topics:
            return {}
        found: dict[str, list[dict[str, Any]]] = {}
        for described in await self.admin.describe_topics(topics):
            if described["error_code"] == UNKNOWN_TOPIC_OR_PARTITION:
                continue
            if described["error_code"] != 0:
                raise KafkaError(f"{described['topic']}: Kafka error {described['error_code']}")
            found[described["topic"]] = sorted(
                described["partitions"], key=lambda p: int(p["partition"])
            )
        return found

    async def offsets(
        self, tps: list[TopicPartition], *, starts: bool = True
    ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        """The first offset (unless ``starts`` is False: none are asked) and the end
        offset of each of ``tps``, in one request per broker for each.

        They are assigned (and paused) first: that puts all their topics in the
        consumer's metadata at once, where asking their offsets alone adds the topics
        one by one, a metadata refresh and a back-off each (18 s for 320 partitions).
        """
        if not tps:
            return {}, {}
        self.consumer.assign(tps)
        self.consumer.pause(*tps)
        first = await self.consumer.beginning_offsets(tps) if starts else {}
        return first, await self.consumer.end_offsets(tps)

    async def count_committed(
        self, spans: dict[TopicPartition, tuple[int, int]]
    ) -> dict[TopicPartition, int]:
        """Per partition, the committed records at offsets [start, end), all partitions
        read together (each stops being fetched once it reached its end)."""
        if not spans:
            return {}
        self.consumer.assign(list(spans))
        for tp, (start, _) in spans.items():
            self.consumer.seek(tp, start)
        counts = dict.fromkeys(spans, 0)
        reading = set(spans)
        while reading:
            for tp in list(reading):
                if await self.consumer.position(tp) >= spans[tp][1]:
                    self.consumer.pause(tp)
                    reading.discard(tp)
            if not reading:
                break
            batches = await self.consumer.getmany(*reading, timeout_ms=500)
            for tp, records in batches.items():
                end = spans[tp][1]
                counts[tp] += sum(1 for r in records if r.offset < end)
        self.consumer.resume(*spans)
        return counts

    def forget_committed(self) -> None:
        """Read groups' offsets afresh from now on (they are kept once read)."""
        self._committed.clear()

    async def committed(self, group: str) -> dict[tuple[str, int], int]:
        """The group's committed offsets, by (topic, partition)."""
        if group not in self._committed:
            offsets = await self.admin.list_consumer_group_offsets(group)
            self._committed[group] = {
                (tp.topic, tp.partition): meta.offset
                for tp, meta in offsets.items()
                if meta.offset >= 0
            }
        return self._committed[group]


class Tail(Generic[K, V]):
    """The last record per key of one of MirrorMaker's compacted topics, decoded, read
    by a consumer of its own that stays assigned: each :meth:`read` reads only what
    was appended since the last one."""

    def __init__(
        self,
        config: ClusterConfig,
        topic: str,
        decode: Callable[[Any, Any], tuple[K, V]],
        client_id: str = _CLIENT_ID,
    ) -> None:
        self.topic = topic
        self.latest: dict[K, V] = {}
        self._decode = decode
        self._consumer: Any = AIOKafkaConsumer(
            **client_settings(config),
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        self._assigned: list[TopicPartition] = []

    async def __aenter__(self) -> Tail[K, V]:
        await self._consumer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._consumer.stop()

    async def read(self, side: Side) -> dict[K, V]:
        """Everything appended up to now (``side``: the topic's cluster, which lists its
        partitions; none while the topic does not exist)."""
        tps = [TopicPartition(self.topic, p) for p in await side.partitions(self.topic)]
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
                keep_last(
                    self.latest,
                    (self._decode(r.key, r.value) for r in records if r.offset < ends[tp]),
                )
        return self.latest


def keep_last(latest: dict[K, V], entries: Iterable[tuple[K, V]]) -> None:
    """``latest`` with each entry's value as its key's, in order: the last record per
    key wins, as in a compacted topic."""
    for key, value in entries:
        latest[key] = value


def sync_tail(
    source: ClusterConfig, target_alias: str, client_id: str = _CLIENT_ID
) -> Tail[tuple[str, int], OffsetSync]:
    """MirrorMaker's last offset sync per (topic, partition), on the source cluster."""
    return Tail(source, offset_syncs_topic(target_alias), _sync_entry, client_id)


def checkpoint_tail(
    target: ClusterConfig, source_alias: str, client_id: str = _CLIENT_ID
) -> Tail[tuple[str, str, int], Checkpoint]:
    """MirrorMaker's last checkpoint per (group, topic, partition), on the target."""
    return Tail(target, checkpoints_topic(source_alias), _checkpoint_entry, client_id)


def _sync_entry(key: bytes, value: bytes) -> tuple[tuple[str, int], OffsetSync]:
    sync = decode_offset_sync(key, value)
    return (sync.topic, sync.partition), sync


def _checkpoint_entry(key: bytes, value: bytes) -> tuple[tuple[str, str, int], Checkpoint]:
    point = decode_checkpoint(key, value)
    return (point.group, point.topic, point.partition), point


__all__ = [
    "GroupSync",
    "MirrorRecordError",
    "PartitionLag",
    "ReplicationStatus",
    "Side",
    "Tail",
    "checkpoint_tail",
    "group_syncs",
    "keep_last",
    "mirrored",
    "partition_lags",
    "replication_status",
    "sync_tail",
]
