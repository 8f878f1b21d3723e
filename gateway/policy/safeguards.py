"""Safeguards: bounds an allowed request must keep, refused per item with POLICY_VIOLATION.

Rules say who may create a topic or produce to it; a safeguard says what they may ask
for when they do: how many partitions, which replication factor and configs, which
names, which acks, batch sizes and codecs, which client ids. :func:`check` reads a
decoded kio request and returns a :class:`Violation` per refused item, each with a
message naming the safeguard, its file and line, what was asked and the bound.

What each constraint checks:

* ``create_topics`` (CreateTopics, every version, ``validate_only`` or not; and
  ``max_partitions`` on CreatePartitions' new ``count``): partitions and replication
  factor come from the request's numbers, or from its manual assignments when it gives
  them. A ``-1`` ("the broker's default") is refused when the matching bound is set: the
  default lives in the upstream brokers' configuration, which the policy cannot see and
  which can change without the policy's version changing, so a bound it could slip
  past would be no bound. Clients then name the number explicitly.
* ``configs`` bounds (in ``create_topics`` and ``alter_configs``): ``forbidden`` refuses
  any mention of the config; ``allowed`` accepts a value listed whole, or a
  comma-separated list (Kafka's list configs such as ``cleanup.policy``) whose every
  element is listed; ``min``/``max`` need an integer inside the range, and ``-1``
  (Kafka's "no limit", for ``retention.ms`` infinite retention) is outside any range
  that starts above it. A config left out, or given a null value, keeps the broker's
  default and is never refused (except ``forbidden``, which refuses the null too).
* ``alter_configs`` (AlterConfigs and IncrementalAlterConfigs on topic resources):
  AlterConfigs and IncrementalAlterConfigs SET check each value as above; DELETE and
  SUBTRACT only shrink a config back towards the broker's default and are refused only
  for a ``forbidden`` config; APPEND checks the appended value as if it were set (each
  appended element must be ``allowed``).
* ``produce`` (per topic): ``acks: all`` needs the request's acks to be -1;
  ``max_batch_bytes`` bounds each partition's records bytes; ``compression`` reads
  each record batch header's codec (batches are walked by their length, never
  decompressed) and refuses a codec not listed, a pre-0.11 message set (magic < 2,
  whose codec is per message) and records that do not parse as batches.
* ``client_id_pattern``: every request of the safeguard's subjects must carry a client
  id the regex matches whole, or the whole request is refused (CLUSTER,
  ``kafka-cluster``). ApiVersions, SaslHandshake and SaslAuthenticate are never checked:
  a client must be able to connect and log in to be told why it is refused.

Sans-IO and decision-free like :mod:`gateway.policy.operations`: request entities in,
violations out. It never reads files, sockets or the server, and leaves allow/deny to
:func:`~gateway.policy.decide.decide`.
"""

from __future__ import annotations

import fnmatch
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import PurePath
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from gateway.identity import Identity
from gateway.policy import CLUSTER_NAME, ResourceType
from gateway.policy.model import (
    WILDCARD,
    AlterConfigsBounds,
    ConfigBound,
    CreateTopicsBounds,
    ProduceBounds,
    Safeguard,
    TopicPattern,
)
from gateway.policy.operations import Scope
from gateway.policy.subjects import EVERYONE, SubjectSet, compile_subjects
from gateway.protocol import versions as api

if TYPE_CHECKING:
    from gateway.policy.loader import Policy

__all__ = ["CompiledSafeguard", "Violation", "check", "compile_safeguard"]


@dataclass(frozen=True, slots=True)
class Violation:
    """One refused item and why: the pipeline answers it with POLICY_VIOLATION."""

    resource_type: ResourceType  # TOPIC for a topic item; CLUSTER for the whole request
    name: str  # the item's name exactly as operations.required_actions names it
    scope: Scope  # ITEM: that item is refused; REQUEST: the whole request is
    rule_id: str
    message: str


@dataclass(frozen=True, slots=True)
class _Topics:
    """Which topics a safeguard bounds; ``every`` when the safeguard names none."""

    literals: frozenset[str]
    prefixes: tuple[str, ...]
    globs: tuple[re.Pattern[str], ...]
    every: bool

    def covers(self, name: str) -> bool:
        return (
            self.every
            or name in self.literals
            or any(name.startswith(p) for p in self.prefixes)
            or any(g.match(name) for g in self.globs)
        )


