"""ClientConnection and the handlers behind it, driven through the harness.

Order of answers, acks=0, back-pressure in both directions, and what a client sees
when the upstream fails: every test feeds request frames to a real ``ClientConnection``
and scripts the upstream brokers' side (see :mod:`tests.unit.harness`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError
from kio.schema.create_topics.v7 import request as create_topics_request
from kio.schema.create_topics.v7 import response as create_topics_response
from kio.schema.errors import ErrorCode
from kio.schema.fetch.v12 import request as fetch_request
from kio.schema.fetch.v12 import response as fetch_response
from kio.schema.find_coordinator.v3 import response as find_coordinator_response
from kio.schema.join_group.v7 import request as join_group_request
from kio.schema.join_group.v7 import response as join_group_response
from kio.schema.metadata.v12 import request as metadata_request
from kio.schema.metadata.v12 import response as metadata_response
from kio.schema.produce.v9 import request as produce_request
from kio.schema.produce.v9 import response as produce_response
from prometheus_client import REGISTRY

from gateway.handlers import fetch as fetch_handler
from gateway.protocol.versions import FIND_COORDINATOR
from gateway.upstream.connections import Unfinished
from gateway.upstream.coordinators import GROUP
from tests.unit.harness import (
    ADVERTISED,
    GATEWAY_NODE,
    Answer,
    Harness,
    ScriptedPool,
    Sent,
    eventually,
    settle,
    topic_id,
)

NO_TIME = datetime.timedelta(0)
# orders/0 is led by broker 1, orders/1 by broker 2; broker 1 is the controller.
BROKERS = (1, 2)
LEADERS = {"orders": {0: 1, 1: 2}}


def with_layout(pool: ScriptedPool) -> None:
    pool.set_layout(BROKERS, LEADERS)


# -- requests and the upstream's answers to them ----------------------------------------


def produce(topic: str = "orders", partition: int = 0, acks: int = 1) -> Any:
    return produce_request.ProduceRequest(
        transactional_id=None,
        acks=acks,
        timeout=datetime.timedelta(seconds=5),
        topic_data=(
            produce_request.TopicProduceData(
                name=topic,
                partition_data=(
                    produce_request.PartitionProduceData(
                        index=partition, records=b"batch:%s/%d" % (topic.encode(), partition)
                    ),
                ),
            ),
        ),
    )


def produced(request: Any, base_offset: int = 0) -> Any:
    """A leader's answer to a Produce: every partition written at ``base_offset``."""
    return produce_response.ProduceResponse(
        responses=tuple(
            produce_response.TopicProduceResponse(
                name=t.name,
                partition_responses=tuple(
                    produce_response.PartitionProduceResponse(
                        index=p.index,
                        error_code=ErrorCode.none,
                        base_offset=base_offset,
                        record_errors=(),
                    )
                    for p in t.partition_data
                ),
            )
            for t in request.topic_data
        ),
        throttle_time=NO_TIME,
    )


def fetch(topic: str = "orders", partition: int = 0) -> Any:
    return fetch_request.FetchRequest(
        max_wait=datetime.timedelta(milliseconds=500),
        min_bytes=1,
        topics=(
            fetch_request.FetchTopic(
                topic=topic,
                partitions=(
                    fetch_request.FetchPartition(
                        partition=partition, fetch_offset=0, partition_max_bytes=1 << 20
                    ),
                ),
            ),
        ),
        forgotten_topics_data=(),
    )


def fetched(request: Any, records: bytes = b"records") -> Any:
    """A leader's answer to a Fetch: ``records`` for every partition asked for."""
    return fetch_response.FetchResponse(
        throttle_time=NO_TIME,
        error_code=ErrorCode.none,
        responses=tuple(
            fetch_response.FetchableTopicResponse(
                topic=t.topic,
                partitions=tuple(
                    fetch_response.PartitionData(
                        partition_index=p.partition,
                        error_code=ErrorCode.none,
                        high_watermark=10,
                        aborted_transactions=None,
                        records=records,
                    )
                    for p in t.partitions
                ),
            )
            for t in request.topics
        ),
    )


def metadata(*topics: str) -> Any:
    return metadata_request.MetadataRequest(
        topics=tuple(metadata_request.MetadataRequestTopic(topic_id=None, name=n) for n in topics),
        allow_auto_topic_creation=False,
        include_topic_authorized_operations=False,
    )


