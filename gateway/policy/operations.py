"""What Kafka's authorizer checks for each served API: a request's items and their Actions.

:func:`required_actions` reads a decoded kio request body and says, per item the
request names (a topic, a group, a transactional id, a config resource, or the request
as a whole), which :class:`~gateway.policy.Action` checks Kafka's own broker makes
before serving it, and whether a denial fails only that item or the whole request.
The truth is Kafka 4's ``KafkaApis.scala``, ``ControllerApis.scala`` and
``ConfigHelper.scala``; where they differ from the documentation's "Operations and
Resources on Protocols" table, the code wins and the comment says so.

A check is a conjunction of :class:`AnyOf`: Kafka often accepts a cluster-wide grant in
place of a per-resource one (CREATE on the cluster or on the topic), and an empty
``AnyOf`` is never satisfied (a topic id the caller cannot name is refused, as Kafka
answers UNKNOWN_TOPIC_ID without consulting the authorizer).

Answers can list resources the request never named (Metadata for all topics,
ListGroups, ListTransactions, OffsetFetch for all topics): those refuse nothing here,
and :data:`RESPONSE_FILTERS` says what showing each listed resource takes.

Sans-IO and decision-free: it reads request entities and returns data; it never decides,
reads policies, sockets or the server.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import UnsupportedApi
from gateway.policy import CLUSTER_NAME, Action, Operation, ResourceType
from gateway.protocol import versions as api

__all__ = [
    "RESPONSE_FILTERS",
    "TABLE",
    "AnyOf",
    "AnyResource",
    "ItemActions",
    "ResponseFilter",
    "Scope",
    "required_actions",
]


class Scope(enum.Enum):
    """What a denial of an item's checks fails."""

    ITEM = "item"
    """Only this item: it gets the resource's authorization error, the others go on."""
    REQUEST = "request"
    """The whole request: Kafka checks this item first and answers every item with its
    error (a Produce whose transactional id is denied, an OffsetCommit whose group is)."""


@dataclass(frozen=True, slots=True)
class AnyResource:
    """Allowed when the identity may perform ``operation`` on at least one resource of
    this type, whatever its name (Kafka's ``authorizeByResourceType``)."""

    resource_type: ResourceType
    operation: Operation


@dataclass(frozen=True, slots=True)
class AnyOf:
    """Satisfied when any one of ``choices`` is allowed; never when there is none."""

    choices: tuple[Action | AnyResource, ...]


@dataclass(frozen=True, slots=True)
class ItemActions:
    """One item of a request and what Kafka checks before serving it.

    ``resource_type`` and ``name`` say which item of the request this is, and so which
    error a denial answers (TOPIC_AUTHORIZATION_FAILED for a topic, GROUP_… for a group,
    TRANSACTIONAL_ID_… for a transactional id, CLUSTER_… for the cluster and for broker
    config resources, whose ``name`` is the broker id as the request gives it).
    Every one of ``checks`` must be satisfied. ``to_create`` holds only for a Metadata
    topic that does not exist and would be auto-created: Kafka checks it after
    ``checks``, and only then.
    """

    resource_type: ResourceType
    name: str
    scope: Scope
    checks: tuple[AnyOf, ...]
    to_create: tuple[AnyOf, ...] = ()


TopicNames = Mapping[uuid.UUID, str]
Describer = Callable[[Any, TopicNames], tuple[ItemActions, ...]]

_NO_TOPIC_ID = uuid.UUID(int=0)
# The resource name a rule must grant for "every topic" (Kafka's literal wildcard).
WILDCARD_TOPIC = "*"
# The one replica id a consumer sends. Kafka treats ids >= 0 as followers (brokers)
# and -2 as a debugging consumer that may read past the high watermark; the gateway
# serves neither, so both need CLUSTER_ACTION, which no rule should grant.
_CONSUMER_REPLICA_ID = -1


def _cluster(operation: Operation) -> Action:
    return Action(ResourceType.CLUSTER, CLUSTER_NAME, operation)


def _one(resource_type: ResourceType, name: str, operation: Operation) -> AnyOf:
    return AnyOf((Action(resource_type, name, operation),))


def _item(
    resource_type: ResourceType, name: str, operation: Operation, scope: Scope = Scope.ITEM
) -> ItemActions:
    return ItemActions(resource_type, name, scope, (_one(resource_type, name, operation),))