@dataclass(frozen=True, slots=True)
class CompiledSafeguard:
    """A validated safeguard, ready to check: matchers, bounds, where it came from."""

    id: str
    source: str  # "policies/safeguards.yaml:4"
    subjects: SubjectSet
    topics: _Topics
    create_topics: CreateTopicsBounds | None
    name_pattern: re.Pattern[str] | None
    alter_configs: AlterConfigsBounds | None
    produce: ProduceBounds | None
    client_id_pattern: re.Pattern[str] | None
    description: str | None = None

    def refuse(self, kind: ResourceType, name: str, scope: Scope, problem: str) -> Violation:
        # The file's name and line, not its directory: clients read this message.
        where = PurePath(self.source).name
        return Violation(kind, name, scope, self.id, f"rule {self.id} ({where}): {problem}")


def topic_set(patterns: tuple[TopicPattern, ...] | None) -> _Topics:
    """The topics ``patterns`` name; None (not given) is every topic."""
    given = patterns or ()
    return _Topics(
        literals=frozenset(p.literal for p in given if p.literal is not None),
        prefixes=tuple(p.prefix for p in given if p.prefix is not None),
        globs=tuple(re.compile(fnmatch.translate(p.glob)) for p in given if p.glob),
        every=patterns is None or any(p.literal == WILDCARD for p in given),
    )


def compile_safeguard(guard: Safeguard, source: str) -> CompiledSafeguard:
    subjects = EVERYONE if guard.subjects is None else compile_subjects(guard.subjects)
    topics = topic_set(guard.topics)
    create = guard.create_topics
    return CompiledSafeguard(
        id=guard.id,
        source=source,
        subjects=subjects,
        topics=topics,
        create_topics=create,
        name_pattern=re.compile(create.name_pattern) if create and create.name_pattern else None,
        alter_configs=guard.alter_configs,
        produce=guard.produce,
        client_id_pattern=(
            re.compile(guard.client_id_pattern) if guard.client_id_pattern is not None else None
        ),
        description=guard.description,
    )


# -- configs ---------------------------------------------------------------------------


def _range(bound: ConfigBound) -> str:
    if bound.min is not None and bound.max is not None:
        return f"{bound.min}..{bound.max}"
    return f"at least {bound.min}" if bound.min is not None else f"at most {bound.max}"


def _config_problem(name: str, value: str | None, bound: ConfigBound) -> str | None:
    """Why setting config ``name`` to ``value`` breaks ``bound``, or None."""
    if bound.forbidden:
        return f"{name} may not be set (forbidden)"
    if value is None:
        return None  # a null value keeps the broker's default
    if bound.allowed is not None:
        elements = [e.strip() for e in value.split(",")]
        if value in bound.allowed or all(e in bound.allowed for e in elements):
            return None
        return f"{name}={value} is not allowed (allowed: {', '.join(bound.allowed)})"
    try:
        number = int(value.strip())
    except ValueError:
        return f"{name}={value!r} is not an integer; the bound is {_range(bound)}"
    if (bound.min is not None and number < bound.min) or (
        bound.max is not None and number > bound.max
    ):
        unlimited = " (-1 means no limit)" if number == -1 else ""
        return f"{name}={number}{unlimited} is outside {_range(bound)}"
    return None


def _configs_problem(
    configs: Iterable[tuple[str, str | None]], bounds: Mapping[str, ConfigBound]
) -> str | None:
    for name, value in configs:
        bound = bounds.get(name)
        if bound is not None and (problem := _config_problem(name, value, bound)):
            return problem
    return None


# IncrementalAlterConfigs' config_operation values.
_SET, _DELETE, _APPEND, _SUBTRACT = 0, 1, 2, 3
_CONFIG_TOPIC = 2  # ConfigResource.Type TOPIC


def _incremental_problem(config: Any, bounds: Mapping[str, ConfigBound]) -> str | None:
    bound = bounds.get(config.name)
    if bound is None:
        return None
    if int(config.config_operation) in (_DELETE, _SUBTRACT):
        # Back towards the broker's default: only a forbidden config may not be touched.
        return f"{config.name} may not be changed (forbidden)" if bound.forbidden else None
    return _config_problem(config.name, config.value, bound)


# -- per API ---------------------------------------------------------------------------

TopicNames = Mapping[uuid.UUID, str]
Checker = Callable[[CompiledSafeguard, Any, TopicNames], Iterator[Violation]]


