"""Route the partitions of one request to their upstream leaders and merge the answers.

Produce, Fetch, ListOffsets and OffsetForLeaderEpoch share one shape: topics, each
with partitions. :class:`PartitionedApi` names the fields of that shape for one API;
:func:`split` groups a request's partitions by leader and :func:`merge` joins the
leaders' answers, with synthesized errors for partitions no leader could take.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kio.schema.errors import ErrorCode

from gateway.protocol import codec
from gateway.upstream.view import ClusterView

# Errors after which the gateway's routing table is stale.
STALE_ROUTE_ERRORS = frozenset(
    {
        ErrorCode.not_leader_or_follower,
        ErrorCode.leader_not_available,
        ErrorCode.unknown_topic_or_partition,
        ErrorCode.unknown_topic_id,
        ErrorCode.fenced_leader_epoch,
        ErrorCode.unknown_leader_epoch,
        ErrorCode.not_controller,
    }
)


def reveals_upstream(partition: Any) -> bool:
    """True when a response partition must change before a client sees it: it reports
    a stale route, or names an upstream broker (current leader, preferred replica)."""
    if partition.error_code in STALE_ROUTE_ERRORS:
        return True
    if getattr(partition, "preferred_read_replica", -1) >= 0:
        return True
    current = getattr(partition, "current_leader", None)
    return current is not None and current.leader_id >= 0


def hide_upstream(partition: Any, node_id: int) -> Any:
    """The response partition as the gateway's clients must see it: a current leader
    is the gateway itself, and no follower is ever preferred."""
    changes: dict[str, Any] = {"preferred_read_replica": -1}
    current = getattr(partition, "current_leader", None)
    if current is not None and current.leader_id >= 0:
        changes["current_leader"] = codec.replace(current, leader_id=node_id)
    return codec.replace(partition, **changes)


@dataclass(frozen=True)
class PartitionedApi:
    """Field and class names of a topics/partitions request and its response."""

    request_topics: str
    request_partitions: str
    # Field of a request partition holding its index; "" where the partitions are
    # plain indexes (DescribeProducers' partition_indexes).
    request_partition: str
    response_topics: str
    response_partitions: str
    response_partition: str
    response_topic_class: str
    response_partition_class: str
    # Extra fields of a synthesized error partition (beyond index and error code).
    error_fields: Callable[[], dict[str, Any]]


TopicKey = str | uuid.UUID


def partition_index(api: PartitionedApi, partition: Any) -> int:
    """The index of one request partition."""
    return int(getattr(partition, api.request_partition) if api.request_partition else partition)


def topic_key(topic: Any) -> TopicKey:
    """A topic entity's name, or its id in versions that address topics by id; a
    topic with neither (a null name) is the empty name, which no topic has."""
    for field in ("name", "topic"):
        name = getattr(topic, field, None)
        if name is not None:
            return str(name)
    topic_id = getattr(topic, "topic_id", None)
    if isinstance(topic_id, uuid.UUID):
        return topic_id
    return ""


def _topic_name(view: ClusterView, key: TopicKey) -> str | None:
    return key if isinstance(key, str) else view.names_by_id.get(key)


@dataclass
class Split:
    by_leader: dict[int, list[Any]]
    unroutable: list[tuple[Any, list[Any]]]


def split(api: PartitionedApi, view: ClusterView, topics: Iterable[Any]) -> Split:
    """Group each topic's partitions by their upstream leader."""
    by_leader: dict[int, list[Any]] = defaultdict(list)
    unroutable: list[tuple[Any, list[Any]]] = []
    for topic in topics:
        name = _topic_name(view, topic_key(topic))
        groups: dict[int, list[Any]] = defaultdict(list)
        lost: list[Any] = []
        for partition in getattr(topic, api.request_partitions):
            index = partition_index(api, partition)
            leader = view.leader(name, index) if name is not None else None
            (lost if leader is None else groups[leader]).append(partition)
        if len(groups) == 1 and not lost:
            # The common case: the whole topic goes to one leader, as it came.
            by_leader[next(iter(groups))].append(topic)
            continue
        for leader, partitions in groups.items():
            by_leader[leader].append(
                codec.replace(topic, **{api.request_partitions: tuple(partitions)})
            )
        if lost:
            unroutable.append((topic, lost))
    return Split(dict(by_leader), unroutable)