def _cluster_or_topic(name: str, operation: Operation) -> AnyOf:
    """Kafka's admin pattern: the operation on the cluster covers every topic."""
    return AnyOf((_cluster(operation), Action(ResourceType.TOPIC, name, operation)))


def _whole_request(operation: Operation) -> ItemActions:
    return ItemActions(
        ResourceType.CLUSTER, CLUSTER_NAME, Scope.REQUEST, (AnyOf((_cluster(operation),)),)
    )


def _topic_name(topic: Any, topic_names: TopicNames) -> str | None:
    """A topic item's name, by name or, in versions that address topics by id, by id;
    None for an id the caller cannot name."""
    name = getattr(topic, "name", None)
    if name is None:
        name = getattr(topic, "topic", None)
    if isinstance(name, str) and name:
        return name
    topic_id = getattr(topic, "topic_id", None)
    if isinstance(topic_id, uuid.UUID) and topic_id != _NO_TOPIC_ID:
        return topic_names.get(topic_id)
    return name if isinstance(name, str) else None


def _unknown_id(topic_id: uuid.UUID, scope: Scope = Scope.ITEM) -> ItemActions:
    # No grant satisfies an empty AnyOf: an id nobody can name is never forwarded.
    return ItemActions(ResourceType.TOPIC, str(topic_id), scope, (AnyOf(()),))


def _topics(
    topics: Iterable[Any] | None,
    topic_names: TopicNames,
    operation: Operation,
    scope: Scope = Scope.ITEM,
) -> tuple[ItemActions, ...]:
    found = []
    for topic in topics or ():
        name = _topic_name(topic, topic_names)
        if name is None:
            found.append(_unknown_id(topic.topic_id, scope))
        else:
            found.append(_item(ResourceType.TOPIC, name, operation, scope))
    return tuple(found)


def _group(body: Any, operation: Operation) -> ItemActions:
    return _item(ResourceType.GROUP, body.group_id, operation, Scope.REQUEST)


def _transactional_id(transactional_id: str) -> ItemActions:
    return _item(ResourceType.TRANSACTIONAL_ID, transactional_id, Operation.WRITE, Scope.REQUEST)


# Data path


def _produce(body: Any, topic_names: TopicNames) -> tuple[ItemActions, ...]:
    # Kafka checks the transactional id only when the batches are transactional
    # (RequestUtils.hasTransactionalRecords) and then fails the whole request. A
    # client sets transactional_id exactly when it sends transactional batches, so
    # checking it whenever it is set asks the same without reading the batches (and
    # transactional batches without one are refused by the upstream broker itself).
    # Idempotent batches need nothing beyond WRITE on the topic since Kafka 3 (KIP-679
    # dropped IDEMPOTENT_WRITE on the cluster from Produce).
    txn = (_transactional_id(body.transactional_id),) if body.transactional_id else ()
    return txn + _topics(body.topic_data, topic_names, Operation.WRITE)


def _replica_id(body: Any) -> int:
    state = getattr(body, "replica_state", None)
    replica_id = state.replica_id if state is not None else getattr(body, "replica_id", -1)
    return int(replica_id)


def _fetch(body: Any, topic_names: TopicNames) -> tuple[ItemActions, ...]:
    if _replica_id(body) != _CONSUMER_REPLICA_ID:
        # A follower's fetch needs CLUSTER_ACTION (Kafka answers each partition
        # TOPIC_AUTHORIZATION_FAILED without it): the gateway is no broker's leader.
        return (_whole_request(Operation.CLUSTER_ACTION),)
    # Forgotten topics are not checked: forgetting reveals and reads nothing.
    return _topics(body.topics, topic_names, Operation.READ)


def _list_offsets(body: Any, topic_names: TopicNames) -> tuple[ItemActions, ...]:
    # DESCRIBE, not READ: offsets describe a topic (KafkaApis.handleListOffsetRequest).
    return _topics(body.topics, topic_names, Operation.DESCRIBE)


