"""What a planned switchover (a drill) from the primary to the secondary would do now,
read from both clusters and MirrorMaker 2's records: ``gateway failover drill --to
secondary --dry-run``.

A drill fences writes, waits until the secondary holds every committed record and each
consumer group's position, then switches. This reads what that would meet:

- the records still to copy (the wait), per partition, from :mod:`.replication`;
- per mirrored partition, whether both clusters hold the same offsets. MirrorMaker
  copies records, not offsets: a partition whose source has no gaps (no transaction
  markers, no compaction, nothing removed by retention before it was copied) has the
  same offsets on the secondary. That shows as equal end offsets once nothing is
  pending, since the secondary only ever holds what was copied. There a group's
  committed offset means the same record on both clusters and can be handed over as
  it is; elsewhere only MirrorMaker's translation (a checkpoint at or before the
  commit) is safe, and the group reads again what lies between;
- per consumer group with commits on a mirrored topic, the offset a drill would hand
  over and how many records the group would read again, beside the offset
  MirrorMaker has synced to the secondary now (which trails: measured here, a commit
  at 500 synced as 1) and the groups MirrorMaker has no checkpoint for at all (on the
  secondary they would start from their ``auto.offset.reset``);
- topics on the primary that are not on the secondary (after a switch they would
  answer UNKNOWN_TOPIC_OR_PARTITION).

It changes nothing on either cluster.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gateway.config import ClusterConfig
from gateway.failover.mirror_records import Checkpoint
from gateway.failover.replication import (
    PENDING_READ_LIMIT,
    PartitionLag,
    ReplicationStatus,
    Side,
    mirrorable,
    point_json,
    reading,
)


@dataclass(frozen=True, slots=True)
class Handoff:
    """One group's position on one mirrored partition, as a drill would move it."""

    group: str
    topic: str
    partition: int
    source_committed: int
    # The secondary offset a drill would commit: the same where both clusters hold the
    # same offsets; else MirrorMaker's checkpoint (None: it has none for this commit).
    handoff: int | None
    same_offsets: bool
    # MirrorMaker's checkpoint, and the group's offset on the secondary now.
    checkpoint: Checkpoint | None
    target_committed: int | None

    @property
    def reread(self) -> int | None:
        """Records the group would read again after the drill (None: unknown, the
        group would start from its ``auto.offset.reset``)."""
        if self.same_offsets:
            return 0
        if self.checkpoint is None:
            return None
        return max(0, self.source_committed - self.checkpoint.upstream)

    @property
    def reread_from_synced(self) -> int | None:
        """Records it would read again from the offset MirrorMaker synced to the
        secondary (where offsets are the same there; None otherwise or when none)."""
        if not self.same_offsets or self.target_committed is None:
            return None
        return max(0, self.source_committed - self.target_committed)

    def as_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "topic": self.topic,
            "partition": self.partition,
            "source_committed": self.source_committed,
            "handoff": self.handoff,
            "same_offsets": self.same_offsets,
            "reread": self.reread,
            "checkpoint": point_json(self.checkpoint),
            "target_committed": self.target_committed,
            "reread_from_synced": self.reread_from_synced,
        }


@dataclass(frozen=True, slots=True)
class DrillPlan:
    """What a drill from ``status.source`` to ``status.target`` would meet now."""

    status: ReplicationStatus
    handoffs: tuple[Handoff, ...]
    not_mirrored: tuple[str, ...]  # topics on the source only

    @property
    def same_offsets(self) -> tuple[PartitionLag, ...]:
        return tuple(p for p in self.status.partitions if holds_same_offsets(p))

    @property
    def reread(self) -> int | None:
        """Records all groups would read again (None: some group's is unknown)."""
        counts = [h.reread for h in self.handoffs]
        return None if any(c is None for c in counts) else sum(c or 0 for c in counts)

    def as_json(self) -> dict[str, Any]:
        status = self.status
        return {
            "source": status.source,
            "target": status.target,
            "read_at": status.read_at,
            "caught_up": status.caught_up,
            "pending": status.pending,
            "pending_partitions": sum(1 for p in status.partitions if not p.caught_up),
            "partitions": len(status.partitions),
            "same_offsets": [
                {"topic": p.topic, "partition": p.partition} for p in self.same_offsets
            ],
            "reread": self.reread,
            "groups": [h.as_json() for h in self.handoffs],
            "not_mirrored": list(self.not_mirrored),
        }


def holds_same_offsets(lag: PartitionLag) -> bool:
    """Whether both clusters hold the partition's records at the same offsets: nothing
    is left to copy and the ends match (the secondary holds only copies, so a gap on
    the source would leave its end lower)."""
    return lag.caught_up and lag.source_end == lag.target_end


def handoffs(
    partitions: Iterable[PartitionLag],
    commits: dict[str, dict[tuple[str, int], int]],
    checkpoints: dict[tuple[str, str, int], Checkpoint],
    target_commits: dict[str, dict[tuple[str, int], int]],
) -> list[Handoff]:
    """Per group commit on a mirrored partition, the handoff a drill would make."""
    same = {(p.topic, p.partition): holds_same_offsets(p) for p in partitions}
    found = []
    for group in sorted(commits):
        for (topic, partition), committed in sorted(commits[group].items()):
            if (topic, partition) not in same:
                continue  # not a mirrored partition (or not one asked about)
            checkpoint = checkpoints.get((group, topic, partition))
            aligned = same[(topic, partition)]
            if aligned:
                handoff: int | None = committed
            else:
                handoff = checkpoint.downstream if checkpoint is not None else None
            found.append(
                Handoff(
                    group,
                    topic,
                    partition,
                    committed,
                    handoff,
                    aligned,
                    checkpoint,
                    target_commits.get(group, {}).get((topic, partition)),
                )
            )
    return found


async def drill_plan(
    source: ClusterConfig,
    target: ClusterConfig,
    *,
    source_alias: str = "primary",
    target_alias: str = "secondary",
    topics: re.Pattern[str] | None = None,
    groups: re.Pattern[str] | None = None,
    pending_read_limit: int = PENDING_READ_LIMIT,
) -> DrillPlan:
    """Read what a drill from ``source`` to ``target`` would meet now (nothing is
    changed on either cluster)."""
    async with reading(source, target, source_alias, target_alias) as clusters:
        src, tgt = clusters.src, clusters.tgt
        source_topics = [
            t
            for t in mirrorable(await src.consumer.topics())
            if topics is None or topics.fullmatch(t)
        ]
        target_topics = set(await tgt.consumer.topics())
        names = [t for t in source_topics if t in target_topics]
        status, latest = await clusters.status(names, groups, pending_read_limit)
        group_ids = sorted(
            g for g in await _group_ids(src) if groups is None or groups.fullmatch(g)
        )
        commits = {g: await src.committed(g) for g in group_ids}
        target_commits = {g: await tgt.committed(g) for g in group_ids}
    by_key = {(c.group, c.topic, c.partition): c for c in latest.values()}
    plan = handoffs(status.partitions, commits, by_key, target_commits)
    return DrillPlan(status, tuple(plan), tuple(t for t in source_topics if t not in target_topics))


async def _group_ids(side: Side) -> list[str]:
    """The consumer groups the cluster knows (classic and consumer protocol)."""
    listed = await side.admin.list_consumer_groups()
    return [str(entry[0]) for entry in listed]
