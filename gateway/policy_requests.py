"""Minimal request bodies for ``policy explain``: one kio request of a served API that
names a given topic, group and transactional id, as a client would send it.

``policy explain --api`` hands such a body to
:func:`gateway.policy.operations.required_actions`, so that it explains a decision with
the very checks the gateway makes on the wire, not with a second table. A body is
built for the highest version the gateway serves: every field a client must fill is
left empty (zero, empty list, null) except those that name resources, which get the
given names, and the few that change which checks Kafka makes (a consumer's replica id,
FindCoordinator's key type, the config resource type).

Pure: builds dataclasses; it never decides, reads policies, sockets or files.
"""

from __future__ import annotations

import dataclasses
import datetime
import typing
import uuid
from dataclasses import dataclass
from typing import Any

from gateway.errors import UnsupportedApi
from gateway.policy.operations import TABLE
from gateway.protocol import codec
from gateway.protocol import versions as api

# The topic id a body uses where its version addresses topics by id; explain resolves
# it to the given topic name, as the gateway resolves ids from the cluster's metadata.
TOPIC_ID = uuid.UUID("00000000-0000-0000-0000-00000000e791")

# Config resource type ids (ConfigResource.Type): the one a body asks about.
_CONFIG_TOPIC, _CONFIG_BROKER, _CONFIG_GROUP = 2, 4, 32
# FindCoordinator key types.
_KEY_GROUP, _KEY_TRANSACTION = 0, 1
# A consumer's replica id: any other makes Fetch and ListOffsets a broker's request.
_CONSUMER = -1

# Lists a client may leave out, and so does a body when no name is given for them:
# without --topic a ConsumerGroupHeartbeat subscribes to nothing new.
_OPTIONAL_LISTS = frozenset({"subscribed_topic_names"})

_ZEROS: tuple[tuple[type, Any], ...] = (
    (bool, False),
    (int, 0),
    (str, ""),
    (bytes, b""),
    (datetime.timedelta, datetime.timedelta(0)),
    (uuid.UUID, uuid.UUID(int=0)),
)


@dataclass(frozen=True, slots=True)
class Names:
    """The resources a body names. ``None`` for a name not given: where the request
    must name one, the body carries a placeholder the caller can spot in the checks."""

    topic: str | None = None
    group: str | None = None
    transactional_id: str | None = None


MISSING_TOPIC = "\0missing topic"
MISSING_GROUP = "\0missing group"
MISSING_TRANSACTIONAL_ID = "\0missing transactional id"


def api_keys_by_name() -> dict[str, int]:
    """Every API the gateway authorizes, by Kafka's name for it (``OffsetCommit``)."""
    return {api.api_name(key): key for key in TABLE}


def version_for(api_key: int) -> int:
    """The highest version of ``api_key`` the gateway serves and kio knows."""
    implemented, known = api.IMPLEMENTED.get(api_key), api.kio_range(api_key)
    served = implemented.intersect(known) if implemented and known else None
    if served is None:
        raise UnsupportedApi(f"api_key={api_key} is not served")
    return served.max


def request_body(api_key: int, version: int, names: Names) -> Any:
    """A ``version`` request of ``api_key`` naming ``names``."""
    return _Builder(names).entity(codec.request_schema(api_key, version))


class _Builder:
    def __init__(self, names: Names) -> None:
        self.topic = names.topic if names.topic is not None else MISSING_TOPIC
        self.group = names.group if names.group is not None else MISSING_GROUP
        txn = names.transactional_id
        self.txn = txn if txn is not None else MISSING_TRANSACTIONAL_ID
        # An optional transactional id left out is a request without one (an
        # idempotent InitProducerId, a Produce outside transactions), not a mistake.
        self.optional_txn = txn
        # FindCoordinator looks up a transaction's coordinator only when asked about
        # a transactional id and no group.
        self.key_is_txn = txn is not None and names.group is None
        self.given_topic = names.topic is not None

    def entity(self, cls: type[Any]) -> Any:
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            value = self.value(f.name, hints[f.name])
            if value is not _UNSET:
                values[f.name] = value
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                annotation = hints[f.name]
                nested = dataclasses.is_dataclass(annotation) and isinstance(annotation, type)
                values[f.name] = self.entity(annotation) if nested else _zero(annotation)
        return cls(**values)

    def value(self, name: str, annotation: Any) -> Any:  # noqa: C901 - one flat lookup
        optional = type(None) in typing.get_args(annotation)
        if name in ("name", "topic", "topic_name"):
            return self.topic
        if name == "topic_id":
            return TOPIC_ID
        if name in ("group_id",):
            return self.group
        if name in ("transactional_id", "v3_and_below_transactional_id"):
            return self.optional_txn if optional else self.txn
        if name in ("replica_id",):
            return _CONSUMER
        if name == "key_type":
            return _KEY_TRANSACTION if self.key_is_txn else _KEY_GROUP
        if name in ("key", "coordinator_keys"):
            key = self.txn if self.key_is_txn else self.group
            return (key,) if name == "coordinator_keys" else key
        if name == "allow_auto_topic_creation":
            # Creation is a second check made only for a topic that does not exist.
            return False
        if name == "resource_type":
            return self.config_resource()[0]
        if name == "resource_name":
            return self.config_resource()[1]
        return self.listed(name, annotation)

    def listed(self, name: str, annotation: Any) -> Any:
        if name in _OPTIONAL_LISTS and not self.given_topic:
            return _UNSET
        element = _element(annotation)
        if element is None:
            return _UNSET
        if name in ("topics", "topic_data", "v3_and_below_topics", "subscribed_topic_names"):
            return (self.topic if element is str else self.entity(element),)
        if name in ("groups", "group_ids", "groups_names"):
            return (self.group if element is str else self.entity(element),)
        if name == "transactional_ids":
            return (self.txn,)
        if name == "resources":
            return (self.entity(element),)
        return _UNSET

    def config_resource(self) -> tuple[int, str]:
        """A config request asks about the topic if one is given, else the group, else
        broker 0 (the cluster's)."""
        if self.given_topic:
            return _CONFIG_TOPIC, self.topic
        if self.group != MISSING_GROUP:
            return _CONFIG_GROUP, self.group
        return _CONFIG_BROKER, "0"


_UNSET = object()


def _element(annotation: Any) -> type[Any] | None:
    """``X`` for ``tuple[X, ...]`` (or ``tuple[X, ...] | None``), else None."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(candidate) is tuple:
            args = typing.get_args(candidate)
            if args and isinstance(args[0], type):
                element: type[Any] = args[0]
                return str if issubclass(element, str) else element
    return None


def _zero(annotation: Any) -> Any:
    if type(None) in typing.get_args(annotation):
        return None
    if typing.get_origin(annotation) is tuple:
        return ()
    for base, zero in _ZEROS:
        if isinstance(annotation, type) and issubclass(annotation, base):
            return zero
    raise TypeError(f"no empty value for {annotation!r}")
