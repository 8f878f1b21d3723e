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
        partitions = [
            lag
            for name in names
            for lag in await topic_lag(src, tgt, name, syncs, pending_read_limit)
        ]
        checkpoints = last_by_key(
            (
                decode_checkpoint(r.key, r.value)
                for r in await tgt.read_topic(checkpoints_topic(source_alias))
            ),
            lambda c: (c.group, c.topic, c.partition),
        )
        chosen = [c for c in checkpoints.values() if groups is None or groups.fullmatch(c.group)]
        group_syncs = [
            GroupSync(
                c.group,
                c.topic,
                c.partition,
                (await src.committed(c.group)).get((c.topic, c.partition)),
                c,
                (await tgt.committed(c.group)).get((c.topic, c.partition)),
            )
            for c in sorted(chosen, key=lambda c: (c.group, c.topic, c.partition))
        ]
    return ReplicationStatus(
        source_alias, target_alias, time.time(), tuple(partitions), tuple(group_syncs)
    )


async def topic_lag(
    src: Side, tgt: Side, topic: str, syncs: dict[Any, OffsetSync], limit: int
) -> list[PartitionLag]:
    tps = [TopicPartition(topic, p) for p in await src.partitions(topic)]
    source_ends = await src.consumer.end_offsets(tps)
    source_starts = await src.consumer.beginning_offsets(tps)
    target_ends = await tgt.consumer.end_offsets(tps) if tps else {}
    found = []
    for tp in tps:
        synced = syncs.get((topic, tp.partition))
        start = max(source_starts[tp], synced.upstream + 1 if synced is not None else 0)
        end = source_ends[tp]
        if end <= start:
            pending, exact = 0, True
        elif end - start <= limit:
            pending, exact = await src.count_committed(tp, start, end), True
        else:
            pending, exact = end - start, False
        found.append(
            PartitionLag(topic, tp.partition, end, target_ends.get(tp, 0), synced, pending, exact)
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

    async def count_committed(self, tp: TopicPartition, start: int, end: int) -> int:
        """Committed records at offsets [start, end) of ``tp``."""
        self.consumer.assign([tp])
        self.consumer.seek(tp, start)
        count = 0
        while await self.consumer.position(tp) < end:
            batches = await self.consumer.getmany(tp, timeout_ms=500)
            count += sum(1 for r in batches.get(tp, []) if r.offset < end)
        return count

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
    "mirrored",
    "replication_status",
    "topic_lag",
]