def described(request: Any) -> Any:
    """A broker's Metadata answer: the layout's topics, UNKNOWN_TOPIC_OR_PARTITION else."""
    return metadata_response.MetadataResponse(
        throttle_time=NO_TIME,
        brokers=tuple(
            metadata_response.MetadataResponseBroker(node_id=n, host=f"broker-{n}.test", port=9092)
            for n in BROKERS
        ),
        cluster_id="upstream-cluster",
        controller_id=1,
        topics=tuple(
            metadata_response.MetadataResponseTopic(
                error_code=ErrorCode.none
                if t.name in LEADERS
                else ErrorCode.unknown_topic_or_partition,
                name=t.name,
                topic_id=topic_id(t.name),
                partitions=tuple(
                    metadata_response.MetadataResponsePartition(
                        error_code=ErrorCode.none, partition_index=index, leader_id=leader
                    )
                    for index, leader in LEADERS.get(t.name, {}).items()
                ),
            )
            for t in request.topics
        ),
    )


def join_group(group: str = "payments") -> Any:
    return join_group_request.JoinGroupRequest(
        group_id=group,
        session_timeout=datetime.timedelta(seconds=10),
        rebalance_timeout=datetime.timedelta(seconds=30),
        member_id="",
        protocol_type="consumer",
        protocols=(join_group_request.JoinGroupRequestProtocol(name="range", metadata=b""),),
    )


def joined(request: Any) -> Any:
    return join_group_response.JoinGroupResponse(
        throttle_time=NO_TIME,
        error_code=ErrorCode.none,
        generation_id=1,
        protocol_type="consumer",
        protocol_name="range",
        leader="member-1",
        member_id="member-1",
        members=(),
    )


def coordinator_at(node: int) -> Any:
    """The controller's answer to the gateway's FindCoordinator (v3)."""
    return find_coordinator_response.FindCoordinatorResponse(
        throttle_time=NO_TIME,
        error_code=ErrorCode.none,
        error_message=None,
        node_id=node,
        host=f"broker-{node}.test",
        port=9092,
    )


def create_topics(*names: str) -> Any:
    return create_topics_request.CreateTopicsRequest(
        topics=tuple(
            create_topics_request.CreatableTopic(
                name=n, num_partitions=1, replication_factor=1, assignments=(), configs=()
            )
            for n in names
        ),
        timeout=datetime.timedelta(seconds=5),
    )


def created(request: Any) -> Any:
    return create_topics_response.CreateTopicsResponse(
        throttle_time=NO_TIME,
        topics=tuple(
            create_topics_response.CreatableTopicResult(
                name=t.name,
                topic_id=topic_id(t.name),
                error_code=ErrorCode.none,
                error_message=None,
                configs=None,
            )
            for t in request.topics
        ),
    )


# -- what the client sees: the error code per item of an answer -------------------------


def produce_items(body: Any) -> dict[str, ErrorCode]:
    return {
        f"{t.name}/{p.index}": p.error_code for t in body.responses for p in t.partition_responses
    }


def fetch_items(body: Any) -> dict[str, ErrorCode]:
    return {
        f"{t.topic}/{p.partition_index}": p.error_code for t in body.responses for p in t.partitions
    }


def metadata_items(body: Any) -> dict[str, ErrorCode]:
    return {str(t.name): t.error_code for t in body.topics}


def join_group_items(body: Any) -> dict[str, ErrorCode]:
    return {"group": body.error_code}


def create_topics_items(body: Any) -> dict[str, ErrorCode]:
    return {t.name: t.error_code for t in body.topics}


def ids(answers: list[Answer]) -> list[int]:
    return [a.correlation_id for a in answers]


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- order ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_for", "answer"),
    [(produce, produced), (fetch, fetched)],
    ids=["produce", "fetch"],
)
async def test_answers_are_written_in_request_order_when_upstream_completes_them_out_of_order(
    request_for: Callable[..., Any], answer: Callable[[Any], Any]
) -> None:
    async with Harness() as h:
        with_layout(h.pool)
        first, second = h.client.send(request_for("orders", 0), request_for("orders", 1))
        to_leader_1, to_leader_2 = await h.sends(2)
        assert (to_leader_1.node, to_leader_2.node) == (1, 2)

        to_leader_2.reply(answer(to_leader_2.body))
        await settle()
        assert h.client.writer.calls == [], "the second answer overtook the first"

        to_leader_1.reply(answer(to_leader_1.body))
        assert ids(await h.answers(2)) == [first, second]


