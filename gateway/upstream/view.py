"""What the gateway knows of one upstream cluster's layout: brokers, leaders, topic ids.

The view is filled only from the gateway's own Metadata requests (all topics, a
version the gateway chose), never from an answer a client asked for: a client's old
Metadata version carries no topic ids, and its topic list is not the whole cluster.
An answer that lists no broker (a controller fencing every broker for a moment, as
after a paused broker resumes) is refused, so a working view is never replaced by an
empty one. Pure data: no I/O here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

_NO_TOPIC_ID = uuid.UUID(int=0)


@dataclass(slots=True)
class PartitionRoute:
    leader: int
    leader_epoch: int


@dataclass(slots=True)
class TopicRoute:
    name: str
    topic_id: uuid.UUID | None
    partitions: dict[int, PartitionRoute] = field(default_factory=dict)
    is_internal: bool = False


@dataclass(slots=True)
class ClusterView:
    """What the gateway knows of an upstream cluster's layout."""

    brokers: dict[int, tuple[str, int]] = field(default_factory=dict)
    topics: dict[str, TopicRoute] = field(default_factory=dict)
    names_by_id: dict[uuid.UUID, str] = field(default_factory=dict)
    controller_id: int = -1
    cluster_id: str | None = None

    def leader(self, topic: str, partition: int) -> int | None:
        route = self.topics.get(topic)
        if route is None:
            return None
        found = route.partitions.get(partition)
        return None if found is None or found.leader < 0 else found.leader

    def update(self, response: Any) -> bool:
        """Take in an all-topics Metadata answer; False (and nothing changed) when it
        lists no broker."""
        if not response.brokers:
            return False
        self.brokers = {b.node_id: (b.host, b.port) for b in response.brokers}
        self.controller_id = getattr(response, "controller_id", -1)
        self.cluster_id = getattr(response, "cluster_id", None)
        topics: dict[str, TopicRoute] = {}
        for topic in response.topics:
            if topic.name is None or topic.error_code != 0:
                continue
            topic_id = getattr(topic, "topic_id", None)
            route = TopicRoute(
                topic.name,
                None if topic_id == _NO_TOPIC_ID else topic_id,
                {
                    p.partition_index: PartitionRoute(p.leader_id, getattr(p, "leader_epoch", -1))
                    for p in topic.partitions
                },
                bool(getattr(topic, "is_internal", False)),
            )
            topics[topic.name] = route
        self.topics = topics
        self.names_by_id = {r.topic_id: n for n, r in topics.items() if r.topic_id is not None}
        return True