def _offset_for_leader_epoch(body: Any, topic_names: TopicNames) -> tuple[ItemActions, ...]:
    # Kafka accepts CLUSTER_ACTION on the cluster in place of DESCRIBE on each topic:
    # the API began as a broker-only one (KIP-320 opened it to consumers).
    found = []
    for topic in body.topics:
        choices = (Action(ResourceType.TOPIC, topic.topic, Operation.DESCRIBE),)
        found.append(
            ItemActions(
                ResourceType.TOPIC,
                topic.topic,
                Scope.ITEM,
                (AnyOf((_cluster(Operation.CLUSTER_ACTION), *choices)),),
            )
        )
    return tuple(found)


def _metadata(body: Any, topic_names: TopicNames) -> tuple[ItemActions, ...]:
    if not body.topics:
        # All topics (null, or an empty list before v1): nothing is refused, the
        # answer lists only describable topics (RESPONSE_FILTERS).
        return ()
    auto_create = bool(getattr(body, "allow_auto_topic_creation", True))
    found = []
    for topic in body.topics:
        name = _topic_name(topic, topic_names)
        if name is None:
            found.append(_unknown_id(topic.topic_id))
            continue
        create = _cluster_or_topic(name, Operation.CREATE)
        describe = _one(ResourceType.TOPIC, name, Operation.DESCRIBE)
        # Kafka answers a topic it may not create TOPIC_AUTHORIZATION_FAILED, like one
        # it may not describe, so that auto-creation is no existence oracle either.
        to_create = (create,) if auto_create else ()
        found.append(ItemActions(ResourceType.TOPIC, name, Scope.ITEM, (describe,), to_create))
    return tuple(found)


def _describe_producers(body: Any, topic_names: TopicNames) -> tuple[ItemActions, ...]:
    # READ, not DESCRIBE as for offsets: producer state tells who writes and where
    # (KafkaApis.handleDescribeProducersRequest).
    return _topics(body.topics, topic_names, Operation.READ)


# The one virtual broker


def _nothing(body: Any, topic_names: TopicNames) -> tuple[ItemActions, ...]:
    return ()


def _find_coordinator(body: Any, topic_names: TopicNames) -> tuple[ItemActions, ...]:
    keys = body.coordinator_keys if hasattr(body, "coordinator_keys") else (body.key,)
    key_type = int(getattr(body, "key_type", 0))
    if key_type == 0:
        return tuple(_item(ResourceType.GROUP, key, Operation.DESCRIBE) for key in keys)
    if key_type == 1:
        return tuple(_item(ResourceType.TRANSACTIONAL_ID, key, Operation.DESCRIBE) for key in keys)
    # Share coordinators (type 2) serve brokers only (CLUSTER_ACTION in Kafka).
    return (_whole_request(Operation.CLUSTER_ACTION),)


# Consumer groups


def _read_group(body: Any, topic_names: TopicNames) -> tuple[ItemActions, ...]:
    return (_group(body, Operation.READ),)


def _consumer_group_heartbeat(body: Any, topic_names: TopicNames) -> tuple[ItemActions, ...]:
    # Since Kafka 4.0, KafkaApis.handleConsumerGroupHeartbeat also refuses a
    # subscription naming a topic the member may not DESCRIBE, with
    # TOPIC_AUTHORIZATION_FAILED for the whole heartbeat, so that subscribing cannot
    # probe for topics.
    topics = tuple(
        _item(ResourceType.TOPIC, name, Operation.DESCRIBE, Scope.REQUEST)
        for name in body.subscribed_topic_names or ()
    )
    # A regex subscription (KIP-848) is resolved by the upstream coordinator against
    # every topic the gateway's own account sees, which the gateway cannot narrow to
    # what the member may read. So a regex needs READ on every topic (a rule for the
    # literal name "*"): an identity with less is refused TOPIC_AUTHORIZATION_FAILED
    # and subscribes by topic names instead, which are checked one by one above.
    regex = getattr(body, "subscribed_topic_regex", None)
    if regex:
        topics += (_item(ResourceType.TOPIC, WILDCARD_TOPIC, Operation.READ, Scope.REQUEST),)
    return (_group(body, Operation.READ), *topics)


def _offset_commit(body: Any, topic_names: TopicNames) -> tuple[ItemActions, ...]:
    # Group first, then each topic: a denied group fails the whole request.
    return (_group(body, Operation.READ), *_topics(body.topics, topic_names, Operation.READ))


