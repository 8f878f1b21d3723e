"""Per-API item descriptions: the error answer for every served API and version, the
resources a request names, and the code answered when the upstream is unavailable."""

from __future__ import annotations

import dataclasses
import datetime
import struct
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio.index import load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode

from gateway.errors import UnsupportedApi
from gateway.handlers import HANDLERS
from gateway.protocol import codec
from gateway.protocol import versions as api
from gateway.protocol.items import Resource, describe, error_response, names, unavailable_error
from tests.unit.kafka_strategies import partition_indexes, record_batches, topic_names

# Answered by the gateway alone, before or instead of any upstream.
NOT_DESCRIBED = {api.API_VERSIONS, api.SASL_HANDSHAKE, api.SASL_AUTHENTICATE}
SERVED = sorted(set(HANDLERS) - NOT_DESCRIBED)


def advertisable(api_key: int) -> range:
    known = api.kio_range(api_key)
    assert known is not None
    served = api.IMPLEMENTED[api_key].intersect(known)
    assert served is not None
    return range(served.min, served.max + 1)


EVERY_VERSION = [(key, version) for key in SERVED for version in advertisable(key)]

GENERATED = settings(
    max_examples=6,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
errors = st.sampled_from(
    [
        ErrorCode.coordinator_not_available,
        ErrorCode.not_leader_or_follower,
        ErrorCode.topic_authorization_failed,
        ErrorCode.policy_violation,
    ]
)
messages = st.none() | st.text(max_size=30)


@st.composite
def produce_requests(draw: st.DrawFn, version: int) -> Any:
    """Produce requests of any version, topics by name or (v13+) by id."""
    cls = load_request_schema(api.PRODUCE, version)
    module = codec.entity_module(cls)
    by_id = version >= 13
    keys = st.uuids() if by_id else topic_names
    topics = tuple(
        codec.build(
            module.TopicProduceData,
            name=None if by_id else key,
            topic_id=key if by_id else None,
            partition_data=tuple(
                module.PartitionProduceData(index=index, records=draw(record_batches))
                for index in draw(st.lists(partition_indexes, max_size=3, unique=True))
            ),
        )
        for key in draw(st.lists(keys, max_size=3, unique=True))
    )
    return codec.build(
        cls,
        transactional_id=draw(st.none() | topic_names),
        acks=draw(st.sampled_from([-1, 1])),
        timeout=datetime.timedelta(milliseconds=draw(st.integers(0, 2**31 - 1))),
        topic_data=topics,
    )


def requests(api_key: int, version: int) -> st.SearchStrategy[Any]:
    if api_key == api.PRODUCE:
        return produce_requests(version)
    return st.from_type(load_request_schema(api_key, version))


# What the test knows about requests, independently of the descriptions: which request
# lists are not answered item by item in a broker's error answer (getErrorResponse),
# and which lists of plain values are items.
NOT_ANSWERED: dict[int, set[str]] = {
    api.JOIN_GROUP: {"protocols"},
    api.SYNC_GROUP: {"assignments"},
    api.CREATE_TOPICS: {"assignments", "configs"},
    api.CREATE_PARTITIONS: {"assignments"},
    api.ALTER_CONFIGS: {"configs"},
    api.INCREMENTAL_ALTER_CONFIGS: {"configs"},
    api.DESCRIBE_CONFIGS: {"configuration_keys"},
    api.FETCH: {"forgotten_topics_data"},
    api.CONSUMER_GROUP_HEARTBEAT: {"topic_partitions", "subscribed_topic_names"},
    api.DESCRIBE_LOG_DIRS: {"topics"},
    api.OFFSET_DELETE: {"topics"},
    api.LIST_GROUPS: {"states_filter", "types_filter"},
    api.LIST_TRANSACTIONS: {"state_filters", "producer_id_filters"},
}
PLAIN_ITEMS = {
    "groups",
    "group_ids",
    "groups_names",
    "topic_names",
    "transactional_ids",
    "coordinator_keys",
    "partition_indexes",
    "partitions",
}
KEY_FIELDS = {
    "name",
    "topic",
    "topic_id",
    "index",
    "partition",
    "partition_index",
    "partition_id",
    "group_id",
    "transactional_id",
    "resource_type",
    "resource_name",
    "key",
    "member_id",
    "group_instance_id",
}
# Request item fields that say who asks, not which item (OffsetFetch v9's member).
NOT_KEYS: dict[int, set[str]] = {api.OFFSET_FETCH: {"member_id"}}
ERROR_FIELDS = ("error_code", "partition_error_code")

Path = tuple[frozenset[Any], ...]


def not_answered(api_key: int, version: int) -> set[str]:
    fields = NOT_ANSWERED.get(api_key, set())
    if api_key == api.OFFSET_FETCH and version >= 2:
        fields = fields | {"topics"}  # v2-7: the group's error; v8+: each group's error
    return fields


def _keys(values: Iterator[Any]) -> frozenset[Any]:
    # A null name and "" are the same absent name (Kafka answers "" where the field may
    # not be null); a zero topic id is no id.
    return frozenset(v for v in values if v not in (None, "", uuid.UUID(int=0)))


def _entity_key(entity: Any, keys: set[str] = KEY_FIELDS) -> frozenset[Any]:
    return _keys(getattr(entity, f) for f in keys if hasattr(entity, f))


def request_paths(entity: Any, skip: set[str], keys: set[str], prefix: Path = ()) -> Iterator[Path]:
    """The key path of every item of a request (a topic, then a topic's partition)."""
    for f in dataclasses.fields(entity):
        value = getattr(entity, f.name)
        if f.name in skip or not isinstance(value, tuple):
            continue
        for item in value:
            if dataclasses.is_dataclass(item):
                path = (*prefix, _entity_key(item, keys))
                yield path
                yield from request_paths(item, skip, keys, path)
            else:
                assert f.name in PLAIN_ITEMS, f"unclassified list {type(entity).__name__}.{f.name}"
                yield (*prefix, _keys(iter([item])))


def response_paths(entity: Any, prefix: Path = ()) -> Iterator[Path]:
    for f in dataclasses.fields(entity):
        for item in getattr(entity, f.name) if isinstance(getattr(entity, f.name), tuple) else ():
            if dataclasses.is_dataclass(item):
                path = (*prefix, _entity_key(item))
                yield path
                yield from response_paths(item, path)


def error_fields(entity: Any, top: bool = True) -> Iterator[tuple[bool, Any, Any]]:
    """(top level?, entity, error) for every error field of a response."""
    for name in ERROR_FIELDS:
        if hasattr(entity, name):
            yield top, entity, getattr(entity, name)
    for f in dataclasses.fields(entity):
        value = getattr(entity, f.name)
        items = value if isinstance(value, tuple) else (value,)
        for item in items:
            if dataclasses.is_dataclass(item):
                yield from error_fields(item, top=False)


def round_trip(response: Any) -> Any:
    cls = type(response)
    data = codec.encode_response(7, response)
    header = codec.response_header_size(cls.__api_key__, cls.__version__, data[4:])
    return codec.decode_response(cls.__api_key__, cls.__version__, data, 4 + header)


# Answers whose own error_code stays NONE while the items carry the error (see table).
ITEMS_ONLY = {api.FETCH, api.METADATA}


@pytest.mark.parametrize(("api_key", "version"), EVERY_VERSION)
@GENERATED
@given(data=st.data(), error=errors, message=messages)
def test_error_response_answers_every_item_and_only_those(
    api_key: int, version: int, data: st.DataObject, error: ErrorCode, message: str | None
) -> None:
    body = data.draw(requests(api_key, version))

    response = error_response(body, error, message)

    assert type(response) is load_response_schema(api_key, version)
    assert round_trip(response) == response
    assert getattr(response, "throttle_time", datetime.timedelta(0)) == datetime.timedelta(0)
    for top, entity, code in error_fields(response):
        expected = ErrorCode.none if top and api_key in ITEMS_ONLY else error
        assert code == expected, type(entity).__name__
        if code != ErrorCode.none and hasattr(entity, "error_message"):
            assert entity.error_message == message
    keys = KEY_FIELDS - NOT_KEYS.get(api_key, set())
    asked = set(request_paths(body, not_answered(api_key, version), keys))
    answered = set(response_paths(response))
    assert answered <= asked, f"not asked for: {answered - asked}"
    assert asked <= answered, f"not answered: {asked - answered}"


# Request lists whose names are not resources the request acts on.
NOT_RESOURCES = {"protocols", "assignments", "configs", "forgotten_topics_data", "topic_partitions"}
TOPIC_FIELDS = ("name", "topic", "topic_id")


def topics_named(entity: Any) -> Iterator[frozenset[Any]]:
    """For every topic in a request's item lists, its name and id (either names it)."""
    for f in dataclasses.fields(entity):
        value = getattr(entity, f.name)
        if f.name in NOT_RESOURCES or not isinstance(value, tuple):
            continue
        for item in value:
            if dataclasses.is_dataclass(item):
                yield _keys(getattr(item, t) for t in TOPIC_FIELDS if hasattr(item, t))
                yield from topics_named(item)


@pytest.mark.parametrize(("api_key", "version"), EVERY_VERSION)
@settings(GENERATED, max_examples=2)
@given(data=st.data())
def test_names_lists_the_topics_groups_and_transactional_ids(
    api_key: int, version: int, data: st.DataObject
) -> None:
    body = data.draw(requests(api_key, version))

    named = set(names(body))

    topics = {r.name for r in named if r.kind == "topic"}
    for keys in topics_named(body):
        assert not keys or keys & topics, f"{keys} not named"
    if getattr(body, "group_id", None) is not None:
        assert Resource("group", body.group_id) in named
    if getattr(body, "transactional_id", None) is not None:
        assert Resource("transactional_id", body.transactional_id) in named


def test_every_served_api_is_described_and_only_those() -> None:
    for key, version in EVERY_VERSION:
        describe(key, version)
        assert unavailable_error(key).retriable, key
    for key in NOT_DESCRIBED:
        with pytest.raises(UnsupportedApi):
            describe(key, 0)
        with pytest.raises(UnsupportedApi):
            unavailable_error(key)


# Hand-written cases, checked field by field against what Kafka's brokers send.


def _schemas(api_key: int, version: int) -> tuple[Any, Any, Any, Any]:
    request = load_request_schema(api_key, version)
    response = load_response_schema(api_key, version)
    return request, codec.entity_module(request), response, codec.entity_module(response)


def test_offset_fetch_v8_answers_each_group_without_topics() -> None:
    request, req, response, resp = _schemas(api.OFFSET_FETCH, 8)
    body = request(
        groups=(
            req.OffsetFetchRequestGroup(group_id="g1", topics=None),
            req.OffsetFetchRequestGroup(
                group_id="g2",
                topics=(req.OffsetFetchRequestTopics(name="t", partition_indexes=(0,)),),
            ),
        ),
        require_stable=False,
    )

    answer = error_response(body, ErrorCode.coordinator_not_available)

    assert answer == response(
        throttle_time=datetime.timedelta(0),
        groups=(
            resp.OffsetFetchResponseGroup(
                group_id="g1", topics=(), error_code=ErrorCode.coordinator_not_available
            ),
            resp.OffsetFetchResponseGroup(
                group_id="g2", topics=(), error_code=ErrorCode.coordinator_not_available
            ),
        ),
    )


def test_offset_fetch_v1_answers_each_partition_and_v2_the_group() -> None:
    request, req, _, resp = _schemas(api.OFFSET_FETCH, 1)
    topic = req.OffsetFetchRequestTopic(name="t", partition_indexes=(0, 1))

    v1 = error_response(request(group_id="g", topics=(topic,)), ErrorCode.not_coordinator)
    request2, req2, _, _ = _schemas(api.OFFSET_FETCH, 2)
    v2 = error_response(
        request2(
            group_id="g", topics=(req2.OffsetFetchRequestTopic(name="t", partition_indexes=(0,)),)
        ),
        ErrorCode.not_coordinator,
    )

    assert [p.partition_index for p in v1.topics[0].partitions] == [0, 1]
    assert v1.topics[0].partitions[0] == resp.OffsetFetchResponsePartition(
        partition_index=0, committed_offset=-1, metadata="", error_code=ErrorCode.not_coordinator
    )
    assert v2.topics == () and v2.error_code == ErrorCode.not_coordinator


def test_produce_v9_answers_each_partition_of_two_topics() -> None:
    request, req, response, resp = _schemas(api.PRODUCE, 9)
    body = request(
        transactional_id=None,
        acks=-1,
        timeout=datetime.timedelta(seconds=30),
        topic_data=(
            req.TopicProduceData(
                name="orders", partition_data=(req.PartitionProduceData(index=0, records=b"x"),)
            ),
            req.TopicProduceData(
                name="payments",
                partition_data=(
                    req.PartitionProduceData(index=1, records=b"y"),
                    req.PartitionProduceData(index=2, records=None),
                ),
            ),
        ),
    )

    answer = error_response(body, ErrorCode.topic_authorization_failed, "denied by rule r1")

    def partition(index: int) -> Any:
        return resp.PartitionProduceResponse(
            index=index,
            error_code=ErrorCode.topic_authorization_failed,
            base_offset=-1,
            log_append_time=None,
            log_start_offset=-1,
            record_errors=(),
            error_message="denied by rule r1",
        )

    assert answer == response(
        responses=(
            resp.TopicProduceResponse(name="orders", partition_responses=(partition(0),)),
            resp.TopicProduceResponse(
                name="payments", partition_responses=(partition(1), partition(2))
            ),
        ),
        throttle_time=datetime.timedelta(0),
    )

    # ProduceResponse v9 as a broker writes it: compact arrays and strings (length + 1),
    # partitions as index, error 29, base offset, log append time and log start offset
    # all -1, no record errors, the message, no tagged fields; then throttle 0.
    def partition_bytes(index: int) -> bytes:
        message = b"denied by rule r1"
        fields = struct.pack(">ihqqq", index, 29, -1, -1, -1)
        return fields + b"\x01" + bytes([len(message) + 1]) + message + b"\x00"

    assert codec.encode_body(answer) == (
        b"\x03"
        + (b"\x07orders\x02" + partition_bytes(0) + b"\x00")
        + (b"\x09payments\x03" + partition_bytes(1) + partition_bytes(2) + b"\x00")
        + struct.pack(">i", 0)
        + b"\x00"
    )


def test_produce_with_acks_0_gets_no_answer() -> None:
    request, _, _, _ = _schemas(api.PRODUCE, 9)
    body = request(acks=0, timeout=datetime.timedelta(seconds=1), topic_data=())

    assert error_response(body, ErrorCode.request_timed_out) is None


def test_produce_v13_echoes_topic_ids() -> None:
    request, req, _, _ = _schemas(api.PRODUCE, 13)
    topic_id = uuid.uuid4()
    body = request(
        acks=-1,
        timeout=datetime.timedelta(seconds=1),
        topic_data=(
            req.TopicProduceData(
                topic_id=topic_id, partition_data=(req.PartitionProduceData(index=3, records=b""),)
            ),
        ),
    )

    answer = error_response(body, ErrorCode.request_timed_out)

    assert answer.responses[0].topic_id == topic_id
    assert answer.responses[0].partition_responses[0].index == 3
    assert names(body) == (Resource("topic", topic_id),)


def test_fetch_errors_are_per_partition_with_no_top_level_error() -> None:
    request, req, _, _ = _schemas(api.FETCH, 12)
    body = request(
        max_wait=datetime.timedelta(milliseconds=500),
        min_bytes=1,
        session_id=5,
        session_epoch=2,
        topics=(
            req.FetchTopic(
                topic="t",
                partitions=(
                    req.FetchPartition(partition=4, fetch_offset=10, partition_max_bytes=1024),
                ),
            ),
        ),
        forgotten_topics_data=(),
    )

    answer = error_response(body, ErrorCode.not_leader_or_follower)

    assert answer.error_code == ErrorCode.none
    assert answer.session_id == 0
    (partition,) = answer.responses[0].partitions
    assert partition.partition_index == 4
    assert partition.error_code == ErrorCode.not_leader_or_follower
    assert (partition.high_watermark, partition.last_stable_offset) == (-1, -1)
    assert partition.records == b"" and partition.preferred_read_replica == -1


@pytest.mark.parametrize(("version", "name"), [(10, ""), (12, None)])
def test_metadata_by_topic_id_is_named_as_the_version_allows(version: int, name: Any) -> None:
    request, req, _, _ = _schemas(api.METADATA, version)
    topic_id = uuid.uuid4()
    body = codec.build(
        request,
        topics=(req.MetadataRequestTopic(topic_id=topic_id, name=None),),
        allow_auto_topic_creation=False,
        include_cluster_authorized_operations=False,
        include_topic_authorized_operations=False,
    )

    answer = error_response(body, ErrorCode.leader_not_available)

    (topic,) = answer.topics
    assert (topic.name, topic.topic_id, topic.error_code) == (
        name,
        topic_id,
        ErrorCode.leader_not_available,
    )
    assert topic.partitions == () and answer.brokers == ()


def test_metadata_for_all_topics_answers_nothing_to_ask_again() -> None:
    request, _, _, _ = _schemas(api.METADATA, 12)
    body = request(topics=None, include_topic_authorized_operations=False)

    answer = error_response(body, ErrorCode.leader_not_available)

    assert answer.topics == () and answer.brokers == ()
    assert answer.controller_id == -1


def test_find_coordinator_answers_no_node() -> None:
    old, _, _, _ = _schemas(api.FIND_COORDINATOR, 3)
    new, _, _, resp = _schemas(api.FIND_COORDINATOR, 4)

    single = error_response(old(key="g", key_type=0), ErrorCode.coordinator_not_available, "m")
    batched = error_response(
        new(key_type=1, coordinator_keys=("a", "b")), ErrorCode.coordinator_not_available
    )

    assert (single.error_code, single.error_message) == (ErrorCode.coordinator_not_available, "m")
    assert (single.node_id, single.host, single.port) == (-1, "", -1)
    assert batched.coordinators[1] == resp.Coordinator(
        key="b",
        node_id=-1,
        host="",
        port=-1,
        error_code=ErrorCode.coordinator_not_available,
        error_message=None,
    )
    assert names(new(key_type=1, coordinator_keys=("a",))) == (Resource("transactional_id", "a"),)


@pytest.mark.parametrize(("version", "protocol_name"), [(6, ""), (7, None)])
def test_join_group_answers_unknown_member(version: int, protocol_name: str | None) -> None:
    request, req, _, _ = _schemas(api.JOIN_GROUP, version)
    body = codec.build(
        request,
        group_id="g",
        session_timeout=datetime.timedelta(seconds=10),
        rebalance_timeout=datetime.timedelta(seconds=10),
        member_id="m-1",
        protocol_type="consumer",
        protocols=(req.JoinGroupRequestProtocol(name="range", metadata=b""),),
    )

    answer = error_response(body, ErrorCode.coordinator_not_available)

    assert answer.error_code == ErrorCode.coordinator_not_available
    assert (answer.generation_id, answer.leader, answer.member_id) == (-1, "", "")
    assert answer.protocol_name == protocol_name and answer.members == ()
    assert names(body) == (Resource("group", "g"),)


def test_leave_group_v3_answers_each_member_and_the_group() -> None:
    request, req, _, _ = _schemas(api.LEAVE_GROUP, 3)
    body = request(
        group_id="g", members=(req.MemberIdentity(member_id="m", group_instance_id="i"),)
    )

    answer = error_response(body, ErrorCode.coordinator_not_available)

    assert answer.error_code == ErrorCode.coordinator_not_available
    assert [(m.member_id, m.group_instance_id) for m in answer.members] == [("m", "i")]


def test_describe_configs_answers_each_resource_and_names_it_by_kind() -> None:
    request, req, _, _ = _schemas(api.DESCRIBE_CONFIGS, 4)
    body = request(
        resources=(
            req.DescribeConfigsResource(
                resource_type=2, resource_name="t", configuration_keys=None
            ),
            req.DescribeConfigsResource(resource_type=4, resource_name="0", configuration_keys=()),
        ),
        include_synonyms=False,
        include_documentation=False,
    )

    answer = error_response(body, ErrorCode.request_timed_out, "upstream unavailable")

    assert [(r.resource_type, r.resource_name, r.configs) for r in answer.results] == [
        (2, "t", ()),
        (4, "0", ()),
    ]
    assert {r.error_message for r in answer.results} == {"upstream unavailable"}
    assert names(body) == (Resource("topic", "t"), Resource("broker", "0"))


def test_txn_offset_commit_names_transactional_id_group_and_topics() -> None:
    request, req, _, _ = _schemas(api.TXN_OFFSET_COMMIT, 3)
    body = codec.build(
        request,
        transactional_id="tx",
        group_id="g",
        producer_id=1,
        producer_epoch=0,
        topics=(
            req.TxnOffsetCommitRequestTopic(
                name="t",
                partitions=(
                    req.TxnOffsetCommitRequestPartition(
                        partition_index=0, committed_offset=5, committed_metadata=None
                    ),
                ),
            ),
        ),
    )

    answer = error_response(body, ErrorCode.coordinator_not_available)

    assert names(body) == (
        Resource("transactional_id", "tx"),
        Resource("group", "g"),
        Resource("topic", "t"),
    )
    assert answer.topics[0].partitions[0].error_code == ErrorCode.coordinator_not_available


def test_elect_leaders_for_all_partitions_answers_the_top_level_error() -> None:
    request, _, _, _ = _schemas(api.ELECT_LEADERS, 2)

    answer = error_response(
        request(election_type=0, topic_partitions=None), ErrorCode.request_timed_out
    )

    assert answer.error_code == ErrorCode.request_timed_out
    assert answer.replica_election_results == ()


@pytest.mark.parametrize(
    ("api_key", "code"),
    [
        (api.PRODUCE, ErrorCode.request_timed_out),
        (api.FETCH, ErrorCode.not_leader_or_follower),
        (api.METADATA, ErrorCode.leader_not_available),
        (api.JOIN_GROUP, ErrorCode.coordinator_not_available),
        (api.END_TXN, ErrorCode.coordinator_not_available),
        (api.INIT_PRODUCER_ID, ErrorCode.coordinator_load_in_progress),
        (api.LIST_TRANSACTIONS, ErrorCode.coordinator_load_in_progress),
        (api.CREATE_TOPICS, ErrorCode.not_controller),
        (api.DESCRIBE_CONFIGS, ErrorCode.request_timed_out),
    ],
)
def test_unavailable_error_per_family(api_key: int, code: ErrorCode) -> None:
    assert unavailable_error(api_key) == code