def _topic_refusal(guard: CompiledSafeguard, name: str, problem: str | None) -> Iterator[Violation]:
    if problem is not None:
        yield guard.refuse(ResourceType.TOPIC, name, Scope.ITEM, problem)


def _sizes(topic: Any) -> tuple[int, tuple[int, ...]]:
    """(partitions, replication factor per partition) a CreatableTopic asks for; -1
    for a broker default. Manual assignments, when given, say both."""
    if topic.assignments:
        return len(topic.assignments), tuple(len(a.broker_ids) for a in topic.assignments)
    return int(topic.num_partitions), (int(topic.replication_factor),)


def _partitions_problem(count: int, bounds: CreateTopicsBounds) -> str | None:
    top = bounds.max_partitions
    if top is None:
        return None
    if count == -1:
        return f"partitions=-1 (the broker's default) cannot be held to max_partitions {top}"
    return f"partitions={count} is more than max_partitions {top}" if count > top else None


def _replication_problem(factors: tuple[int, ...], bounds: CreateTopicsBounds) -> str | None:
    low, high = bounds.min_replication_factor, bounds.max_replication_factor
    if low is None and high is None:
        return None
    wanted = f"{low or 1}..{high}" if high is not None else f"at least {low}"
    for factor in factors:
        if factor == -1:
            return f"replication factor -1 (the broker's default) cannot be held to {wanted}"
        if (low is not None and factor < low) or (high is not None and factor > high):
            return f"replication factor {factor} is outside {wanted}"
    return None


def _create_problem(guard: CompiledSafeguard, topic: Any) -> str | None:
    bounds = guard.create_topics
    assert bounds is not None
    if guard.name_pattern is not None and not guard.name_pattern.fullmatch(topic.name):
        return f"topic name {topic.name!r} does not match {guard.name_pattern.pattern!r}"
    partitions, factors = _sizes(topic)
    return (
        _partitions_problem(partitions, bounds)
        or _replication_problem(factors, bounds)
        or _configs_problem(((c.name, c.value) for c in topic.configs), bounds.configs)
    )


def _create_topics(guard: CompiledSafeguard, body: Any, _: TopicNames) -> Iterator[Violation]:
    if guard.create_topics is None:
        return
    for topic in body.topics:
        if guard.topics.covers(topic.name):
            yield from _topic_refusal(guard, topic.name, _create_problem(guard, topic))


def _create_partitions(guard: CompiledSafeguard, body: Any, _: TopicNames) -> Iterator[Violation]:
    if guard.create_topics is None:
        return
    for topic in body.topics:
        if guard.topics.covers(topic.name):
            problem = _partitions_problem(int(topic.count), guard.create_topics)
            yield from _topic_refusal(guard, topic.name, problem)


def _alter_configs(guard: CompiledSafeguard, body: Any, _: TopicNames) -> Iterator[Violation]:
    if guard.alter_configs is None:
        return
    bounds = guard.alter_configs.configs
    for resource in body.resources:
        name = resource.resource_name
        if int(resource.resource_type) == _CONFIG_TOPIC and guard.topics.covers(name):
            problem = _configs_problem(((c.name, c.value) for c in resource.configs), bounds)
            yield from _topic_refusal(guard, name, problem)


def _incremental_alter_configs(
    guard: CompiledSafeguard, body: Any, _: TopicNames
) -> Iterator[Violation]:
    if guard.alter_configs is None:
        return
    bounds = guard.alter_configs.configs
    for resource in body.resources:
        name = resource.resource_name
        if int(resource.resource_type) == _CONFIG_TOPIC and guard.topics.covers(name):
            found = (_incremental_problem(c, bounds) for c in resource.configs)
            yield from _topic_refusal(guard, name, next((p for p in found if p), None))


# -- Produce ---------------------------------------------------------------------------

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
"""Record batch codecs by their id in the attributes' low three bits."""

_LENGTH_AT, _MAGIC_AT, _ATTRIBUTES_AT = 8, 16, 21
_LOG_OVERHEAD = 12  # baseOffset and batchLength precede what batchLength counts
_V2_HEADER = 61  # a record batch header, up to and including its record count


