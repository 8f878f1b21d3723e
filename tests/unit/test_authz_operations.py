"""The resources and operations Kafka's authorizer checks, per served API.

One realistic request per API (several where Kafka's checks depend on the request),
each with the exact checks Kafka 4's KafkaApis / ControllerApis make; guards that no
served API, version or named resource escapes the table; and the table held against
Kafka's documented authorization matrix, with every place its code differs named.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import types
import typing
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import UnsupportedApi
from gateway.handlers import HANDLERS
from gateway.policy import CLUSTER_NAME, Action, Operation, ResourceType
from gateway.policy.operations import (
    RESPONSE_FILTERS,
    TABLE,
    AnyOf,
    AnyResource,
    ItemActions,
    ResponseFilter,
    Scope,
    required_actions,
)
from gateway.protocol import codec
from gateway.protocol import versions as api
from gateway.protocol.items import names
from gateway.protocol.items.model import BROKER, BROKER_LOGGER, CLIENT_METRICS
from tests.unit.kafka_strategies import request_bodies

T, G, X, C = (
    ResourceType.TOPIC,
    ResourceType.GROUP,
    ResourceType.TRANSACTIONAL_ID,
    ResourceType.CLUSTER,
)
ORDERS_ID = uuid.UUID("00000000-0000-0000-0000-00000000000a")
UNKNOWN_ID = uuid.UUID("00000000-0000-0000-0000-0000000000ff")
TOPIC_NAMES = {ORDERS_ID: "orders"}


# -- building requests -------------------------------------------------------------------

_ZEROS: tuple[tuple[type, Any], ...] = (
    (bool, False),
    (int, 0),
    (str, ""),
    (bytes, b""),
    (datetime.timedelta, datetime.timedelta(0)),
    (uuid.UUID, uuid.UUID(int=0)),
)


def _zero(annotation: Any) -> Any:
    if type(None) in typing.get_args(annotation):
        return None
    if typing.get_origin(annotation) is tuple:
        return ()
    for base, zero in _ZEROS:
        if isinstance(annotation, type) and issubclass(annotation, base):
            return zero
    raise TypeError(annotation)


def entity(cls: type[Any], **values: Any) -> Any:
    """``cls`` with those of ``values`` its version has, its other fields as a client
    leaves them empty."""
    hints = typing.get_type_hints(cls)
    values = {k: v for k, v in values.items() if k in hints}
    for f in dataclasses.fields(cls):
        if f.name not in values and f.default is dataclasses.MISSING:
            values[f.name] = _zero(hints[f.name])
    return cls(**values)


def request(api_key: int, version: int, **values: Any) -> Any:
    return entity(codec.request_schema(api_key, version), **values)


def part(api_key: int, version: int) -> types.SimpleNamespace:
    """The nested entities of one request version, each as a builder."""
    module = codec.entity_module(codec.request_schema(api_key, version))
    return types.SimpleNamespace(
        **{
            name: functools.partial(entity, cls)
            for name, cls in vars(module).items()
            if isinstance(cls, type) and dataclasses.is_dataclass(cls)
        }
    )


# -- expected checks ---------------------------------------------------------------------


def item(rtype: ResourceType, name: str, op: Operation, scope: Scope = Scope.ITEM) -> ItemActions:
    return ItemActions(rtype, name, scope, (AnyOf((Action(rtype, name, op),)),))


def cluster(op: Operation) -> Action:
    return Action(C, CLUSTER_NAME, op)


def whole(op: Operation) -> ItemActions:
    return ItemActions(C, CLUSTER_NAME, Scope.REQUEST, (AnyOf((cluster(op),)),))


def or_cluster(name: str, op: Operation) -> ItemActions:
    return ItemActions(T, name, Scope.ITEM, (AnyOf((cluster(op), Action(T, name, op))),))


def never(rtype: ResourceType, name: str) -> ItemActions:
    return ItemActions(rtype, name, Scope.ITEM, (AnyOf(()),))


R, W, D = Operation.READ, Operation.WRITE, Operation.DESCRIBE


def _produce(version: int, transactional_id: str | None, *topics: Any) -> Any:
    p = part(api.PRODUCE, version)
    data = tuple(
        p.TopicProduceData(**t, partition_data=(p.PartitionProduceData(index=0, records=None),))
        for t in topics
    )
    return request(
        api.PRODUCE,
        version,
        transactional_id=transactional_id,
        acks=-1,
        timeout=datetime.timedelta(seconds=30),
        topic_data=data,
    )


def _fetch(version: int, replica_id: int, *topics: Any) -> Any:
    p = part(api.FETCH, version)
    data = tuple(p.FetchTopic(**t, partitions=(p.FetchPartition(partition=0),)) for t in topics)
    if version >= 15:
        state = p.ReplicaState(replica_id=replica_id, replica_epoch=-1)
        return request(api.FETCH, version, replica_state=state, topics=data)
    return request(api.FETCH, version, replica_id=replica_id, topics=data)


def _metadata(version: int, topics: tuple[Any, ...] | None, auto: bool = True) -> Any:
    p = part(api.METADATA, version)
    listed = None if topics is None else tuple(p.MetadataRequestTopic(**t) for t in topics)
    return request(api.METADATA, version, topics=listed, allow_auto_topic_creation=auto)


def _create_if_missing(name: str) -> ItemActions:
    create = AnyOf((cluster(Operation.CREATE), Action(T, name, Operation.CREATE)))
    return dataclasses.replace(item(T, name, D), to_create=(create,))


def _offset_commit(version: int, group: str, *topics: Any) -> Any:
    p = part(api.OFFSET_COMMIT, version)
    data = tuple(
        p.OffsetCommitRequestTopic(
            **t,
            partitions=(p.OffsetCommitRequestPartition(partition_index=0, committed_offset=42),),
        )
        for t in topics
    )
    return request(api.OFFSET_COMMIT, version, group_id=group, topics=data)


def _offset_fetch_v8(groups: dict[str, tuple[str, ...] | None]) -> Any:
    p = part(api.OFFSET_FETCH, 8)
    return request(
        api.OFFSET_FETCH,
        8,
        groups=tuple(
            p.OffsetFetchRequestGroup(
                group_id=g,
                topics=None
                if ts is None
                else tuple(p.OffsetFetchRequestTopics(name=t, partition_indexes=(0,)) for t in ts),
            )
            for g, ts in groups.items()
        ),
    )


def _txn_offset_commit() -> Any:
    p = part(api.TXN_OFFSET_COMMIT, 3)
    topic = p.TxnOffsetCommitRequestTopic(
        name="orders",
        partitions=(p.TxnOffsetCommitRequestPartition(partition_index=0, committed_offset=7),),
    )
    return request(
        api.TXN_OFFSET_COMMIT, 3, transactional_id="tx-1", group_id="billing", topics=(topic,)
    )


def _configs(api_key: int, version: int, *resources: tuple[int, str]) -> Any:
    p = part(api_key, version)
    make = p.DescribeConfigsResource if api_key == api.DESCRIBE_CONFIGS else p.AlterConfigsResource
    return request(
        api_key,
        version,
        resources=tuple(make(resource_type=t, resource_name=n) for t, n in resources),
    )


def _topics_named(api_key: int, version: int, entity_name: str, *names_: str, **extra: Any) -> Any:
    make = getattr(part(api_key, version), entity_name)
    return request(api_key, version, topics=tuple(make(name=n, **extra) for n in names_))


CASES: list[tuple[str, int, Any, tuple[ItemActions, ...]]] = [
    # -- connection set-up and the virtual broker
    ("api_versions_is_never_authorized", api.API_VERSIONS, request(api.API_VERSIONS, 3), ()),
    (
        "sasl_handshake_is_never_authorized",
        api.SASL_HANDSHAKE,
        request(api.SASL_HANDSHAKE, 1, mechanism="PLAIN"),
        (),
    ),
    (
        "sasl_authenticate_is_never_authorized",
        api.SASL_AUTHENTICATE,
        request(api.SASL_AUTHENTICATE, 2, auth_bytes=b"\0u\0p"),
        (),
    ),
    (
        "metadata_describes_named_topics_and_creates_missing_ones",
        api.METADATA,
        _metadata(12, ({"name": "orders", "topic_id": uuid.UUID(int=0)},)),
        (_create_if_missing("orders"),),
    ),
    (
        "metadata_without_auto_creation_only_describes",
        api.METADATA,
        _metadata(12, ({"name": "orders", "topic_id": uuid.UUID(int=0)},), auto=False),
        (item(T, "orders", D),),
    ),
    (
        "metadata_v0_always_allows_auto_creation",
        api.METADATA,
        _metadata(0, ({"name": "orders"},)),
        (_create_if_missing("orders"),),
    ),
    (
        "metadata_for_all_topics_refuses_nothing",
        api.METADATA,
        _metadata(12, None),
        (),
    ),
    (
        "metadata_by_unknown_topic_id_is_never_granted",
        api.METADATA,
        _metadata(12, ({"name": None, "topic_id": UNKNOWN_ID},)),
        (never(T, str(UNKNOWN_ID)),),
    ),
    (
        "describe_cluster_checks_nothing_as_kafka_does",
        api.DESCRIBE_CLUSTER,
        request(api.DESCRIBE_CLUSTER, 1, include_cluster_authorized_operations=True),
        (),
    ),
    (
        "find_coordinator_describes_the_group",
        api.FIND_COORDINATOR,
        request(api.FIND_COORDINATOR, 3, key="billing", key_type=0),
        (item(G, "billing", D),),
    ),
    (
        "find_coordinator_v4_describes_each_transactional_id",
        api.FIND_COORDINATOR,
        request(api.FIND_COORDINATOR, 4, key_type=1, coordinator_keys=("tx-1", "tx-2")),
        (item(X, "tx-1", D), item(X, "tx-2", D)),
    ),
    (
        "find_share_coordinator_is_for_brokers_only",
        api.FIND_COORDINATOR,
        request(api.FIND_COORDINATOR, 6, key_type=2, coordinator_keys=("g:t:0",)),
        (whole(Operation.CLUSTER_ACTION),),
    ),
    # -- data path
    (
        "produce_writes_each_topic",
        api.PRODUCE,
        _produce(9, None, {"name": "orders"}, {"name": "payments"}),
        (item(T, "orders", W), item(T, "payments", W)),
    ),
    (
        "transactional_produce_writes_the_transactional_id_first_for_the_whole_request",
        api.PRODUCE,
        _produce(11, "tx-1", {"name": "orders"}),
        (item(X, "tx-1", W, Scope.REQUEST), item(T, "orders", W)),
    ),
    (
        "produce_v13_names_topics_by_id",
        api.PRODUCE,
        _produce(13, None, {"topic_id": ORDERS_ID}, {"topic_id": UNKNOWN_ID}),
        (item(T, "orders", W), never(T, str(UNKNOWN_ID))),
    ),
    (
        "fetch_reads_each_topic",
        api.FETCH,
        _fetch(11, -1, {"topic": "orders"}, {"topic": "payments"}),
        (item(T, "orders", R), item(T, "payments", R)),
    ),
    (
        "fetch_v13_names_topics_by_id",
        api.FETCH,
        _fetch(16, -1, {"topic_id": ORDERS_ID}, {"topic_id": UNKNOWN_ID}),
        (item(T, "orders", R), never(T, str(UNKNOWN_ID))),
    ),
    (
        "follower_fetch_needs_cluster_action",
        api.FETCH,
        _fetch(11, 1, {"topic": "orders"}),
        (whole(Operation.CLUSTER_ACTION),),
    ),
    (
        "follower_fetch_v15_needs_cluster_action",
        api.FETCH,
        _fetch(15, 2, {"topic_id": ORDERS_ID}),
        (whole(Operation.CLUSTER_ACTION),),
    ),
    (
        "list_offsets_describes_each_topic",
        api.LIST_OFFSETS,
        _topics_named(api.LIST_OFFSETS, 7, "ListOffsetsTopic", "orders", "payments"),
        (item(T, "orders", D), item(T, "payments", D)),
    ),
    (
        "offset_for_leader_epoch_takes_cluster_action_or_topic_describe",
        api.OFFSET_FOR_LEADER_EPOCH,
        request(
            api.OFFSET_FOR_LEADER_EPOCH,
            4,
            replica_id=-1,
            topics=(part(api.OFFSET_FOR_LEADER_EPOCH, 4).OffsetForLeaderTopic(topic="orders"),),
        ),
        (
            ItemActions(
                T,
                "orders",
                Scope.ITEM,
                (AnyOf((cluster(Operation.CLUSTER_ACTION), Action(T, "orders", D))),),
            ),
        ),
    ),
    # -- consumer groups
    (
        "join_group_reads_the_group",
        api.JOIN_GROUP,
        request(api.JOIN_GROUP, 9, group_id="billing", protocol_type="consumer"),
        (item(G, "billing", R, Scope.REQUEST),),
    ),
    (
        "sync_group_reads_the_group",
        api.SYNC_GROUP,
        request(api.SYNC_GROUP, 5, group_id="billing"),
        (item(G, "billing", R, Scope.REQUEST),),
    ),
    (
        "heartbeat_reads_the_group",
        api.HEARTBEAT,
        request(api.HEARTBEAT, 4, group_id="billing", member_id="m-1"),
        (item(G, "billing", R, Scope.REQUEST),),
    ),
    (
        "leave_group_reads_the_group",
        api.LEAVE_GROUP,
        request(api.LEAVE_GROUP, 5, group_id="billing"),
        (item(G, "billing", R, Scope.REQUEST),),
    ),
    (
        "offset_commit_reads_the_group_then_each_topic",
        api.OFFSET_COMMIT,
        _offset_commit(8, "billing", {"name": "orders"}, {"name": "payments"}),
        (item(G, "billing", R, Scope.REQUEST), item(T, "orders", R), item(T, "payments", R)),
    ),
    (
        "offset_commit_v10_names_topics_by_id",
        api.OFFSET_COMMIT,
        _offset_commit(10, "billing", {"topic_id": ORDERS_ID}),
        (item(G, "billing", R, Scope.REQUEST), item(T, "orders", R)),
    ),
    (
        "offset_delete_deletes_on_the_group_and_reads_each_topic",
        api.OFFSET_DELETE,
        _topics_named(api.OFFSET_DELETE, 0, "OffsetDeleteRequestTopic", "orders"),
        (item(G, "", Operation.DELETE, Scope.REQUEST), item(T, "orders", R)),
    ),
    (
        "consumer_group_heartbeat_reads_the_group_and_describes_subscribed_topics",
        api.CONSUMER_GROUP_HEARTBEAT,
        request(
            api.CONSUMER_GROUP_HEARTBEAT,
            0,
            group_id="billing",
            member_id="m-1",
            subscribed_topic_names=("orders",),
        ),
        (item(G, "billing", R, Scope.REQUEST), item(T, "orders", D, Scope.REQUEST)),
    ),
    (
        "offset_fetch_describes_the_group_then_each_topic",
        api.OFFSET_FETCH,
        request(
            api.OFFSET_FETCH,
            7,
            group_id="billing",
            topics=(
                part(api.OFFSET_FETCH, 7).OffsetFetchRequestTopic(
                    name="orders", partition_indexes=(0,)
                ),
            ),
        ),
        (item(G, "billing", D, Scope.REQUEST), item(T, "orders", D)),
    ),
    (
        "offset_fetch_v8_describes_each_group_on_its_own",
        api.OFFSET_FETCH,
        _offset_fetch_v8({"billing": ("orders",), "audit": None}),
        (item(G, "billing", D), item(T, "orders", D), item(G, "audit", D)),
    ),
    (
        "describe_groups_describes_each_group",
        api.DESCRIBE_GROUPS,
        request(api.DESCRIBE_GROUPS, 5, groups=("billing", "audit")),
        (item(G, "billing", D), item(G, "audit", D)),
    ),
    (
        "consumer_group_describe_describes_each_group",
        api.CONSUMER_GROUP_DESCRIBE,
        request(api.CONSUMER_GROUP_DESCRIBE, 0, group_ids=("billing",)),
        (item(G, "billing", D),),
    ),
    (
        "delete_groups_deletes_each_group",
        api.DELETE_GROUPS,
        request(api.DELETE_GROUPS, 2, groups_names=("billing", "audit")),
        (item(G, "billing", Operation.DELETE), item(G, "audit", Operation.DELETE)),
    ),
    (
        "list_groups_refuses_nothing_and_filters_its_answer",
        api.LIST_GROUPS,
        request(api.LIST_GROUPS, 4, states_filter=("Stable",)),
        (),
    ),
    # -- idempotence and transactions
    (
        "init_producer_id_writes_the_transactional_id",
        api.INIT_PRODUCER_ID,
        request(api.INIT_PRODUCER_ID, 4, transactional_id="tx-1", producer_id=-1),
        (item(X, "tx-1", W, Scope.REQUEST),),
    ),
    (
        "idempotent_init_producer_id_takes_idempotent_write_or_write_on_any_topic",
        api.INIT_PRODUCER_ID,
        request(api.INIT_PRODUCER_ID, 4, transactional_id=None, producer_id=-1),
        (
            ItemActions(
                C,
                CLUSTER_NAME,
                Scope.REQUEST,
                (AnyOf((cluster(Operation.IDEMPOTENT_WRITE), AnyResource(T, W))),),
            ),
        ),
    ),
    (
        "add_partitions_to_txn_writes_the_transactional_id_and_each_topic",
        api.ADD_PARTITIONS_TO_TXN,
        request(
            api.ADD_PARTITIONS_TO_TXN,
            3,
            v3_and_below_transactional_id="tx-1",
            v3_and_below_topics=(
                part(api.ADD_PARTITIONS_TO_TXN, 3).AddPartitionsToTxnTopic(
                    name="orders", partitions=(0, 1)
                ),
            ),
        ),
        (item(X, "tx-1", W, Scope.REQUEST), item(T, "orders", W)),
    ),
    (
        "add_offsets_to_txn_writes_the_transactional_id_and_reads_the_group",
        api.ADD_OFFSETS_TO_TXN,
        request(api.ADD_OFFSETS_TO_TXN, 3, transactional_id="tx-1", group_id="billing"),
        (item(X, "tx-1", W, Scope.REQUEST), item(G, "billing", R, Scope.REQUEST)),
    ),
    (
        "end_txn_writes_the_transactional_id",
        api.END_TXN,
        request(api.END_TXN, 4, transactional_id="tx-1", committed=True),
        (item(X, "tx-1", W, Scope.REQUEST),),
    ),
    (
        "txn_offset_commit_writes_the_transactional_id_reads_the_group_and_each_topic",
        api.TXN_OFFSET_COMMIT,
        _txn_offset_commit(),
        (
            item(X, "tx-1", W, Scope.REQUEST),
            item(G, "billing", R, Scope.REQUEST),
            item(T, "orders", R),
        ),
    ),
    (
        "describe_transactions_describes_each_transactional_id",
        api.DESCRIBE_TRANSACTIONS,
        request(api.DESCRIBE_TRANSACTIONS, 0, transactional_ids=("tx-1",)),
        (item(X, "tx-1", D),),
    ),
    (
        "list_transactions_refuses_nothing_and_filters_its_answer",
        api.LIST_TRANSACTIONS,
        request(api.LIST_TRANSACTIONS, 1, duration_filter=-1),
        (),
    ),
    (
        "describe_producers_reads_each_topic",
        api.DESCRIBE_PRODUCERS,
        _topics_named(api.DESCRIBE_PRODUCERS, 0, "TopicRequest", "orders", partition_indexes=(0,)),
        (item(T, "orders", R),),
    ),
    # -- admin
    (
        "create_topics_takes_create_on_the_cluster_or_the_topic",
        api.CREATE_TOPICS,
        _topics_named(
            api.CREATE_TOPICS,
            7,
            "CreatableTopic",
            "orders",
            "payments",
            num_partitions=3,
            replication_factor=1,
        ),
        (or_cluster("orders", Operation.CREATE), or_cluster("payments", Operation.CREATE)),
    ),
    (
        "delete_topics_takes_delete_on_the_cluster_or_the_topic",
        api.DELETE_TOPICS,
        request(api.DELETE_TOPICS, 5, topic_names=("orders",)),
        (or_cluster("orders", Operation.DELETE),),
    ),
    (
        "delete_topics_v6_names_topics_by_name_or_id",
        api.DELETE_TOPICS,
        request(
            api.DELETE_TOPICS,
            6,
            topics=(
                part(api.DELETE_TOPICS, 6).DeleteTopicState(
                    name="payments", topic_id=uuid.UUID(int=0)
                ),
                part(api.DELETE_TOPICS, 6).DeleteTopicState(name=None, topic_id=ORDERS_ID),
                part(api.DELETE_TOPICS, 6).DeleteTopicState(name=None, topic_id=UNKNOWN_ID),
            ),
        ),
        (
            or_cluster("payments", Operation.DELETE),
            or_cluster("orders", Operation.DELETE),
            never(T, str(UNKNOWN_ID)),
        ),
    ),
    (
        "delete_records_deletes_on_each_topic",
        api.DELETE_RECORDS,
        _topics_named(api.DELETE_RECORDS, 2, "DeleteRecordsTopic", "orders"),
        (item(T, "orders", Operation.DELETE),),
    ),
    (
        "create_partitions_alters_each_topic",
        api.CREATE_PARTITIONS,
        _topics_named(api.CREATE_PARTITIONS, 3, "CreatePartitionsTopic", "orders", count=6),
        (item(T, "orders", Operation.ALTER),),
    ),
    (
        "elect_leaders_alters_the_cluster",
        api.ELECT_LEADERS,
        request(api.ELECT_LEADERS, 2, topic_partitions=None),
        (whole(Operation.ALTER),),
    ),
    (
        "describe_configs_checks_topics_groups_and_brokers_on_their_resource",
        api.DESCRIBE_CONFIGS,
        _configs(api.DESCRIBE_CONFIGS, 4, (2, "orders"), (4, "0"), (8, "0"), (32, "billing")),
        (
            item(T, "orders", Operation.DESCRIBE_CONFIGS),
            ItemActions(C, "0", Scope.ITEM, (AnyOf((cluster(Operation.DESCRIBE_CONFIGS),)),)),
            ItemActions(C, "0", Scope.ITEM, (AnyOf((cluster(Operation.DESCRIBE_CONFIGS),)),)),
            item(G, "billing", Operation.DESCRIBE_CONFIGS),
        ),
    ),
    (
        "describe_configs_of_an_unknown_resource_type_is_never_granted",
        api.DESCRIBE_CONFIGS,
        _configs(api.DESCRIBE_CONFIGS, 4, (99, "x")),
        (never(C, "x"),),
    ),
    (
        "alter_configs_alters_configs_of_each_resource",
        api.ALTER_CONFIGS,
        _configs(api.ALTER_CONFIGS, 2, (2, "orders"), (4, ""), (32, "billing")),
        (
            item(T, "orders", Operation.ALTER_CONFIGS),
            ItemActions(C, "", Scope.ITEM, (AnyOf((cluster(Operation.ALTER_CONFIGS),)),)),
            item(G, "billing", Operation.ALTER_CONFIGS),
        ),
    ),
    (
        "incremental_alter_configs_alters_configs_of_each_resource",
        api.INCREMENTAL_ALTER_CONFIGS,
        _configs(api.INCREMENTAL_ALTER_CONFIGS, 1, (2, "orders"), (16, "metrics"), (32, "billing")),
        (
            item(T, "orders", Operation.ALTER_CONFIGS),
            ItemActions(C, "metrics", Scope.ITEM, (AnyOf((cluster(Operation.ALTER_CONFIGS),)),)),
            item(G, "billing", Operation.ALTER_CONFIGS),
        ),
    ),
    (
        "describe_log_dirs_describes_the_cluster",
        api.DESCRIBE_LOG_DIRS,
        request(api.DESCRIBE_LOG_DIRS, 4, topics=None),
        (whole(Operation.DESCRIBE),),
    ),
]


@pytest.mark.parametrize(
    ("api_key", "body", "expected"),
    [pytest.param(key, body, expected, id=name) for name, key, body, expected in CASES],
)
def test_required_actions_are_kafkas(api_key: int, body: Any, expected: tuple[Any, ...]) -> None:
    assert required_actions(api_key, body, TOPIC_NAMES) == expected


def test_every_served_api_has_a_table_entry_and_a_case() -> None:
    assert set(HANDLERS) == set(TABLE)
    assert {key for _, key, _, _ in CASES} == set(HANDLERS)


def test_answers_listing_unnamed_resources_show_only_describable_ones() -> None:
    expected = {
        api.METADATA: ResponseFilter(T, D),
        api.LIST_GROUPS: ResponseFilter(G, D, AnyOf((cluster(D),))),
        api.LIST_TRANSACTIONS: ResponseFilter(X, D),
        api.OFFSET_FETCH: ResponseFilter(T, D),
        api.DESCRIBE_TRANSACTIONS: ResponseFilter(T, D),
    }
    assert dict(RESPONSE_FILTERS) == expected
    assert ResponseFilter(T, D).shows_all == AnyOf(())  # nothing shows all topics


def test_an_api_without_an_entry_is_refused() -> None:
    with pytest.raises(UnsupportedApi):
        required_actions(27, object())  # WriteTxnMarkers: brokers only, never served


def test_whole_request_items_come_first() -> None:
    body = _produce(11, "tx-1", {"name": "orders"})
    found = required_actions(api.PRODUCE, body)
    assert [i.scope for i in found] == [Scope.REQUEST, Scope.ITEM]


SERVED_VERSIONS = [
    (key, version)
    for key, versions in sorted(api.IMPLEMENTED.items())
    if key in HANDLERS
    for version in range(versions.min, versions.max + 1)
]
# Resources a request names that Kafka does not authorize: topics a Fetch forgets
# (forgetting reads nothing) and a ConsumerGroupHeartbeat's owned partitions (its
# assignment, already granted). Broker config resources are checked on the cluster.
_UNCHECKED = {
    (api.FETCH, "forgotten_topics_data"),
    (api.CONSUMER_GROUP_HEARTBEAT, "topic_partitions"),
}
_CLUSTER_KINDS = {BROKER, BROKER_LOGGER, CLIENT_METRICS}


def _without_unchecked(api_key: int, body: Any) -> Any:
    fields = {f.name for f in dataclasses.fields(body)}
    cleared = {name: () for key, name in _UNCHECKED if key == api_key and name in fields}
    return codec.replace(body, **cleared) if cleared else body


def _covers_everything(found: tuple[ItemActions, ...]) -> bool:
    """A whole-request check on the cluster covers every item (a follower's Fetch,
    ElectLeaders, DescribeLogDirs: Kafka checks only the cluster)."""
    return any(i.scope is Scope.REQUEST and i.resource_type is C for i in found)


@pytest.mark.parametrize(("api_key", "version"), SERVED_VERSIONS)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_resource_a_request_names_is_checked(api_key: int, version: int, data: Any) -> None:
    body = data.draw(_bodies(api_key, version))
    body = _without_unchecked(api_key, body)
    found = required_actions(api_key, body)
    if _covers_everything(found) or not _described(api_key):
        return
    checked = {(i.resource_type.value, i.name) for i in found}
    for resource in names(body):
        if resource.kind in _CLUSTER_KINDS:
            assert (C.value, str(resource.name)) in checked, resource
        elif resource.kind in {T.value, G.value, X.value}:
            assert (resource.kind, str(resource.name)) in checked, resource


def _bodies(api_key: int, version: int) -> st.SearchStrategy[Any]:
    if api_key != api.PRODUCE or version < 13:
        return request_bodies(api_key, version)
    # Produce v13 names topics by id; the shared strategy names them by name.
    return st.lists(st.uuids(), max_size=3).map(
        lambda ids: _produce(version, None, *({"topic_id": i} for i in ids))
    )


def _described(api_key: int) -> bool:
    return api_key not in {api.API_VERSIONS, api.SASL_HANDSHAKE, api.SASL_AUTHENTICATE}


# -- Kafka's documented matrix -----------------------------------------------------------

A, CA = Operation.ALTER, Operation.CLUSTER_ACTION
DC, AC = Operation.DESCRIBE_CONFIGS, Operation.ALTER_CONFIGS
CR, DL, IW = Operation.CREATE, Operation.DELETE, Operation.IDEMPOTENT_WRITE
Pair = tuple[ResourceType, Operation]

# docs/security.html, "Operations and Resources on Protocols", for every served API.
DOCUMENTED: dict[int, set[Pair]] = {
    api.PRODUCE: {(X, W), (C, IW), (T, W)},
    api.FETCH: {(C, CA), (T, R)},
    api.LIST_OFFSETS: {(T, D)},
    api.METADATA: {(T, D), (C, CR), (T, CR)},
    api.OFFSET_COMMIT: {(G, R), (T, R)},
    api.OFFSET_FETCH: {(G, D), (T, D)},
    api.FIND_COORDINATOR: {(G, D), (X, D)},
    api.JOIN_GROUP: {(G, R)},
    api.HEARTBEAT: {(G, R)},
    api.LEAVE_GROUP: {(G, R)},
    api.SYNC_GROUP: {(G, R)},
    api.DESCRIBE_GROUPS: {(G, D)},
    api.LIST_GROUPS: {(C, D), (G, D)},
    api.SASL_HANDSHAKE: set(),
    api.API_VERSIONS: set(),
    api.CREATE_TOPICS: {(C, CR), (T, CR)},
    api.DELETE_TOPICS: {(T, DL)},
    api.DELETE_RECORDS: {(T, DL)},
    api.INIT_PRODUCER_ID: {(X, W), (C, IW)},
    api.OFFSET_FOR_LEADER_EPOCH: {(C, CA), (T, D)},
    api.ADD_PARTITIONS_TO_TXN: {(X, W), (T, W)},
    api.ADD_OFFSETS_TO_TXN: {(X, W), (G, R)},
    api.END_TXN: {(X, W)},
    api.TXN_OFFSET_COMMIT: {(X, W), (G, R), (T, R)},
    api.DESCRIBE_CONFIGS: {(C, DC), (T, DC)},
    api.ALTER_CONFIGS: {(C, AC), (T, AC)},
    api.DESCRIBE_LOG_DIRS: {(C, D)},
    api.SASL_AUTHENTICATE: set(),
    api.CREATE_PARTITIONS: {(T, A)},
    api.DELETE_GROUPS: {(G, DL)},
    api.ELECT_LEADERS: {(C, CA)},
    api.INCREMENTAL_ALTER_CONFIGS: {(C, AC), (T, AC)},
    api.OFFSET_DELETE: {(G, DL), (T, R)},
    api.DESCRIBE_CLUSTER: {(C, D)},
    api.DESCRIBE_PRODUCERS: {(T, R)},
    api.DESCRIBE_TRANSACTIONS: {(X, D)},
    api.LIST_TRANSACTIONS: {(X, D)},
    api.CONSUMER_GROUP_HEARTBEAT: {(G, R)},
    api.CONSUMER_GROUP_DESCRIBE: {(G, R)},
}

# Where Kafka's code checks otherwise than its table says: (documented pairs it does not
# check, pairs it checks that the table leaves out). The code is what clients meet.
CODE_DIFFERS: dict[int, tuple[set[Pair], set[Pair]]] = {
    # KIP-679 (Kafka 3.0): idempotent Produce needs only WRITE on the topic, and
    # InitProducerId accepts WRITE on any topic in place of IDEMPOTENT_WRITE.
    api.PRODUCE: ({(C, IW)}, set()),
    api.INIT_PRODUCER_ID: (set(), {(T, W)}),
    # DELETE on the cluster covers every topic (ControllerApis.handleDeleteTopics).
    api.DELETE_TOPICS: (set(), {(C, DL)}),
    # Group configs (KIP-848) are checked on the group.
    api.DESCRIBE_CONFIGS: (set(), {(G, DC)}),
    api.ALTER_CONFIGS: (set(), {(G, AC)}),
    api.INCREMENTAL_ALTER_CONFIGS: (set(), {(G, AC)}),
    # Share coordinators are for brokers (CLUSTER_ACTION).
    api.FIND_COORDINATOR: (set(), {(C, CA)}),
    # ControllerApis.handleElectLeaders checks ALTER.
    api.ELECT_LEADERS: ({(C, CA)}, {(C, A)}),
    # KafkaApis.handleDescribeCluster checks nothing to answer.
    api.DESCRIBE_CLUSTER: ({(C, D)}, set()),
    # A described transaction shows only partitions of describable topics.
    api.DESCRIBE_TRANSACTIONS: (set(), {(T, D)}),
    # Kafka 4.0: subscribed topics must be describable.
    api.CONSUMER_GROUP_HEARTBEAT: (set(), {(T, D)}),
    # KafkaApis.handleConsumerGroupDescribe checks DESCRIBE, like DescribeGroups.
    api.CONSUMER_GROUP_DESCRIBE: ({(G, R)}, {(G, D)}),
}


def _pairs(choice: Action | AnyResource) -> Pair:
    return (choice.resource_type, choice.operation)


def _checked_pairs(api_key: int) -> set[Pair]:
    """Every (resource type, operation) the table's cases and answer filters use."""
    found: set[Pair] = set()
    for _, key, body, _ in CASES:
        if key == api_key:
            for found_item in required_actions(key, body, TOPIC_NAMES):
                for check in found_item.checks + found_item.to_create:
                    found |= {_pairs(c) for c in check.choices}
    shown = RESPONSE_FILTERS.get(api_key)
    if shown is not None:
        found |= {(shown.resource_type, shown.operation)}
        found |= {_pairs(c) for c in shown.shows_all.choices}
    return found


