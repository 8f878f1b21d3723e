"""The upstream layer's own state: layout updates, health states, backoff, bounded caches."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from kio.schema.errors import ErrorCode
from kio.schema.fetch.v12 import response as fetch_response
from kio.schema.metadata.v12 import response as metadata_response
from prometheus_client import REGISTRY

from gateway.handlers import fanout, fetch
from gateway.protocol import codec
from gateway.upstream.coordinators import GROUP, Coordinators
from gateway.upstream.health import ClusterHealth, ClusterState
from gateway.upstream.pool import BACKOFF_JITTER, Backoff
from gateway.upstream.view import ClusterView

ORDERS_ID = uuid.UUID("00000000-0000-0000-0000-0000000000a1")


def metadata(brokers: dict[int, int], topics: dict[str, int]) -> Any:
    """An all-topics Metadata v12 answer: brokers by id -> port, topics by name -> leader."""
    return metadata_response.MetadataResponse(
        throttle_time=codec.NO_THROTTLE,
        brokers=tuple(
            metadata_response.MetadataResponseBroker(node_id=n, host="10.0.0.1", port=p, rack=None)
            for n, p in brokers.items()
        ),
        cluster_id="c",
        controller_id=min(brokers, default=-1),
        topics=tuple(
            metadata_response.MetadataResponseTopic(
                error_code=ErrorCode.none,
                name=name,
                topic_id=ORDERS_ID if name == "orders" else uuid.uuid4(),
                is_internal=name.startswith("__"),
                partitions=(
                    metadata_response.MetadataResponsePartition(
                        error_code=ErrorCode.none,
                        partition_index=0,
                        leader_id=leader,
                        leader_epoch=3,
                        replica_nodes=(leader,),
                        isr_nodes=(leader,),
                        offline_replicas=(),
                    ),
                ),
                topic_authorized_operations=-(2**31),
            )
            for name, leader in topics.items()
        ),
    )


def test_view_refuses_an_answer_without_brokers_and_keeps_the_working_one() -> None:
    view = ClusterView()
    assert view.update(metadata({1: 9092}, {"orders": 1}))
    # A controller that has just fenced every broker answers with none listed.
    assert not view.update(metadata({}, {}))
    assert view.brokers == {1: ("10.0.0.1", 9092)}
    assert view.leader("orders", 0) == 1
    assert view.names_by_id == {ORDERS_ID: "orders"}


def test_view_follows_a_broker_to_its_new_address_and_forgets_deleted_topics() -> None:
    view = ClusterView()
    view.update(metadata({1: 9092, 2: 9093}, {"orders": 1, "gone": 2}))
    view.update(metadata({1: 9092, 2: 9999}, {"orders": 2}))
    assert view.brokers[2] == ("10.0.0.1", 9999)
    assert view.leader("orders", 0) == 2
    assert "gone" not in view.topics
    assert set(view.names_by_id.values()) == {"orders"}


def test_view_marks_internal_topics() -> None:
    view = ClusterView()
    view.update(metadata({1: 9092}, {"__consumer_offsets": 1, "orders": 1}))
    assert view.topics["__consumer_offsets"].is_internal
    assert not view.topics["orders"].is_internal


def sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_health_starts_down_and_counts_only_returns_from_down_as_recoveries() -> None:
    health = ClusterHealth("unit-health")
    assert health.state is ClusterState.DOWN and not health.ready
    health.checked({})  # first contact is not a recovery
    assert health.state is ClusterState.UP and health.ready
    assert health.recoveries == 0
    health.checked({2: "timed out"})
    assert health.state is ClusterState.DEGRADED and health.ready
    health.failed("no broker answered")
    assert health.state is ClusterState.DOWN and not health.ready
    health.checked({})
    assert health.recoveries == 1
    assert sample("gateway_upstream_recoveries_total", cluster="unit-health") == 1
    assert sample("gateway_upstream_state", cluster="unit-health", state="up") == 1
    assert sample("gateway_upstream_state", cluster="unit-health", state="down") == 0
    assert sample("gateway_upstream_up", cluster="unit-health") == 1


def test_health_logs_a_state_once_however_often_it_is_confirmed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    health = ClusterHealth("unit-log")
    health.checked({})
    caplog.clear()
    for _ in range(5):
        health.failed("no broker answered")
    assert len([r for r in caplog.records if "unit-log" in r.getMessage()]) == 1


def test_thresholds_need_failures_in_a_row_for_down_and_successes_in_a_row_for_up() -> None:
    health = ClusterHealth("unit-thresholds", down_after=3, up_after=2)
    health.checked({})  # the first contact needs one check
    assert health.state is ClusterState.UP and not health.settling
    health.failed("timed out")
    health.failed("timed out")
    assert health.state is ClusterState.UP and health.ready and health.settling
    health.checked({})  # a pass in between starts the count again
    assert health.failures == 0 and not health.settling
    for _ in range(2):
        health.failed("timed out")
    assert health.state is ClusterState.UP
    health.failed("no broker answered")
    assert health.state is ClusterState.DOWN and not health.ready
    assert health.reason == "no broker answered"
    health.checked({})
    assert health.state is ClusterState.DOWN and health.settling
    assert health.reason == "answering again (1 of 2 checks)"
    health.failed("timed out")  # a failure in between starts the count again
    health.checked({})
    assert health.state is ClusterState.DOWN
    health.checked({})
    assert health.state is ClusterState.UP and health.recoveries == 1
    assert not health.settling


def test_a_failed_canary_with_metadata_read_degrades_and_never_downs() -> None:
    health = ClusterHealth("unit-canary", down_after=1, up_after=1)
    for _ in range(3):
        health.checked({}, "__gateway-canary: NotEnoughReplicasError")
    assert health.state is ClusterState.DEGRADED and health.ready
    assert health.reason == "canary: __gateway-canary: NotEnoughReplicasError"
    health.checked({2: "timed out"}, "timed out")
    assert health.reason == "broker 2: timed out, canary: timed out"
    health.checked({})
    assert health.state is ClusterState.UP


def test_check_durations_are_kept_and_exported() -> None:
    health = ClusterHealth("unit-durations")
    before = sample("gateway_upstream_canary_seconds_count", cluster="unit-durations")
    health.timed(0.25, 0.125)
    health.timed(0.5, None)  # a check that did not get as far as its canary
    assert (health.check_seconds, health.canary_seconds) == (0.5, None)
    assert health.checked_at is not None
    assert sample("gateway_upstream_check_seconds_count", cluster="unit-durations") == 2
    assert sample("gateway_upstream_canary_seconds_count", cluster="unit-durations") == before + 1


def test_backoff_doubles_to_its_cap_with_bounded_jitter() -> None:
    backoff = Backoff(initial=0.1, maximum=1.0)
    delays = [backoff.next() for _ in range(8)]
    for attempt, delay in enumerate(delays):
        nominal = min(1.0, 0.1 * 2**attempt)
        assert nominal * (1 - BACKOFF_JITTER) <= delay <= nominal * (1 + BACKOFF_JITTER)
    backoff.reset()
    assert backoff.next() <= 0.1 * (1 + BACKOFF_JITTER)


def test_coordinator_cache_keeps_only_the_most_recently_used_names() -> None:
    cache = Coordinators(pool=None, max_cached=3)  # type: ignore[arg-type]
    for i in range(10):
        cache.remember(GROUP, f"group-{i}", i)
    assert len(cache) == 3
    assert cache._known == {(GROUP, "group-7"): 7, (GROUP, "group-8"): 8, (GROUP, "group-9"): 9}


def fetch_topic(name: str, sizes: list[int]) -> Any:
    return fetch_response.FetchableTopicResponse(
        topic=name,
        partitions=tuple(
            codec.build(
                fetch_response.PartitionData,
                partition_index=i,
                error_code=ErrorCode.none,
                high_watermark=100,
                last_stable_offset=100,
                log_start_offset=0,
                aborted_transactions=None,
                preferred_read_replica=-1,
                records=b"x" * size,
            )
            for i, size in enumerate(sizes)
        ),
    )


def test_merged_fetch_stays_within_max_bytes_but_always_returns_the_first_records() -> None:
    topics = [fetch_topic("a", [0, 600, 300]), fetch_topic("b", [200, 50])]
    kept = fetch.within_max_bytes(topics, 1000)
    sizes = [[len(p.records or b"") for p in t.partitions] for t in kept]
    assert sizes == [[0, 600, 300], [0, 50]]
    assert fetch.record_bytes(kept) == 950
    # A first batch larger than the limit still goes (KIP-74), nothing after it.
    oversized = fetch.within_max_bytes([fetch_topic("a", [5000, 10])], 1000)
    assert [len(p.records or b"") for p in oversized[0].partitions] == [5000, 0]


async def test_gather_answers_once_enough_arrived_and_cancels_the_slow_leader() -> None:
    slow_cancelled = asyncio.Event()

    async def fast() -> fanout.Sent:
        return None, [fetch_topic("a", [10])]

    async def slow() -> fanout.Sent:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            slow_cancelled.set()
            raise
        return None, []

    results, abandoned = await fanout._gather(
        [(fast(), ["sent to the fast leader"]), (slow(), ["sent to the slow leader"])],
        lambda topics: fetch.record_bytes(topics) >= 1,
    )
    # The slow leader's request topics come back, to be answered without records.
    assert abandoned == ["sent to the slow leader"]
    assert [t.topic for _, sent in results for t in sent] == ["a"]
    await asyncio.sleep(0)
    assert slow_cancelled.is_set()


async def test_gather_answers_without_a_leader_silent_past_its_patience() -> None:
    async def empty() -> fanout.Sent:
        return None, [fetch_topic("a", [0])]

    async def paused() -> fanout.Sent:
        await asyncio.sleep(3600)
        return None, []

    results, abandoned = await fanout._gather(
        [(empty(), ["sent to the idle leader"]), (paused(), ["sent to the paused leader"])],
        lambda topics: fetch.record_bytes(topics) >= 1,
        patience=0.05,
    )
    assert abandoned == ["sent to the paused leader"]
    assert [t.topic for _, sent in results for t in sent] == ["a"]


async def test_gather_waits_for_every_leader_while_not_enough() -> None:
    async def empty(delay: float) -> fanout.Sent:
        await asyncio.sleep(delay)
        return None, [fetch_topic(f"t{delay}", [0])]

    results, abandoned = await fanout._gather(
        [(empty(0), []), (empty(0.01), [])], lambda topics: fetch.record_bytes(topics) >= 1
    )
    assert abandoned is None
    assert len(results) == 2


def metadata_request(version: int, topics: list[str] | None) -> Any:
    cls = codec.request_schema(3, version)
    module = codec.entity_module(cls)
    return codec.build(
        cls,
        topics=None
        if topics is None
        else tuple(codec.build(module.MetadataRequestTopic, name=n, topic_id=None) for n in topics),
        allow_auto_topic_creation=False,
        include_cluster_authorized_operations=False,
        include_topic_authorized_operations=False,
    )


@pytest.mark.parametrize("version", range(0, 14))
def test_metadata_from_the_layout_lists_known_topics_and_asks_to_retry_unknown_ones(
    version: int,
) -> None:
    from gateway.handlers import metadata as metadata_handler
    from gateway.protocol.codec import Request

    view = ClusterView()
    view.update(metadata({1: 9092, 2: 9093}, {"orders": 2, "__consumer_offsets": 1}))
    request = Request(
        api_key=3,
        api_version=version,
        correlation_id=1,
        client_id="c",
        body=metadata_request(version, ["orders", "unknown"]),
        size=0,
    )
    answer = metadata_handler._from_view(view, request)
    codec.encode_response(1, answer)  # a valid answer of the client's version
    by_name = {t.name: t for t in answer.topics}
    assert by_name["orders"].error_code == ErrorCode.none
    assert [p.leader_id for p in by_name["orders"].partitions] == [2]
    assert by_name["unknown"].error_code == ErrorCode.leader_not_available
    every = metadata_handler._from_view(
        view, Request(3, version, 1, "c", metadata_request(version, None), 0)
    )
    assert {t.name for t in every.topics} == {"orders", "__consumer_offsets"}
