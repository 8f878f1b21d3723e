"""Routing topic/partition-shaped requests to upstream leaders and merging the answers."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import pytest
from kio.schema.errors import ErrorCode
from kio.schema.fetch.v13 import request as fetch_v13_request
from kio.schema.fetch.v13 import response as fetch_v13_response
from kio.schema.produce.v9 import request as produce_request
from kio.schema.produce.v9 import response as produce_response

from gateway.handlers import fetch, produce, routing
from gateway.protocol import codec
from gateway.upstream.view import ClusterView, PartitionRoute, TopicRoute

ORDERS_ID = uuid.UUID("00000000-0000-0000-0000-0000000000a1")
PAYMENTS_ID = uuid.UUID("00000000-0000-0000-0000-0000000000b2")
GHOST_ID = uuid.UUID("00000000-0000-0000-0000-0000000000c3")


def route(name: str, topic_id: uuid.UUID, leaders: dict[int, int]) -> TopicRoute:
    return TopicRoute(
        name, topic_id, {index: PartitionRoute(leader, 0) for index, leader in leaders.items()}
    )


@pytest.fixture
def view() -> ClusterView:
    # Two upstream leaders; orders/2 has no leader right now (-1).
    return ClusterView(
        brokers={1: ("kafka-1", 9092), 2: ("kafka-2", 9092)},
        topics={
            "orders": route("orders", ORDERS_ID, {0: 1, 1: 2, 2: -1}),
            "payments": route("payments", PAYMENTS_ID, {0: 2}),
        },
        names_by_id={ORDERS_ID: "orders", PAYMENTS_ID: "payments"},
        controller_id=1,
    )


# Produce v9 ---------------------------------------------------------------------------


def produce_partition(index: int) -> produce_request.PartitionProduceData:
    return produce_request.PartitionProduceData(index=index, records=b"batch-%d" % index)


def produce_topic(name: str, *indexes: int) -> produce_request.TopicProduceData:
    return produce_request.TopicProduceData(
        name=name, partition_data=tuple(produce_partition(i) for i in indexes)
    )


def produce_body(*topics: produce_request.TopicProduceData) -> produce_request.ProduceRequest:
    return produce_request.ProduceRequest(
        transactional_id=None,
        acks=-1,
        timeout=datetime.timedelta(seconds=30),
        topic_data=topics,
    )


def indexes_by_topic(topics: list[Any], api: routing.PartitionedApi) -> dict[Any, list[int]]:
    return {
        routing.topic_key(t): [
            routing.partition_index(api, p) for p in getattr(t, api.request_partitions)
        ]
        for t in topics
    }


def test_split_groups_produce_partitions_by_leader(view: ClusterView) -> None:
    body = produce_body(produce_topic("orders", 0, 1), produce_topic("payments", 0))

    plan = routing.split(produce.API, view, body.topic_data)

    assert set(plan.by_leader) == {1, 2}
    assert indexes_by_topic(plan.by_leader[1], produce.API) == {"orders": [0]}
    assert indexes_by_topic(plan.by_leader[2], produce.API) == {"orders": [1], "payments": [0]}
    assert plan.unroutable == []


def test_split_keeps_record_bytes_and_encodes_as_produce_v9(view: ClusterView) -> None:
    body = produce_body(produce_topic("orders", 0, 1))

    plan = routing.split(produce.API, view, body.topic_data)

    for leader, topics in plan.by_leader.items():
        upstream = codec.replace(body, topic_data=tuple(topics))
        decoded = codec.decode_request(
            codec.encode_request_header(0, 9, leader, "gw") + codec.encode_body(upstream)
        ).body
        assert decoded == upstream
        for topic in decoded.topic_data:
            for partition in topic.partition_data:
                assert partition.records == b"batch-%d" % partition.index


def test_split_reports_partitions_without_leader_and_unknown_topics(view: ClusterView) -> None:
    body = produce_body(produce_topic("orders", 0, 2, 7), produce_topic("ghost", 0, 1))

    plan = routing.split(produce.API, view, body.topic_data)

    assert indexes_by_topic(plan.by_leader[1], produce.API) == {"orders": [0]}
    lost = {topic.name: [p.index for p in parts] for topic, parts in plan.unroutable}
    assert lost == {"orders": [2, 7], "ghost": [0, 1]}


def test_unroutable_partitions_become_error_topics_of_the_response_version(
    view: ClusterView,
) -> None:
    plan = routing.split(produce.API, view, produce_body(produce_topic("ghost", 0, 1)).topic_data)

    topics = routing.error_topics(
        produce.API,
        produce_response.ProduceResponse,
        plan.unroutable,
        ErrorCode.not_leader_or_follower,
    )

    (topic,) = topics
    assert isinstance(topic, produce_response.TopicProduceResponse)
    assert topic.name == "ghost"
    assert [(p.index, p.error_code, p.base_offset) for p in topic.partition_responses] == [
        (0, ErrorCode.not_leader_or_follower, -1),
        (1, ErrorCode.not_leader_or_follower, -1),
    ]
    codec.encode_response(1, produce_response.ProduceResponse(responses=tuple(topics)))


def test_topic_with_empty_name_is_unroutable_rather_than_an_error(view: ClusterView) -> None:
    # A client may send any string as a topic name; "" is not a topic of the cluster.
    plan = routing.split(produce.API, view, produce_body(produce_topic("", 0)).topic_data)

    assert plan.by_leader == {}
    assert [[p.index for p in parts] for _, parts in plan.unroutable] == [[0]]


def produce_answer(
    index: int, error: ErrorCode = ErrorCode.none
) -> produce_response.PartitionProduceResponse:
    return produce_response.PartitionProduceResponse(
        index=index, error_code=error, base_offset=100 + index, record_errors=()
    )


def produce_answers(name: str, *partitions: produce_response.PartitionProduceResponse) -> Any:
    return produce_response.TopicProduceResponse(name=name, partition_responses=partitions)


def test_merge_topics_joins_partitions_of_the_same_topic_from_two_leaders() -> None:
    from_leader_1 = [produce_answers("orders", produce_answer(0))]
    from_leader_2 = [
        produce_answers("orders", produce_answer(1)),
        produce_answers("payments", produce_answer(0)),
    ]

    merged = routing.merge_topics(produce.API, from_leader_1 + from_leader_2)

    assert [t.name for t in merged] == ["orders", "payments"]
    assert [p.index for p in merged[0].partition_responses] == [0, 1]
    assert [p.base_offset for p in merged[0].partition_responses] == [100, 101]
    assert merged[1] == from_leader_2[1]


def test_merge_topics_of_distinct_topics_keeps_them_unchanged() -> None:
    topics = [produce_answers("a", produce_answer(0)), produce_answers("b", produce_answer(0))]

    assert routing.merge_topics(produce.API, topics) == tuple(topics)


def test_stale_partitions_finds_not_leader_or_follower() -> None:
    topics = [
        produce_answers(
            "orders",
            produce_answer(0),
            produce_answer(1, ErrorCode.not_leader_or_follower),
            produce_answer(2, ErrorCode.message_too_large),
        ),
        produce_answers("payments", produce_answer(3, ErrorCode.leader_not_available)),
        produce_answers("audit", produce_answer(0)),
    ]

    assert routing.stale_partitions(produce.API, topics) == {"orders": {1}, "payments": {3}}


def test_stale_partitions_of_healthy_answers_is_empty() -> None:
    assert routing.stale_partitions(produce.API, [produce_answers("a", produce_answer(0))]) == {}


def test_select_restricts_request_topics_to_wanted_partitions() -> None:
    topics = [produce_topic("orders", 0, 1, 2), produce_topic("payments", 0), produce_topic("x", 5)]

    chosen = routing.select(produce.API, topics, {"orders": {1, 2}, "x": {6}, "payments": set()})

    assert indexes_by_topic(chosen, produce.API) == {"orders": [1, 2]}
    assert chosen[0].partition_data == (produce_partition(1), produce_partition(2))


def test_drop_removes_unwanted_partitions_and_empty_topics() -> None:
    topics = [
        produce_answers("orders", produce_answer(0), produce_answer(1)),
        produce_answers("payments", produce_answer(0)),
        produce_answers("audit", produce_answer(0)),
    ]

    kept = routing.drop(produce.API, topics, {"orders": {1}, "payments": {0}})

    assert [(t.name, [p.index for p in t.partition_responses]) for t in kept] == [
        ("orders", [0]),
        ("audit", [0]),
    ]


def test_select_then_drop_partition_a_request_by_stale_routes(view: ClusterView) -> None:
    request_topics = [produce_topic("orders", 0, 1)]
    answers = [
        produce_answers(
            "orders", produce_answer(0), produce_answer(1, ErrorCode.not_leader_or_follower)
        )
    ]

    stale = routing.stale_partitions(produce.API, answers)

    assert indexes_by_topic(routing.select(produce.API, request_topics, stale), produce.API) == {
        "orders": [1]
    }
    assert [
        [p.index for p in t.partition_responses] for t in routing.drop(produce.API, answers, stale)
    ] == [[0]]


# Fetch v13: topics addressed by id ----------------------------------------------------


def fetch_topic(topic_id: uuid.UUID, *indexes: int) -> fetch_v13_request.FetchTopic:
    return fetch_v13_request.FetchTopic(
        topic_id=topic_id,
        partitions=tuple(
            fetch_v13_request.FetchPartition(partition=i, fetch_offset=0, partition_max_bytes=1024)
            for i in indexes
        ),
    )


def test_split_routes_topics_addressed_by_id(view: ClusterView) -> None:
    topics = [fetch_topic(ORDERS_ID, 0, 1), fetch_topic(PAYMENTS_ID, 0), fetch_topic(GHOST_ID, 0)]

    plan = routing.split(fetch.API, view, topics)

    assert indexes_by_topic(plan.by_leader[1], fetch.API) == {ORDERS_ID: [0]}
    assert indexes_by_topic(plan.by_leader[2], fetch.API) == {ORDERS_ID: [1], PAYMENTS_ID: [0]}
    assert [(t.topic_id, [p.partition for p in parts]) for t, parts in plan.unroutable] == [
        (GHOST_ID, [0])
    ]


def test_error_topics_for_topics_addressed_by_id_carry_the_id(view: ClusterView) -> None:
    plan = routing.split(fetch.API, view, [fetch_topic(GHOST_ID, 3)])

    (topic,) = routing.error_topics(
        fetch.API, fetch_v13_response.FetchResponse, plan.unroutable, ErrorCode.unknown_topic_id
    )

    assert topic.topic_id == GHOST_ID
    ((index, error),) = [(p.partition_index, p.error_code) for p in topic.partitions]
    assert (index, error) == (3, ErrorCode.unknown_topic_id)


def fetch_answer(topic_id: uuid.UUID, *partitions: tuple[int, ErrorCode]) -> Any:
    return fetch_v13_response.FetchableTopicResponse(
        topic_id=topic_id,
        partitions=tuple(
            fetch_v13_response.PartitionData(
                partition_index=i,
                error_code=error,
                high_watermark=10,
                aborted_transactions=None,
                records=None,
            )
            for i, error in partitions
        ),
    )


def test_merge_and_stale_partitions_key_topics_by_id() -> None:
    answers = [
        fetch_answer(ORDERS_ID, (0, ErrorCode.none)),
        fetch_answer(ORDERS_ID, (1, ErrorCode.fenced_leader_epoch)),
    ]

    (merged,) = routing.merge_topics(fetch.API, answers)

    assert [p.partition_index for p in merged.partitions] == [0, 1]
    assert routing.stale_partitions(fetch.API, answers) == {ORDERS_ID: {1}}