def _offset_fetch(body: Any, topic_names: TopicNames) -> tuple[ItemActions, ...]:
    groups = body.groups if hasattr(body, "groups") else (body,)
    # v8+ batches groups: a denied group fails that group only.
    scope = Scope.ITEM if hasattr(body, "groups") else Scope.REQUEST
    found: list[ItemActions] = []
    for group in groups:
        found.append(_item(ResourceType.GROUP, group.group_id, Operation.DESCRIBE, scope))
        # Null topics: all the group's offsets, filtered in the answer.
        found += _topics(group.topics, topic_names, Operation.DESCRIBE)
    return tuple(found)


def _offset_delete(body: Any, topic_names: TopicNames) -> tuple[ItemActions, ...]:
    # READ on the topic, not DELETE: Kafka guards the group with DELETE and the topic
    # as it does for a commit.
    return (_group(body, Operation.DELETE), *_topics(body.topics, topic_names, Operation.READ))


def _describe_groups(body: Any, topic_names: TopicNames) -> tuple[ItemActions, ...]:
    return tuple(_item(ResourceType.GROUP, g, Operation.DESCRIBE) for g in body.groups)


def _consumer_group_describe(body: Any, topic_names: TopicNames) -> tuple[ItemActions, ...]:
    # DESCRIBE in KafkaApis.handleConsumerGroupDescribe; the documentation's table
    # says READ.
    return tuple(_item(ResourceType.GROUP, g, Operation.DESCRIBE) for g in body.group_ids)


def _delete_groups(body: Any, topic_names: TopicNames) -> tuple[ItemActions, ...]:
    return tuple(_item(ResourceType.GROUP, g, Operation.DELETE) for g in body.groups_names)


# Idempotence and transactions


def _init_producer_id(body: Any, topic_names: TopicNames) -> tuple[ItemActions, ...]:
    if body.transactional_id is not None:
        return (_transactional_id(body.transactional_id),)
    # An idempotent producer: IDEMPOTENT_WRITE on the cluster, or WRITE on any topic
    # at all (KIP-679, Kafka 3.0+); the documentation's table lists only the former.
    return (
        ItemActions(
            ResourceType.CLUSTER,
            CLUSTER_NAME,
            Scope.REQUEST,
            (
                AnyOf(
                    (
                        _cluster(Operation.IDEMPOTENT_WRITE),
                        AnyResource(ResourceType.TOPIC, Operation.WRITE),
                    )
                ),
            ),
        ),
    )


def _add_partitions_to_txn(body: Any, topic_names: TopicNames) -> tuple[ItemActions, ...]:
    txn = _transactional_id(body.v3_and_below_transactional_id)
    return (txn, *_topics(body.v3_and_below_topics, topic_names, Operation.WRITE))


def _add_offsets_to_txn(body: Any, topic_names: TopicNames) -> tuple[ItemActions, ...]:
    return (_transactional_id(body.transactional_id), _group(body, Operation.READ))


def _end_txn(body: Any, topic_names: TopicNames) -> tuple[ItemActions, ...]:
    return (_transactional_id(body.transactional_id),)


def _txn_offset_commit(body: Any, topic_names: TopicNames) -> tuple[ItemActions, ...]:
    return (
        _transactional_id(body.transactional_id),
        _group(body, Operation.READ),
        *_topics(body.topics, topic_names, Operation.READ),
    )


def _describe_transactions(body: Any, topic_names: TopicNames) -> tuple[ItemActions, ...]:
    return tuple(
        _item(ResourceType.TRANSACTIONAL_ID, t, Operation.DESCRIBE) for t in body.transactional_ids
    )


# Admin


def _create_topics(body: Any, topic_names: TopicNames) -> tuple[ItemActions, ...]:
    # CREATE on the cluster covers every topic; without it, CREATE on each topic
    # (ControllerApis.createTopics). DESCRIBE_CONFIGS on the topic only decides
    # whether the answer carries the new topic's configs, so it refuses nothing.
    return tuple(
        ItemActions(
            ResourceType.TOPIC,
            topic.name,
            Scope.ITEM,
            (_cluster_or_topic(topic.name, Operation.CREATE),),
        )
        for topic in body.topics
    )