def whole(api: PartitionedApi, topics: Iterable[Any]) -> list[tuple[Any, list[Any]]]:
    """Request topics with every one of their partitions, as :func:`error_topics` takes
    them."""
    return [(t, list(getattr(t, api.request_partitions))) for t in topics]


def error_topics(
    api: PartitionedApi,
    response_cls: type[Any],
    lost: list[tuple[Any, list[Any]]],
    error: ErrorCode,
) -> list[Any]:
    """Response topics that answer ``error`` for every lost partition; a topic named
    by id that is unknown is UNKNOWN_TOPIC_ID, as a broker answers."""
    module = codec.entity_module(response_cls)
    topic_cls = getattr(module, api.response_topic_class)
    partition_cls = getattr(module, api.response_partition_class)
    result = []
    for topic, partitions in lost:
        key = topic_key(topic)
        code = error
        if error == ErrorCode.unknown_topic_or_partition and isinstance(key, uuid.UUID):
            code = ErrorCode.unknown_topic_id
        answers = tuple(
            codec.build(
                partition_cls,
                **{
                    api.response_partition: partition_index(api, p),
                    "error_code": code,
                    **api.error_fields(),
                },
            )
            for p in partitions
        )
        result.append(
            codec.build(
                topic_cls,
                name=key if isinstance(key, str) else None,
                topic=key if isinstance(key, str) else None,
                topic_id=key if isinstance(key, uuid.UUID) else None,
                **{api.response_partitions: answers},
            )
        )
    return result


def merge_topics(api: PartitionedApi, topics: Iterable[Any]) -> tuple[Any, ...]:
    """Join response topics from several leaders: one entry per topic."""
    merged: dict[TopicKey, Any] = {}
    for topic in topics:
        key = topic_key(topic)
        seen = merged.get(key)
        if seen is None:
            merged[key] = topic
        else:
            partitions = getattr(seen, api.response_partitions) + getattr(
                topic, api.response_partitions
            )
            merged[key] = codec.replace(seen, **{api.response_partitions: partitions})
    return tuple(merged.values())


def stale_partitions(api: PartitionedApi, topics: Iterable[Any]) -> dict[TopicKey, set[int]]:
    """Partitions whose error says the route was stale, by topic."""
    stale: dict[TopicKey, set[int]] = defaultdict(set)
    for topic in topics:
        for p in getattr(topic, api.response_partitions):
            if p.error_code in STALE_ROUTE_ERRORS:
                stale[topic_key(topic)].add(getattr(p, api.response_partition))
    return dict(stale)


def select(
    api: PartitionedApi, topics: Iterable[Any], wanted: dict[TopicKey, set[int]]
) -> list[Any]:
    """The request topics restricted to the ``wanted`` partitions."""
    chosen = []
    for topic in topics:
        indexes = wanted.get(topic_key(topic))
        if not indexes:
            continue
        partitions = tuple(
            p for p in getattr(topic, api.request_partitions) if partition_index(api, p) in indexes
        )
        if partitions:
            chosen.append(codec.replace(topic, **{api.request_partitions: partitions}))
    return chosen


def drop(
    api: PartitionedApi, topics: Iterable[Any], unwanted: dict[TopicKey, set[int]]
) -> list[Any]:
    """The response topics without the ``unwanted`` partitions."""
    kept = []
    for topic in topics:
        indexes = unwanted.get(topic_key(topic), set())
        partitions = tuple(
            p
            for p in getattr(topic, api.response_partitions)
            if getattr(p, api.response_partition) not in indexes
        )
        if partitions:
            kept.append(codec.replace(topic, **{api.response_partitions: partitions}))
    return kept