def fetch_both() -> Any:
    """One Fetch of orders/0 (led by broker 1) and orders/1 (broker 2) from offset 0."""
    one = fetch("orders", 0)
    both = fetch_request.FetchTopic(
        topic="orders",
        partitions=tuple(
            fetch_request.FetchPartition(partition=p, fetch_offset=0, partition_max_bytes=1 << 20)
            for p in (0, 1)
        ),
    )
    return dataclasses.replace(one, topics=(both,))


def records_of(answer: Answer) -> dict[int, bytes]:
    return {
        p.partition_index: p.records or b"" for t in answer.body.responses for p in t.partitions
    }


async def answered_by_broker_2(h: Harness, request: Any = None) -> dict[int, Sent]:
    """``request`` (:func:`fetch_both` by default) is sent up to both brokers, broker 2
    answers with records and the client gets its answer while broker 1 still holds its
    part: the two upstream requests, by broker."""
    with_layout(h.pool)
    h.client.send(request if request is not None else fetch_both())
    sent = {s.node: s for s in await h.sends(2)}
    sent[2].reply(fetched(sent[2].body, b"from-2"))
    await h.answers(1)
    return sent


async def test_a_leader_that_answers_after_the_other_still_delivers_on_the_next_fetch() -> None:
    async with Harness() as h:
        sent = await answered_by_broker_2(h)
        (first,) = h.client.answers()
        # Enough arrived from broker 2: answered without waiting for broker 1 ...
        assert records_of(first) == {0: b"", 1: b"from-2"}
        # ... whose fetch goes on and comes back with records a moment later.
        sent[1].reply(fetched(sent[1].body, b"from-1"))
        h.client.send(fetch_both())
        _, second = await h.answers(2)
        # The same offsets asked again: broker 1's answer is the answer, not asked again.
        assert records_of(second)[0] == b"from-1"
        assert len(h.pool.sent_to(1)) == 1


async def test_a_late_answer_nobody_takes_is_dropped_after_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fetch_handler, "KEEP_UNTAKEN_S", 0.05)
    async with Harness() as h:
        sent = await answered_by_broker_2(h)
        sent[1].reply(fetched(sent[1].body, b"from-1"))
        async with asyncio.timeout(5):  # KEEP_UNTAKEN_S of real time
            while h.connection.session.upstream.unfinished:
                await asyncio.sleep(0.01)
        # The next fetch asks broker 1 afresh: the late records went with the answer.
        h.client.send(fetch_both())
        await eventually(lambda: len(h.pool.sent_to(1)) == 2, "a new fetch to broker 1")


def recorded_entries(monkeypatch: pytest.MonkeyPatch) -> list[Unfinished]:
    """Every leader fetch the Fetch handler starts, as it records them."""
    entries: list[Unfinished] = []

    class Recorded(Unfinished):
        __slots__ = ()

        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            entries.append(self)

    monkeypatch.setattr(fetch_handler, "Unfinished", Recorded)
    return entries


async def test_an_answer_taken_or_used_by_the_next_fetch_is_not_held_on_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each late leader answer used to stay referenced by its drop timer for
    # KEEP_UNTAKEN_S after the next fetch used it: at 125 MB/s of consume, 340 MB held
    # for nothing. Taken or used, an entry is settled: its timer is gone.
    entries = recorded_entries(monkeypatch)
    async with Harness() as h:
        sent = await answered_by_broker_2(h)
        sent[1].reply(fetched(sent[1].body, b"from-1"))  # late: the first answer is out
        await settle()
        assert entries[0].timer is not None, "a late answer nobody took yet is kept"
        h.client.send(fetch_both())
        again = await h.sends(3)
        again[2].reply(fetched(again[2].body, b"more-from-2"))
        _, second = await h.answers(2)
        assert records_of(second)[0] == b"from-1"  # the late answer, used
        await settle()
        assert len(entries) == 4
        assert all(entry.timer is None for entry in entries)
        assert not h.connection.session.upstream.unfinished