def _delete_topics(body: Any, topic_names: TopicNames) -> tuple[ItemActions, ...]:
    # DELETE on the cluster covers every topic (ControllerApis.handleDeleteTopics),
    # which the documentation's table does not mention. DESCRIBE only shapes the
    # answer for a topic given by id (whether its name is revealed).
    if not hasattr(body, "topics"):
        names: Iterable[Any] = body.topic_names  # v1-5 name topics only
        return tuple(_delete_topic(name) for name in names)
    found = []
    for topic in body.topics:
        name = _topic_name(topic, topic_names)
        found.append(_delete_topic(name) if name is not None else _unknown_id(topic.topic_id))
    return tuple(found)


def _delete_topic(name: str) -> ItemActions:
    return ItemActions(
        ResourceType.TOPIC, name, Scope.ITEM, (_cluster_or_topic(name, Operation.DELETE),)
    )


def _delete_records(body: Any, topic_names: TopicNames) -> tuple[ItemActions, ...]:
    return _topics(body.topics, topic_names, Operation.DELETE)


def _create_partitions(body: Any, topic_names: TopicNames) -> tuple[ItemActions, ...]:
    return _topics(body.topics, topic_names, Operation.ALTER)


def _elect_leaders(body: Any, topic_names: TopicNames) -> tuple[ItemActions, ...]:
    # ALTER on the cluster for the whole request (ControllerApis.handleElectLeaders);
    # the documentation's table says CLUSTER_ACTION.
    return (_whole_request(Operation.ALTER),)


# ConfigResource.Type ids: which resource a config resource is checked against.
_CONFIG_TOPIC, _CONFIG_GROUP = 2, 32
_CONFIG_ON_CLUSTER = frozenset({4, 8, 16})  # broker, broker logger, client metrics


def _configs(operation: Operation) -> Describer:
    def describe(body: Any, topic_names: TopicNames) -> tuple[ItemActions, ...]:
        found = []
        for resource in body.resources:
            kind, name = int(resource.resource_type), resource.resource_name
            if kind == _CONFIG_TOPIC:
                found.append(_item(ResourceType.TOPIC, name, operation))
            elif kind == _CONFIG_GROUP:
                found.append(_item(ResourceType.GROUP, name, operation))
            else:
                # Broker, broker logger and client metrics configs are the cluster's
                # (ConfigHelper.handleDescribeConfigsRequest, ControllerApis'
                # authorizeAlterResource). An unknown type is never granted: Kafka
                # answers INVALID_REQUEST.
                choices = (_cluster(operation),) if kind in _CONFIG_ON_CLUSTER else ()
                found.append(ItemActions(ResourceType.CLUSTER, name, Scope.ITEM, (AnyOf(choices),)))
        return tuple(found)

    return describe


def _describe_log_dirs(body: Any, topic_names: TopicNames) -> tuple[ItemActions, ...]:
    # Denied, Kafka answers no log dirs and CLUSTER_AUTHORIZATION_FAILED (v3+ carry
    # it; older versions only see the empty list, as the documentation's table says).
    return (_whole_request(Operation.DESCRIBE),)