def _codec_problem(records: bytes, allowed: tuple[str, ...]) -> str | None:
    """Why a partition's records break the codec bound: a codec not allowed, an old
    message set, or bytes that are not whole record batches."""
    offset = 0
    while offset < len(records):
        if len(records) - offset < _V2_HEADER:
            return "records end inside a batch header"
        length = int.from_bytes(records[offset + _LENGTH_AT : offset + _LOG_OVERHEAD], "big")
        magic = records[offset + _MAGIC_AT]
        if magic < 2:
            return f"a magic {magic} message set has no batch codec (allowed: {', '.join(allowed)})"
        end = offset + _LOG_OVERHEAD + length
        if length < _V2_HEADER - _LOG_OVERHEAD or end > len(records):
            return "records hold a batch whose length does not fit them"
        at = offset + _ATTRIBUTES_AT
        codec_id = int.from_bytes(records[at : at + 2], "big") & 0x07
        codec = CODECS[codec_id] if codec_id < len(CODECS) else f"codec {codec_id}"
        if codec not in allowed:
            return f"compression {codec} is not allowed (allowed: {', '.join(allowed)})"
        offset = end
    return None


def _partition_problem(partition: Any, bounds: ProduceBounds) -> str | None:
    records = bytes(partition.records or b"")
    top = bounds.max_batch_bytes
    if top is not None and len(records) > top:
        return (
            f"partition {partition.index}: {len(records)} bytes of records is more "
            f"than max_batch_bytes {top}"
        )
    if bounds.compression is not None:
        problem = _codec_problem(records, bounds.compression)
        return f"partition {partition.index}: {problem}" if problem else None
    return None


def _produce_topic_name(topic: Any, topic_names: TopicNames) -> str:
    # As required_actions names it: by name, or (v13+) by id, and an id nobody can name
    # by the id itself (authorization refuses that item anyway).
    name = getattr(topic, "name", None)
    if isinstance(name, str) and name:
        return name
    topic_id = topic.topic_id
    return topic_names.get(topic_id, str(topic_id))


def _produce_problem(body: Any, topic: Any, bounds: ProduceBounds) -> str | None:
    if bounds.acks == "all" and int(body.acks) != -1:
        return f"acks={int(body.acks)}, but this topic needs acks=all (-1)"
    found = (_partition_problem(p, bounds) for p in topic.partition_data)
    return next((p for p in found if p), None)


def _produce(guard: CompiledSafeguard, body: Any, topic_names: TopicNames) -> Iterator[Violation]:
    if guard.produce is None:
        return
    for topic in body.topic_data:
        name = _produce_topic_name(topic, topic_names)
        if guard.topics.covers(name):
            yield from _topic_refusal(guard, name, _produce_problem(body, topic, guard.produce))


CHECKERS: Mapping[int, Checker] = MappingProxyType(
    {
        api.CREATE_TOPICS: _create_topics,
        api.CREATE_PARTITIONS: _create_partitions,
        api.ALTER_CONFIGS: _alter_configs,
        api.INCREMENTAL_ALTER_CONFIGS: _incremental_alter_configs,
        api.PRODUCE: _produce,
    }
)
"""The APIs whose items a safeguard can refuse (every API is held to client ids)."""

NEVER_CHECKED = frozenset({api.API_VERSIONS, api.SASL_HANDSHAKE, api.SASL_AUTHENTICATE})
"""Connecting and logging in: a client refused here could never learn why."""

_NO_NAMES: TopicNames = MappingProxyType({})


def check(
    policy: Policy,
    identity: Identity,
    api_key: int,
    body: Any,
    client_id: str | None,
    *,
    topic_names: TopicNames = _NO_NAMES,
) -> tuple[Violation, ...]:
    """Every item of the request that breaks a safeguard of ``identity``, at most one
    per item (the first safeguard, in file order, that refuses it); a REQUEST-scope
    violation (client id) comes first. ``topic_names`` names Produce v13's topic ids as
    for :func:`~gateway.policy.operations.required_actions`."""
    if api_key in NEVER_CHECKED or not policy.safeguards:
        return ()
    mine = [g for g in policy.safeguards if g.subjects.matches(identity)]
    found: dict[tuple[ResourceType, str], Violation] = {}
    for guard in mine:
        pattern = guard.client_id_pattern
        if pattern is not None and not pattern.fullmatch(client_id or ""):
            problem = f"client id {client_id!r} does not match {pattern.pattern!r}"
            refusal = guard.refuse(ResourceType.CLUSTER, CLUSTER_NAME, Scope.REQUEST, problem)
            found.setdefault((ResourceType.CLUSTER, CLUSTER_NAME), refusal)
    checker = CHECKERS.get(api_key)
    if checker is not None:
        for guard in mine:
            for violation in checker(guard, body, topic_names):
                found.setdefault((violation.resource_type, violation.name), violation)
    return tuple(found.values())