async def test_the_next_fetch_to_a_leader_waits_for_the_one_still_held_there() -> None:
    async with Harness() as h:
        sent = await answered_by_broker_2(h)
        h.client.send(fetch_both())
        again = await h.sends(3)
        assert again[2].node == 2
        again[2].reply(fetched(again[2].body, b"more-from-2"))
        await h.answers(2)
        await settle()
        # Broker 1 still holds the first fetch: nothing queues behind it.
        assert len(h.pool.sent_to(1)) == 1
        # It expires with nothing: an empty answer is not reused, broker 1 is asked anew.
        sent[1].reply(fetched(sent[1].body, b""))
        await eventually(lambda: len(h.pool.sent_to(1)) == 2, "a new fetch to broker 1")


async def test_a_fetch_waits_for_the_one_held_before_it_no_longer_than_its_own_budget() -> None:
    async with Harness(limits={"upstream_timeout_seconds": 0.2}) as h:
        patient = dataclasses.replace(fetch_both(), max_wait=datetime.timedelta(seconds=10))
        await answered_by_broker_2(h, patient)
        # Broker 1 holds the first fetch (10 s). The next one may wait 0.1 + 0.2 s.
        h.client.send(dataclasses.replace(fetch_both(), max_wait=datetime.timedelta(seconds=0.1)))
        again = await h.sends(3)
        again[2].reply(fetched(again[2].body, b""))
        async with asyncio.timeout(10):
            while len(h.client.answers()) < 2:
                await asyncio.sleep(0.02)
        second = h.client.answers()[1]
        parts = [p for t in second.body.responses for p in t.partitions]
        # Broker 1's partition: nothing yet (no error: one would be retried at once).
        assert {(p.partition_index, p.error_code) for p in parts} == {
            (0, ErrorCode.none),
            (1, ErrorCode.none),
        }
        assert all(not p.records for p in parts)
        assert len(h.pool.sent_to(1)) == 1  # nothing queued behind the held fetch


async def test_answers_that_are_ready_together_go_out_in_one_writelines_call() -> None:
    async with Harness() as h:
        h.pool.set_layout((1, 2, 3), {"orders": {0: 1, 1: 2, 2: 3}})
        asked = h.client.send(fetch("orders", 0), fetch("orders", 1), fetch("orders", 2))
        sent = await h.sends(3)
        for each in reversed(sent):
            each.reply(fetched(each.body))
        assert ids(await h.answers(3)) == asked
        assert len(h.client.writer.calls) == 1
        assert ids(h.client.decode(b"".join(h.client.writer.calls[0]))) == asked


async def test_produce_with_acks_0_gets_no_answer_and_the_next_answer_has_the_next_id() -> None:
    async with Harness() as h:
        with_layout(h.pool)
        _, answered = h.client.send(produce(acks=0), produce(acks=1))
        fire_and_forget, acknowledged = await h.sends(2)
        assert fire_and_forget.expect_response is False
        assert fire_and_forget.body.acks == 0
        acknowledged.reply(produced(acknowledged.body, base_offset=41))
        (only,) = await h.answers(1)
        assert only.correlation_id == answered
        assert produce_items(only.body) == {"orders/0": ErrorCode.none}
        await settle()
        assert len(h.client.answers()) == 1


async def test_produce_requests_reach_upstream_in_arrival_order_when_the_second_routes_faster() -> (
    None
):
    async with Harness() as h:
        with_layout(h.pool)
        # The first names a topic the layout does not know yet: routing it waits for
        # a metadata refresh, while the second could go at once.
        h.pool.refresh_gate = asyncio.Event()
        first, second = h.client.send(produce("audit", 0), produce("orders", 0))
        await eventually(lambda: h.pool.refreshes == 1, "a refresh for the unknown topic")
        await settle()
        assert h.pool.sent == [], "the second Produce went upstream before the first"

        h.pool.set_layout(BROKERS, {**LEADERS, "audit": {0: 1}})
        h.pool.refresh_gate.set()
        sent = await h.sends(2)
        assert [s.body.topic_data[0].name for s in sent] == ["audit", "orders"]
        assert sent[0].connection is sent[1].connection
        for each in sent:
            each.reply(produced(each.body))
        assert ids(await h.answers(2)) == [first, second]