@pytest.mark.parametrize("api_key", sorted(HANDLERS))
def test_checks_match_kafkas_documented_matrix_where_its_code_agrees(api_key: int) -> None:
    not_checked, undocumented = CODE_DIFFERS.get(api_key, (set(), set()))
    assert _checked_pairs(api_key) == (DOCUMENTED[api_key] - not_checked) | undocumented


def test_a_regex_subscription_needs_read_on_every_topic() -> None:
    from kio.schema.consumer_group_heartbeat.v1 import request as heartbeat_request

    body = heartbeat_request.ConsumerGroupHeartbeatRequest(
        group_id="g",
        member_id="m",
        member_epoch=0,
        instance_id=None,
        rack_id=None,
        rebalance_timeout=datetime.timedelta(seconds=30),
        subscribed_topic_names=None,
        subscribed_topic_regex="orders-.*",
        server_assignor=None,
        topic_partitions=None,
    )
    (group, regex) = required_actions(body.__api_key__, body)
    assert group.resource_type is ResourceType.GROUP
    assert (regex.resource_type, regex.name, regex.scope) == (
        ResourceType.TOPIC,
        "*",
        Scope.REQUEST,
    )
    assert regex.checks == (AnyOf((Action(ResourceType.TOPIC, "*", Operation.READ),)),)