TABLE: Mapping[int, Describer] = {
    # Connection set-up: part of authentication, never authorized (as in Kafka).
    api.API_VERSIONS: _nothing,
    api.SASL_HANDSHAKE: _nothing,
    api.SASL_AUTHENTICATE: _nothing,
    # The one virtual broker
    api.METADATA: _metadata,
    # Kafka checks nothing to answer DescribeCluster (KafkaApis.handleDescribeCluster;
    # DESCRIBE on the cluster only fills authorized operations), though the
    # documentation's table lists DESCRIBE on the cluster. Admin clients ask it first.
    api.DESCRIBE_CLUSTER: _nothing,
    api.FIND_COORDINATOR: _find_coordinator,
    # Data path
    api.PRODUCE: _produce,
    api.FETCH: _fetch,
    api.LIST_OFFSETS: _list_offsets,
    api.OFFSET_FOR_LEADER_EPOCH: _offset_for_leader_epoch,
    # Consumer groups
    api.JOIN_GROUP: _read_group,
    api.SYNC_GROUP: _read_group,
    api.HEARTBEAT: _read_group,
    api.LEAVE_GROUP: _read_group,
    api.OFFSET_COMMIT: _offset_commit,
    api.OFFSET_DELETE: _offset_delete,
    api.CONSUMER_GROUP_HEARTBEAT: _consumer_group_heartbeat,
    api.OFFSET_FETCH: _offset_fetch,
    api.DESCRIBE_GROUPS: _describe_groups,
    api.CONSUMER_GROUP_DESCRIBE: _consumer_group_describe,
    api.DELETE_GROUPS: _delete_groups,
    # Refuses nothing: the answer lists only the groups the identity may describe.
    api.LIST_GROUPS: _nothing,
    # Idempotence and transactions
    api.INIT_PRODUCER_ID: _init_producer_id,
    api.ADD_PARTITIONS_TO_TXN: _add_partitions_to_txn,
    api.ADD_OFFSETS_TO_TXN: _add_offsets_to_txn,
    api.END_TXN: _end_txn,
    api.TXN_OFFSET_COMMIT: _txn_offset_commit,
    api.DESCRIBE_TRANSACTIONS: _describe_transactions,
    # Refuses nothing: the answer lists only describable transactional ids.
    api.LIST_TRANSACTIONS: _nothing,
    api.DESCRIBE_PRODUCERS: _describe_producers,
    # Admin
    api.CREATE_TOPICS: _create_topics,
    api.DELETE_TOPICS: _delete_topics,
    api.CREATE_PARTITIONS: _create_partitions,
    api.ELECT_LEADERS: _elect_leaders,
    api.DESCRIBE_CONFIGS: _configs(Operation.DESCRIBE_CONFIGS),
    api.ALTER_CONFIGS: _configs(Operation.ALTER_CONFIGS),
    api.INCREMENTAL_ALTER_CONFIGS: _configs(Operation.ALTER_CONFIGS),
    api.DELETE_RECORDS: _delete_records,
    api.DESCRIBE_LOG_DIRS: _describe_log_dirs,
}
"""Per served API key, the function that lists a request's items and their checks."""


@dataclass(frozen=True, slots=True)
class ResponseFilter:
    """An answer that lists resources the request did not name: each listed resource is
    shown only when the identity may perform ``operation`` on it, unless ``shows_all``
    is granted. Kafka answers nothing for hidden ones, not an error."""

    resource_type: ResourceType
    operation: Operation
    shows_all: AnyOf = AnyOf(())


RESPONSE_FILTERS: Mapping[int, ResponseFilter] = {
    # Metadata for all topics (KafkaApis.handleTopicMetadataRequest).
    api.METADATA: ResponseFilter(ResourceType.TOPIC, Operation.DESCRIBE),
    # DESCRIBE on the cluster shows every group (KafkaApis.handleListGroupsRequest).
    api.LIST_GROUPS: ResponseFilter(
        ResourceType.GROUP, Operation.DESCRIBE, AnyOf((_cluster(Operation.DESCRIBE),))
    ),
    api.LIST_TRANSACTIONS: ResponseFilter(ResourceType.TRANSACTIONAL_ID, Operation.DESCRIBE),
    # A group's offsets for all topics (null topics).
    api.OFFSET_FETCH: ResponseFilter(ResourceType.TOPIC, Operation.DESCRIBE),
    # The partitions of a described transaction.
    api.DESCRIBE_TRANSACTIONS: ResponseFilter(ResourceType.TOPIC, Operation.DESCRIBE),
}
"""Per API, the resources its answer lists beyond those the request named."""


def required_actions(
    api_key: int, body: object, topic_names: TopicNames | None = None
) -> tuple[ItemActions, ...]:
    """The items of ``body`` (a kio request entity of ``api_key``) and Kafka's checks
    for each, in request order, whole-request items first.

    ``topic_names`` resolves topic ids for versions that address topics by id (Fetch
    v13+, Produce v13, OffsetCommit v10, Metadata v10+, DeleteTopics v6); an id it
    cannot resolve becomes an item no grant satisfies. :class:`UnsupportedApi` for an
    API key with no entry: the gateway must not serve what it cannot authorize.
    """
    describer = TABLE.get(api_key)
    if describer is None:
        raise UnsupportedApi(f"api_key={api_key} has no authorization entry")
    items = describer(body, topic_names or {})
    return tuple(sorted(items, key=lambda item: item.scope is not Scope.REQUEST))