async def test_produce_waits_behind_an_earlier_produce_whose_leader_connection_is_opening() -> None:
    async with Harness() as h:
        with_layout(h.pool)
        (warm_up,) = h.client.send(produce("orders", 1))
        (to_leader_2,) = await h.sends(1)
        to_leader_2.reply(produced(to_leader_2.body))
        await h.answers(1)
        # Leader 2's connection is open; leader 1's is slow to open.
        h.pool.connect_gates[1] = asyncio.Event()
        first, second = h.client.send(produce("orders", 0), produce("orders", 1))
        await settle()
        assert len(h.pool.sent) == 1, "a Produce overtook one still waiting for its leader"

        h.pool.connect_gates[1].set()
        sent = (await h.sends(3))[1:]
        assert [s.node for s in sent] == [1, 2]
        for each in sent:
            each.reply(produced(each.body))
        assert ids(await h.answers(3)) == [warm_up, first, second]


# -- back-pressure ----------------------------------------------------------------------


async def test_reading_pauses_while_max_in_flight_requests_are_owed() -> None:
    async with Harness(limits={"max_in_flight_requests": 2}) as h:
        with_layout(h.pool)
        asked = h.client.send(produce(), produce(), produce())
        first, second = await h.sends(2)
        await settle()
        assert len(h.pool.sent) == 2, "a third request was dispatched beyond the limit"

        first.reply(produced(first.body, base_offset=0))
        await eventually(lambda: len(h.pool.sent) == 3, "the third request dispatched")
        # Its slot was freed by writing the first answer.
        assert ids(h.client.answers()) == asked[:1]

        second.reply(produced(second.body, base_offset=1))
        third = h.pool.sent[2]
        third.reply(produced(third.body, base_offset=2))
        assert ids(await h.answers(3)) == asked


async def test_a_client_that_does_not_drain_stops_further_writes() -> None:
    async with Harness() as h:
        with_layout(h.pool)
        h.client.writer.hold_drain()
        asked = h.client.send(fetch("orders", 0), fetch("orders", 1))
        first, second = await h.sends(2)

        first.reply(fetched(first.body))
        await eventually(lambda: h.client.writer.drain_calls == 1, "the first answer drained")
        second.reply(fetched(second.body))
        await settle()
        assert len(h.client.writer.calls) == 1, "written while the client was not draining"

        h.client.writer.release_drain()
        assert ids(await h.answers(2)) == asked
        assert len(h.client.writer.calls) == 2


# -- upstream failures ------------------------------------------------------------------


@dataclass(frozen=True)
class Api:
    """One API as the failure tests use it."""

    request: Callable[[], Any]
    answer: Callable[[Any], Any]
    items: Callable[[Any], dict[str, ErrorCode]]
    node: int  # the upstream broker it goes to
    # Per item: the answer when the upstream fails, and when it serves the request.
    failed: dict[str, ErrorCode]
    served: dict[str, ErrorCode]
    # Where a connection that could not be opened gives a different answer.
    refused: dict[str, ErrorCode] | None = None
    setup: Callable[[ScriptedPool], None] = with_layout


def _coordinator_known(pool: ScriptedPool) -> None:
    with_layout(pool)
    pool.coordinators.remember(GROUP, "payments", 2)


APIS = {
    # A batch that may have been written: REQUEST_TIMED_OUT (the idempotent retry is
    # deduplicated); one never written: NOT_LEADER_OR_FOLLOWER.
    "produce": Api(
        request=lambda: produce("orders", 0),
        answer=produced,
        items=produce_items,
        node=1,
        failed={"orders/0": ErrorCode.request_timed_out},
        served={"orders/0": ErrorCode.none},
        refused={"orders/0": ErrorCode.not_leader_or_follower},
    ),
    "fetch": Api(
        request=lambda: fetch("orders", 1),
        answer=fetched,
        items=fetch_items,
        node=2,
        failed={"orders/1": ErrorCode.not_leader_or_follower},
        served={"orders/1": ErrorCode.none},
    ),
    "join_group": Api(
        request=join_group,
        answer=joined,
        items=join_group_items,
        node=2,
        failed={"group": ErrorCode.coordinator_not_available},
        served={"group": ErrorCode.none},
        setup=_coordinator_known,
    ),
    # Answered from the last layout read: known topics as they were, others
    # LEADER_NOT_AVAILABLE (retriable: the topic may exist).
    "metadata": Api(
        request=lambda: metadata("orders", "ghost"),
        answer=described,
        items=metadata_items,
        node=1,
        failed={"orders": ErrorCode.none, "ghost": ErrorCode.leader_not_available},
        served={"orders": ErrorCode.none, "ghost": ErrorCode.unknown_topic_or_partition},
    ),
    "create_topics": Api(
        request=lambda: create_topics("fresh"),
        answer=created,
        items=create_topics_items,
        node=1,
        failed={"fresh": ErrorCode.not_controller},
        served={"fresh": ErrorCode.none},
    ),
}

