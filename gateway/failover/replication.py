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
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

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

T = TypeVar("T")


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
        doc["synced"] = (
            {"source": self.synced.upstream, "target": self.synced.downstream}
            if self.synced is not None
            else None
        )
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
        checkpoint = self.checkpoint
        return {
            "group": self.group,
            "topic": self.topic,
            "partition": self.partition,
            "source_committed": self.source_committed,
            "checkpoint": (
                {"source": checkpoint.upstream, "target": checkpoint.downstream}
                if checkpoint is not None
                else None
            ),
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
    both = set(source_topics) & set(target_topics)
    return sorted(t for t in both if not _NOT_MIRRORED.fullmatch(t))


def last_by_key(records: Iterable[T], key: Callable[[T], Any]) -> dict[Any, T]:
    """The last record per key, as a compacted topic keeps it."""
    return {key(record): record for record in records}


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
    async with Side(source) as src, Side(target) as tgt:
        names = mirrored(await src.consumer.topics(), await tgt.consumer.topics())
        names = [t for t in names if topics is None or topics.fullmatch(t)]
        syncs = last_by_key(
            (
                decode_offset_sync(r.key, r.value)
                for r in await src.read_topic(offset_syncs_topic(target_alias))
            ),
            lambda s: (s.topic, s.partition),
        )
        partitions = await partition_lags(src, tgt, names, syncs, pending_read_limit)
        checkpoints = last_by_key(
            (
                decode_checkpoint(r.key, r.value)
                for r in await tgt.read_topic(checkpoints_topic(source_alias))
            ),
            lambda c: (c.group, c.topic, c.partition),
        )
        chosen = [c for c in checkpoints.values() if groups is None or groups.fullmatch(c.group)]
        synced = await group_syncs(src, tgt, chosen)
    return ReplicationStatus(
        source_alias, target_alias, time.time(), tuple(partitions), tuple(synced)
    )


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
    _, target_ends = await tgt.offsets(target_tps)
    spans: dict[TopicPartition, tuple[int, int]] = {}
    for tp in tps:
        synced = syncs.get((tp.topic, tp.partition))
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
        synced = syncs.get((tp.topic, tp.partition))
        found.append(
            PartitionLag(
                tp.topic, tp.partition, end, target_ends.get(tp, 0), synced, pending, exact
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
        await self.consumer.start()
        try:
            await self.admin.start()
        except BaseException:
            await self.consumer.stop()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def partitions(self, topic: str) -> list[int]:
        """The partition ids of ``topic`` (none when it does not exist)."""
        (described,) = await self.admin.describe_topics([topic])
        if described["error_code"] == UNKNOWN_TOPIC_OR_PARTITION:
            return []
        if described["error_code"] != 0:
            raise KafkaError(f"{topic}: Kafka error {described['error_code']}")
        return sorted(int(p["partition"]) for p in described["partitions"])

    async def read_topic(self, topic: str) -> list[Any]:
        """Every record of ``topic`` now (none when it does not exist)."""
        tps = [TopicPartition(topic, p) for p in await self.partitions(topic)]
        if not tps:
            return []
        ends = await self.consumer.end_offsets(tps)
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        while [tp for tp in tps if await self.consumer.position(tp) < ends[tp]]:
            batches = await self.consumer.getmany(*tps, timeout_ms=500)
            for tp, got in batches.items():
                records += [r for r in got if r.offset < ends[tp]]
        return records

    async def partitions_of(self, topics: list[str]) -> dict[str, list[int]]:
        """The partition ids of each of ``topics`` that exists, in one request; only
        partitions with a leader (the others cannot be read: asking their offsets
        would wait for a leader until the caller's timeout)."""
        if not topics:
            return {}
        found: dict[str, list[int]] = {}
        for described in await self.admin.describe_topics(topics):
            if described["error_code"] == UNKNOWN_TOPIC_OR_PARTITION:
                continue
            if described["error_code"] != 0:
                raise KafkaError(f"{described['topic']}: Kafka error {described['error_code']}")
            found[described["topic"]] = sorted(
                int(p["partition"]) for p in described["partitions"] if p["leader"] >= 0
            )
        return found

    async def offsets(
        self, tps: list[TopicPartition]
    ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        """The first and the end offset of each of ``tps``, in one request per broker.

        They are assigned (and paused) first: that puts all their topics in the
        consumer's metadata at once, where asking their offsets alone adds the topics
        one by one, a metadata refresh and a back-off each (18 s for 320 partitions).
        """
        if not tps:
            return {}, {}
        self.consumer.assign(tps)
        self.consumer.pause(*tps)
        starts = await self.consumer.beginning_offsets(tps)
        ends = await self.consumer.end_offsets(tps)
        return starts, ends

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


__all__ = [
    "GroupSync",
    "MirrorRecordError",
    "PartitionLag",
    "ReplicationStatus",
    "Side",
    "group_syncs",
    "mirrored",
    "partition_lags",
    "replication_status",
]
