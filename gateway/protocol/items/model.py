"""The vocabulary of the item descriptions: resources, item lists, one API's items."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Kinds of resource a request names, as Kafka's authorizer knows them.
TOPIC = "topic"
GROUP = "group"
TRANSACTIONAL_ID = "transactional_id"
BROKER = "broker"
BROKER_LOGGER = "broker_logger"
CLIENT_METRICS = "client_metrics"
SHARE_PARTITION = "share_partition"
UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Resource:
    """One resource a request names: a topic (by name, or by id where the version
    addresses topics by id), a group, a transactional id, a config resource."""

    kind: str
    name: str | uuid.UUID


# Finds the resource an item names: (request body, item) -> resource, or None.
Namer = Callable[[Any, Any], Resource | None]

# In ``Items.echo``: the request item is itself the value (a list of plain names).
SELF = ""


@dataclass(frozen=True, slots=True)
class Items:
    """One list of items in a request, and the list of the response that answers it.

    ``request`` is the field of the parent (the request, or an item one level up) that
    holds the items; ``response`` the field of the parent's answer that holds one
    answer per item, each of class ``entity`` (a name in the version's generated
    module). ``response`` is None where Kafka answers these items at the level above
    (OffsetFetch v2-7 answers its topics with the group's error): they are only named.
    """

    request: str
    response: str | None = None
    entity: str = ""
    # Answer field <- request item field (SELF: the item itself).
    echo: Mapping[str, str] = field(default_factory=dict)
    # The answer's field that carries the error; "" where only nested answers do.
    error: str = ""
    # Kafka's values for other fields of a failed item's answer.
    fill: Mapping[str, Any] = field(default_factory=dict)
    children: tuple[Items, ...] = ()
    names: Namer | None = None


@dataclass(frozen=True, slots=True)
class Api:
    """One API's items, for a range of versions."""

    items: tuple[Items, ...] = ()
    # The response's own error_code carries the error (in versions that have one).
    error: bool = False
    # Kafka's values for other top-level fields of the answer.
    fill: Mapping[str, Any] = field(default_factory=dict)
    # Resources named by top-level request fields (a Heartbeat's group).
    names: Mapping[str, Namer] = field(default_factory=dict)


_ABSENT = (None, "", uuid.UUID(int=0))


def named(kind: str, *fields: str) -> Namer:
    """An item that names a ``kind`` by the first of ``fields`` that is set (a topic by
    its name, or by its id where the name is null or empty)."""

    def namer(request: Any, item: Any) -> Resource | None:
        values = [item if name == SELF else getattr(item, name, None) for name in fields]
        chosen = next((v for v in values if v not in _ABSENT), None)
        if chosen is None:
            chosen = next((v for v in values if v is not None), None)
        if chosen is None:
            return None
        return Resource(kind, chosen if isinstance(chosen, uuid.UUID) else str(chosen))

    return namer


_CONFIG_RESOURCE_KINDS = {2: TOPIC, 4: BROKER, 8: BROKER_LOGGER, 16: CLIENT_METRICS, 32: GROUP}
_COORDINATOR_KINDS = {0: GROUP, 1: TRANSACTIONAL_ID, 2: SHARE_PARTITION}


def config_resource(request: Any, item: Any) -> Resource:
    """A DescribeConfigs / AlterConfigs resource, by its resource type."""
    return Resource(_CONFIG_RESOURCE_KINDS.get(item.resource_type, UNKNOWN), item.resource_name)


def coordinator_key(request: Any, key: Any) -> Resource:
    """A FindCoordinator key, of the kind the request's key_type says."""
    kind = _COORDINATOR_KINDS.get(getattr(request, "key_type", 0), UNKNOWN)
    return Resource(kind, str(key))


A_TOPIC = named(TOPIC, "name", "topic", "topic_id")
THE_TOPIC = named(TOPIC, SELF)
A_GROUP = named(GROUP, "group_id")
THE_GROUP = named(GROUP, SELF)
A_TRANSACTIONAL_ID = named(TRANSACTIONAL_ID, "transactional_id")
THE_TRANSACTIONAL_ID = named(TRANSACTIONAL_ID, SELF)

# Echo a topic's name, or its id in versions that address topics by id.
NAME_OR_ID = {"name": "name", "topic_id": "topic_id"}
NAME = {"name": "name"}
PARTITION_INDEX = ("partition_index", "partition_index")


def topics(
    request: str,
    response: str | None,
    entity: str,
    *partitions: Items,
    echo: Mapping[str, str] = NAME,
) -> Items:
    """A list of topics, each answered by its partitions' answers."""
    return Items(request, response, entity, echo=echo, children=partitions, names=A_TOPIC)


def partitions(
    request: str,
    response: str,
    entity: str,
    index: tuple[str, str] = PARTITION_INDEX,
    error: str = "error_code",
    **fill: Any,
) -> Items:
    """A topic's partitions, each answered with the error; ``index`` is (answer field,
    request field) of the partition index, the request field SELF for plain indexes."""
    return Items(request, response, entity, echo=dict([index]), error=error, fill=fill)


def only_named(request: str, names: Namer = A_TOPIC, *children: Items) -> Items:
    """Items a request names that Kafka answers at the level above."""
    return Items(request, children=children, names=names)


def listed(request: str, response: str, entity: str, key: str, names: Namer, **fill: Any) -> Items:
    """A list of plain names (groups, transactional ids), each answered with the error
    in ``key``."""
    return Items(
        request, response, entity, echo={key: SELF}, error="error_code", fill=fill, names=names
    )


def one_group(**fill: Any) -> Api:
    """An API about one group, answered with the response's own error code."""
    return Api(error=True, fill=fill, names={"group_id": THE_GROUP})