FAILURES: dict[str, Callable[[], BaseException]] = {
    "connection lost": lambda: KafkaConnectionError("Connection at broker closed"),
    "timed out": lambda: TimeoutError(),
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
@pytest.mark.parametrize("name", sorted(APIS))
async def test_upstream_failure_is_answered_per_item_and_the_connection_serves_on(
    name: str, failure: str
) -> None:
    api = APIS[name]
    async with Harness() as h:
        api.setup(h.pool)
        (failing,) = h.client.send(api.request())
        (sent,) = await h.sends(1)
        assert sent.node == api.node
        sent.fail(FAILURES[failure]())
        (answer,) = await h.answers(1)
        assert answer.correlation_id == failing
        assert api.items(answer.body) == api.failed
        # The broken upstream connection is closed; the next request opens another.
        assert not sent.connection.connected()

        await _served_next(h, api, previous=1)


@pytest.mark.parametrize("name", sorted(APIS))
async def test_refused_upstream_connect_is_answered_per_item_and_the_connection_serves_on(
    name: str,
) -> None:
    api = APIS[name]
    async with Harness() as h:
        api.setup(h.pool)
        h.pool.refuse[api.node] = KafkaConnectionError(f"Unable to connect to broker {api.node}")
        h.client.send(api.request())
        (answer,) = await h.answers(1)
        assert h.pool.sent == []
        assert api.items(answer.body) == (api.refused or api.failed)

        del h.pool.refuse[api.node]
        await _served_next(h, api, previous=0)


async def _served_next(h: Harness, api: Api, previous: int) -> None:
    assert h.is_open
    (next_id,) = h.client.send(api.request())
    sent = (await h.sends(previous + 1))[previous]
    if sent.api_key == FIND_COORDINATOR:
        # The failure made the gateway forget the coordinator: it is looked up again.
        sent.reply(coordinator_at(api.node))
        sent = (await h.sends(previous + 2))[previous + 1]
    assert sent.node == api.node and sent.connection.connected()
    sent.reply(api.answer(sent.body))
    answers = await h.answers(2)
    assert answers[1].correlation_id == next_id
    assert api.items(answers[1].body) == api.served


async def test_failed_coordinator_lookup_is_coordinator_not_available_and_is_looked_up_again() -> (
    None
):
    async with Harness() as h:
        with_layout(h.pool)
        (failing,) = h.client.send(join_group("payments"))
        (lookup,) = await h.sends(1)
        assert (lookup.node, lookup.body.key) == (1, "payments")
        lookup.fail(KafkaConnectionError("Connection at broker-1.test:9092 closed"))
        (answer,) = await h.answers(1)
        assert answer.correlation_id == failing
        assert join_group_items(answer.body) == {"group": ErrorCode.coordinator_not_available}

        (retried,) = h.client.send(join_group("payments"))
        lookup = (await h.sends(2))[1]
        lookup.reply(coordinator_at(2))
        join = (await h.sends(3))[2]
        assert join.node == 2
        join.reply(joined(join.body))
        answers = await h.answers(2)
        assert answers[1].correlation_id == retried
        assert join_group_items(answers[1].body) == {"group": ErrorCode.none}


async def test_coordinator_that_cannot_be_reached_is_looked_up_again_on_the_next_request() -> None:
    async with Harness() as h:
        with_layout(h.pool)
        h.pool.coordinators.remember(GROUP, "payments", 2)
        h.client.send(join_group("payments"))
        (join,) = await h.sends(1)
        assert join.node == 2
        join.fail(KafkaConnectionError("Connection at broker-2.test:9092 closed"))
        (answer,) = await h.answers(1)
        assert join_group_items(answer.body) == {"group": ErrorCode.coordinator_not_available}

        # Broker 2 is gone and the group moved to broker 1: the retry finds it there.
        h.pool.refuse[2] = KafkaConnectionError("Unable to connect to broker-2.test:9092")
        (retried,) = h.client.send(join_group("payments"))
        lookup = (await h.sends(2))[1]
        assert (lookup.node, lookup.api_key) == (1, FIND_COORDINATOR)
        lookup.reply(coordinator_at(1))
        join = (await h.sends(3))[2]
        assert join.node == 1
        join.reply(joined(join.body))
        answers = await h.answers(2)
        assert answers[1].correlation_id == retried
        assert join_group_items(answers[1].body) == {"group": ErrorCode.none}


async def test_metadata_answer_from_the_last_layout_names_only_the_gateway() -> None:
    async with Harness() as h:
        with_layout(h.pool)
        h.client.send(metadata("orders"))
        (sent,) = await h.sends(1)
        sent.fail(KafkaConnectionError("Connection at broker-1.test:9092 closed"))
        (answer,) = await h.answers(1)
        body = answer.body
        assert [(b.node_id, b.host, b.port) for b in body.brokers] == [(GATEWAY_NODE, *ADVERTISED)]
        assert body.controller_id == GATEWAY_NODE
        (orders,) = body.topics
        assert orders.topic_id == topic_id("orders")
        assert {p.partition_index: p.leader_id for p in orders.partitions} == {
            0: GATEWAY_NODE,
            1: GATEWAY_NODE,
        }


async def test_metadata_before_any_layout_is_read_lists_the_gateway_as_its_broker() -> None:
    async with Harness() as h:
        # The cluster answered ApiVersions once but no layout has been read yet.
        h.client.send(metadata("orders"))
        (answer,) = await h.answers(1)
        assert h.pool.sent == []
        assert metadata_items(answer.body) == {"orders": ErrorCode.leader_not_available}
        assert [b.node_id for b in answer.body.brokers] == [GATEWAY_NODE]


async def test_malformed_upstream_answer_is_counted_and_its_connection_replaced() -> None:
    labels = {"cluster": "harness", "api_key": "1"}
    malformed_before = counter("gateway_upstream_malformed_responses_total", **labels)
    open_before = counter("gateway_upstream_connections_open", cluster="harness")
    async with Harness() as h:
        with_layout(h.pool)
        h.client.send(fetch("orders", 1))
        (sent,) = await h.sends(1)
        sent.reply_bytes(b"\xff\xff\xff")
        (answer,) = await h.answers(1)
        assert fetch_items(answer.body) == {"orders/1": ErrorCode.not_leader_or_follower}
        assert counter("gateway_upstream_malformed_responses_total", **labels) == (
            malformed_before + 1
        )
        assert not sent.connection.connected()

        h.client.send(fetch("orders", 1))
        again = (await h.sends(2))[1]
        assert again.connection is not sent.connection
        assert [c.node for c in h.pool.connections] == [2, 2]
        again.reply(fetched(again.body))
        answers = await h.answers(2)
        assert fetch_items(answers[1].body) == {"orders/1": ErrorCode.none}
        assert counter("gateway_upstream_connections_open", cluster="harness") == open_before + 1
    assert counter("gateway_upstream_connections_open", cluster="harness") == open_before


async def test_request_pipelined_behind_a_failed_one_is_answered() -> None:
    async with Harness() as h:
        with_layout(h.pool)
        asked = h.client.send(fetch("orders", 0), produce("orders", 1))
        failing, serving = await h.sends(2)
        assert (failing.node, serving.node) == (1, 2)
        failing.fail(KafkaConnectionError("Connection at broker-1.test:9092 closed"))
        serving.reply(produced(serving.body, base_offset=7))
        first, second = await h.answers(2)
        assert ids([first, second]) == asked
        assert fetch_items(first.body) == {"orders/0": ErrorCode.not_leader_or_follower}
        assert produce_items(second.body) == {"orders/1": ErrorCode.none}
        assert h.is_open


async def test_requests_sharing_a_failed_upstream_connection_are_all_answered() -> None:
    async with Harness() as h:
        with_layout(h.pool)
        asked = h.client.send(fetch("orders", 0), fetch("orders", 0))
        timed_out, behind = await h.sends(2)
        assert timed_out.connection is behind.connection
        # The gateway drops the connection whose answers are now out of step, which
        # fails the request behind on it too: both get a retriable error, in order.
        timed_out.fail(TimeoutError())
        answers = await h.answers(2)
        assert ids(answers) == asked
        assert [fetch_items(a.body) for a in answers] == [
            {"orders/0": ErrorCode.not_leader_or_follower}
        ] * 2
        assert behind.future.done()

        h.client.send(fetch("orders", 0))
        fresh = (await h.sends(3))[2]
        assert fresh.connection is not timed_out.connection
        fresh.reply(fetched(fresh.body))
        assert fetch_items((await h.answers(3))[2].body) == {"orders/0": ErrorCode.none}


def describe_groups(*groups: str) -> Any:
    from kio.schema.describe_groups.v5 import request as describe_groups_request

    return describe_groups_request.DescribeGroupsRequest(
        groups=groups, include_authorized_operations=False
    )


async def test_multi_key_request_to_an_unreachable_coordinator_looks_it_up_again() -> None:
    async with Harness() as h:
        with_layout(h.pool)
        h.pool.coordinators.remember(GROUP, "payments", 2)
        h.client.send(describe_groups("payments"))
        (describe,) = await h.sends(1)
        assert describe.node == 2
        describe.fail(KafkaConnectionError("Connection at broker-2.test:9092 closed"))
        (answer,) = await h.answers(1)
        assert [(g.group_id, g.error_code) for g in answer.body.groups] == [
            ("payments", ErrorCode.coordinator_not_available)
        ]
        # The next request asks where the group is now instead of going back to broker 2.
        h.pool.refuse[2] = KafkaConnectionError("Unable to connect to broker-2.test:9092")
        h.client.send(describe_groups("payments"))
        lookup = (await h.sends(2))[1]
        assert (lookup.node, lookup.api_key) == (1, FIND_COORDINATOR)
        lookup.reply(coordinator_at(1))
        moved = (await h.sends(3))[2]
        assert moved.node == 1
        moved.fail(KafkaConnectionError("test over"))
        await h.answers(2)


def idempotent_produce(sequence: int) -> Any:
    """A Produce to orders/0 of one batch of producer 42, epoch 0, at ``sequence``."""
    import struct

    header = bytearray(61)
    header[16] = 2
    struct.pack_into(">qhi", header, 43, 42, 0, sequence)
    body = produce("orders", 0, acks=-1)
    partition = produce_request.PartitionProduceData(index=0, records=bytes(header))
    topic = produce_request.TopicProduceData(name="orders", partition_data=(partition,))
    return dataclasses.replace(body, topic_data=(topic,))


async def test_a_batch_behind_one_that_failed_is_not_sent_before_the_failed_one() -> None:
    async with Harness() as h:
        with_layout(h.pool)
        # Batch 10 finds its leader unreachable; batch 20, already on its way, must not
        # reach the leader before 10 does, or the broker would see a sequence gap.
        h.pool.refuse[1] = KafkaConnectionError("Unable to connect to broker-1.test:9092")
        h.client.send(idempotent_produce(10))
        (first,) = await h.answers(1)
        assert produce_items(first.body) == {"orders/0": ErrorCode.not_leader_or_follower}
        del h.pool.refuse[1]
        h.client.send(idempotent_produce(20))
        (second,) = (await h.answers(2))[1:]
        assert produce_items(second.body) == {"orders/0": ErrorCode.not_leader_or_follower}
        assert h.pool.sent == []
        # The producer sends 10 again, then 20: both go, in order.
        h.client.send(idempotent_produce(10), idempotent_produce(20))
        again, after = await h.sends(2)
        assert [batch_sequence(s.body) for s in (again, after)] == [10, 20]
        again.reply(produced(again.body))
        after.reply(produced(after.body))
        answers = await h.answers(4)
        assert [produce_items(a.body) for a in answers[2:]] == [{"orders/0": ErrorCode.none}] * 2


def batch_sequence(body: Any) -> int:
    import struct

    records = body.topic_data[0].partition_data[0].records
    return int(struct.unpack_from(">i", records, 53)[0])
