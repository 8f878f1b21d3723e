"""Faults of one broker of the three-node primary, under load, through the gateway.

Each test runs an idempotent confluent-kafka producer and a Java consumer group
through a gateway of its own, on a topic replicated to all three nodes whose
partition leaders are spread over them, while one node is stopped, killed, paused or
moved to a new address; then it checks what the clients are owed: every acknowledged
record in the log once and in order, every record read by the group in order and its
offsets committed to the end, and no client connection closed by the gateway for an
upstream failure. The last test shows how the gateway answers a Fetch whose partitions
have different leaders. Recovery times are printed (and appended to
``$FAULT_TIMINGS``); they are measured, not asserted. Every test leaves the cluster as
it found it (all nodes running, on their home addresses), even when it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import struct
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka.record.memory_records import MemoryRecords
from kio.schema.errors import ErrorCode

from gateway import dev
from gateway.protocol import codec
from gateway.protocol.versions import FETCH
from tests.integration.clients import (
    Endpoint,
    JavaGroupConsumer,
    Record,
    acreate_topic,
    aproduce,
    committed_offsets,
    elect_preferred_leaders,
    group_coordinator,
    librdkafka_config,
    partition_leaders,
    unique_topic,
)
from tests.integration.conftest import (
    GatewayUnderTest,
    SessionLog,
    cluster_endpoint,
    running_gateway,
)
from tests.integration.faults import (
    Deliveries,
    PacedProducer,
    Progress,
    ametric,
    check_group,
    check_log,
    consumed_all,
    readiness,
    restore_primary,
    timings,
    wait_state,
)

pytestmark = pytest.mark.integration

PARTITIONS = 6
REPLICAS = 3
COUNT = 24_000
RATE = 1_000.0
CLOSED = "gateway_connections_closed_total"


@pytest.fixture
def cluster(primary: dev.ClusterInfo) -> Iterator[Endpoint]:
    """The primary through all of its nodes (any one may be down), with the gateway's
    own credentials; the primary is put back as it was after the test, even if it
    failed."""
    if len(primary.nodes) < REPLICAS:
        pytest.skip("needs the three-node primary (GATEWAY_DEV_PRIMARY_BROKERS=3)")
    try:
        yield cluster_endpoint(primary, primary.bootstrap_servers)
    finally:
        restore_primary()


@dataclass
class Load:
    """A producer and a consumer group at work on ``topic`` through ``gw``."""

    gw: GatewayUnderTest
    topic: str
    group: str
    producer: PacedProducer
    consumer: JavaGroupConsumer
    acked: Progress
    consumed: Progress
    closed_before: float
    leaders: dict[int, int]

    async def finish(self, cluster: Endpoint) -> Deliveries:
        """Let the producer finish and the group read everything, then check both."""
        deliveries = await self.producer.finish()
        assert deliveries.reported == COUNT
        check_log(cluster, self.topic, PARTITIONS, deliveries)
        assert not deliveries.failed, (
            f"{len(deliveries.failed)} records failed: {set(deliveries.failed.values())}"
        )
        everything = await asyncio.to_thread(consumed_all, cluster, self.topic, PARTITIONS)
        read_all = await asyncio.to_thread(self.consumer.wait_for, everything, 120)
        # Stopping the console consumer commits its position and leaves the group.
        consumed = await asyncio.to_thread(self.consumer.stop)
        assert read_all, f"the group read {len(consumed)} records and stopped there"
        await asyncio.to_thread(check_group, cluster, self.topic, PARTITIONS, self.group, consumed)
        closed = await ametric(self.gw.admin_url, CLOSED, reason="request failed")
        assert closed == self.closed_before, "the gateway closed a client connection"
        return deliveries


@contextlib.asynccontextmanager
async def under_load(primary: dev.ClusterInfo, cluster: Endpoint, name: str) -> AsyncIterator[Load]:
    """A topic whose partition leaders are spread over the three nodes, a gateway,
    and the producer and consumer group at work through it (for 5 s already)."""
    topic = unique_topic(name)
    await acreate_topic(cluster, topic, PARTITIONS, REPLICAS)
    leaders = await asyncio.to_thread(partition_leaders, cluster, topic)
    assert set(leaders.values()) == {n.node_id for n in primary.nodes}, leaders
    async with running_gateway(primary) as gw:
        closed_before = await ametric(gw.admin_url, CLOSED, reason="request failed")
        consumer = JavaGroupConsumer(gw.sasl, topic, f"{topic}-group")
        producer = PacedProducer(gw.sasl, topic, COUNT, RATE)
        acked = Progress(lambda: len(producer.deliveries.acked))
        consumed = Progress(lambda: len(consumer.records()))
        try:
            producer.start()
            acked.start()
            consumed.start()
            group_reads = await asyncio.to_thread(consumer.wait_for, bool, 60)
            assert group_reads, "the consumer group read nothing"
            await asyncio.sleep(3)
            yield Load(
                gw, topic, f"{topic}-group", producer, consumer, acked, consumed, closed_before,
                leaders,
            )  # fmt: skip
        finally:
            await acked.stop()
            await consumed.stop()
            await asyncio.to_thread(consumer.proc.stop)


async def leaders_back(cluster: Endpoint, topic: str, wanted: dict[int, int]) -> float:
    """Run preferred leader elections until ``topic`` has the ``wanted`` leaders (a
    restarted replica must first catch up); returns how long that took."""
    started = time.monotonic()
    while True:
        await asyncio.to_thread(elect_preferred_leaders, cluster, topic, PARTITIONS)
        now = await asyncio.to_thread(partition_leaders, cluster, topic)
        if now == wanted:
            return time.monotonic() - started
        assert time.monotonic() - started < 90, f"leaders {now}, wanted {wanted}"
        await asyncio.sleep(1)


async def test_partition_leaders_move_away_and_back_under_load(
    primary: dev.ClusterInfo, cluster: Endpoint, session_log: SessionLog
) -> None:
    async with under_load(primary, cluster, "leader-move") as load:
        victim = load.leaders[0]
        led = sorted(p for p, node in load.leaders.items() if node == victim)
        stopping = time.monotonic()
        await asyncio.to_thread(dev.stop_node, "primary", victim)
        stopped = time.monotonic()
        moved = await asyncio.to_thread(partition_leaders, cluster, load.topic)
        assert all(moved[p] not in (victim, -1) for p in led), moved
        await asyncio.sleep(5)
        await asyncio.to_thread(dev.start_node, "primary", victim)
        started = time.monotonic()
        back_after = await leaders_back(cluster, load.topic, load.leaders)
        await load.finish(cluster)
    timings(
        "partition leaders moved (graceful stop, start, preferred election)",
        node_stop=stopped - stopping,
        node_start=started - stopped,
        leaders_back_after_start=back_after,
        longest_ack_stall=load.acked.longest_stall(stopping),
        longest_read_stall=load.consumed.longest_stall(stopping),
    )


async def test_consumer_group_follows_its_coordinator_killed_under_load(
    primary: dev.ClusterInfo, cluster: Endpoint, session_log: SessionLog
) -> None:
    async with under_load(primary, cluster, "coordinator-move") as load:
        coordinator = await asyncio.to_thread(group_coordinator, cluster, load.group)
        before = await asyncio.to_thread(
            committed_offsets, cluster, load.group, load.topic, PARTITIONS
        )
        killed = time.monotonic()
        await asyncio.to_thread(dev.kill_node, "primary", coordinator)
        others = without(cluster, coordinator)
        # While the old coordinator is down, the group commits to its new one.
        committing_after = await _commits_move_on(others, load, before)
        successor = await asyncio.to_thread(group_coordinator, others, load.group)
        assert successor != coordinator
        await asyncio.to_thread(dev.start_node, "primary", coordinator)
        await load.finish(cluster)
    timings(
        "group coordinator killed",
        commits_resumed_after=committing_after,
        reads_resumed_after=load.consumed.resumed_after(killed),
        longest_read_stall=load.consumed.longest_stall(killed),
        longest_ack_stall=load.acked.longest_stall(killed),
    )


def without(cluster: Endpoint, node_id: int) -> Endpoint:
    """``cluster`` without the address of one node (which is down: asking it only
    fills the output with refused connections)."""
    (gone,) = [n.bootstrap for n in dev.nodes("primary") if n.node_id == node_id]
    rest = [a for a in cluster.bootstrap.split(",") if a != gone]
    return dataclasses.replace(cluster, bootstrap=",".join(rest))


async def _commits_move_on(cluster: Endpoint, load: Load, before: dict[int, int]) -> float:
    """Seconds until the group has committed beyond ``before`` on every partition."""
    started = time.monotonic()
    while True:
        with contextlib.suppress(Exception):  # the cluster is electing a new coordinator
            now = await asyncio.to_thread(
                committed_offsets, cluster, load.group, load.topic, PARTITIONS
            )
            if all(now[p] > before[p] for p in before):
                return time.monotonic() - started
        assert time.monotonic() - started < 120, "the group committed nothing after the move"
        await asyncio.sleep(0.5)


async def test_one_paused_broker_leaves_the_gateway_degraded_not_down(
    primary: dev.ClusterInfo, cluster: Endpoint, session_log: SessionLog
) -> None:
    async with under_load(primary, cluster, "pause-one") as load:
        victim = load.leaders[0]
        paused = time.monotonic()
        await asyncio.to_thread(dev.pause_node, "primary", victim)
        seen: list[tuple[float, int, str]] = []
        while time.monotonic() - paused < 15:
            status, state = await asyncio.to_thread(readiness, load.gw.admin_url)
            seen.append((time.monotonic() - paused, status, state))
            await asyncio.sleep(0.5)
        await asyncio.to_thread(dev.resume_node, "primary", victim)
        resumed = time.monotonic()
        up_after = await wait_state(load.gw.admin_url, "up")
        await load.finish(cluster)
    states = {state for _, _, state in seen}
    assert "degraded" in states, f"/readyz during the pause: {seen}"
    assert all(status == 200 for _, status, _ in seen), f"not ready while paused: {seen}"
    degraded_at = next(t for t, _, state in seen if state == "degraded")
    # Once the controller fences the paused broker, the layout no longer lists it.
    up_again = [t for t, _, state in seen if t > degraded_at and state == "up"]
    timings(
        "one of three brokers paused 15s",
        degraded_after_pause=degraded_at,
        up_again_while_paused=up_again[0] if up_again else float("nan"),
        up_after_resume=up_after,
        longest_ack_stall=load.acked.longest_stall(paused),
        longest_read_stall=load.consumed.longest_stall(paused),
        acks_resumed_after_resume=load.acked.resumed_after(resumed),
    )


async def test_gateway_follows_a_broker_restarted_on_a_new_address(
    primary: dev.ClusterInfo, cluster: Endpoint, session_log: SessionLog
) -> None:
    async with under_load(primary, cluster, "new-address") as load:
        victim = load.leaders[0]
        home = next(n.bootstrap for n in dev.nodes("primary") if n.node_id == victim)
        moving = time.monotonic()
        moved = await asyncio.to_thread(dev.restart_node, "primary", victim, new_address=True)
        restarted = time.monotonic()
        assert moved.bootstrap != home
        pool = load.gw.gateway.services.pool
        while pool.view.brokers.get(victim) != ("127.0.0.1", moved.port):
            assert time.monotonic() - restarted < 60, f"the gateway still sees {pool.view.brokers}"
            await asyncio.sleep(0.1)
        followed = time.monotonic() - restarted
        # Its partitions go back to it, so that the load reaches it at its new address.
        back_after = await leaders_back(cluster, load.topic, load.leaders)
        await load.finish(cluster)
    timings(
        "broker restarted on a new address",
        node_restart=restarted - moving,
        gateway_followed_after=followed,
        leaders_back_after_restart=back_after,
        longest_ack_stall=load.acked.longest_stall(moving),
        longest_read_stall=load.consumed.longest_stall(moving),
    )


# -- one Fetch across leaders ------------------------------------------------------------

FETCH_VERSION = 12  # the last to name topics (13 on addresses them by id)


def _fetch(
    topic: str, offsets: dict[int, int], max_wait_ms: int, max_bytes: int, min_bytes: int = 1
) -> Any:
    cls = codec.request_schema(FETCH, FETCH_VERSION)
    module = codec.entity_module(cls)
    partitions = tuple(
        module.FetchPartition(
            partition=p,
            current_leader_epoch=-1,
            fetch_offset=offset,
            last_fetched_epoch=-1,
            log_start_offset=-1,
            partition_max_bytes=1 << 20,
        )
        for p, offset in sorted(offsets.items())
    )
    return codec.build(
        cls,
        cluster_id=None,
        replica_id=-1,
        max_wait=datetime.timedelta(milliseconds=max_wait_ms),
        min_bytes=min_bytes,
        max_bytes=max_bytes,
        isolation_level=0,
        session_id=0,
        session_epoch=-1,
        topics=(module.FetchTopic(topic=topic, partitions=partitions),),
        forgotten_topics_data=(),
        rack_id="",
    )


class RawClient:
    """One connection to the gateway's listener without authentication, sending
    requests built with kio one at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self._next_id = 0

    async def ask(self, body: Any) -> Any:
        self._next_id += 1
        payload = codec.encode_request_header(
            body.__api_key__, body.__version__, self._next_id, "faults-cluster"
        ) + codec.encode_body(body)
        self.writer.write(struct.pack(">i", len(payload)) + payload)
        await self.writer.drain()
        size = struct.unpack(">i", await asyncio.wait_for(self.reader.readexactly(4), 60))[0]
        data = await asyncio.wait_for(self.reader.readexactly(size), 60)
        assert codec.read_correlation_id(data) == self._next_id
        offset = codec.response_header_size(body.__api_key__, body.__version__, data)
        return codec.decode_response(body.__api_key__, body.__version__, data, offset)


@contextlib.asynccontextmanager
async def raw_client(gw: GatewayUnderTest) -> AsyncIterator[RawClient]:
    host, port = gw.plain.bootstrap.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        yield RawClient(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _records(response: Any) -> dict[int, bytes]:
    """Each answered partition's record bytes (checking it answered without error)."""
    found: dict[int, bytes] = {}
    for topic in response.responses:
        for p in topic.partitions:
            assert p.error_code == ErrorCode.none, (p.partition_index, p.error_code)
            found[p.partition_index] = bytes(p.records or b"")
    return found


def _offsets(data: bytes) -> list[int]:
    """The offsets of the records in the complete batches of ``data``."""
    batches = MemoryRecords(data)
    found: list[int] = []
    while (batch := batches.next_batch()) is not None:
        found += [record.offset for record in batch]
    return found


async def _spread_topic(cluster: Endpoint, name: str) -> tuple[str, dict[int, int]]:
    """A topic of three partitions, each led by another node."""
    topic = unique_topic(name)
    await acreate_topic(cluster, topic, REPLICAS, REPLICAS)
    leaders = await asyncio.to_thread(partition_leaders, cluster, topic)
    assert len(set(leaders.values())) == REPLICAS, leaders
    return topic, leaders


async def test_fetch_is_answered_with_one_leaders_data_without_waiting_for_idle_leaders(
    primary: dev.ClusterInfo, cluster: Endpoint, session_log: SessionLog
) -> None:
    topic, _ = await _spread_topic(cluster, "fetch-early")
    values = [b"early-%d" % i for i in range(10)]
    await aproduce("confluent", cluster, topic, [Record(0, -1, b"k", v) for v in values])
    async with running_gateway(primary) as gw, raw_client(gw) as client:
        started = time.monotonic()
        # Partitions 1 and 2 are empty: their leaders would hold the fetch for 10 s.
        first = _records(await client.ask(_fetch(topic, {0: 0, 1: 0, 2: 0}, 10_000, 1 << 20)))
        first_took = time.monotonic() - started
        # Now partition 1 has a record, and its leader the abandoned fetch.
        await aproduce("confluent", cluster, topic, [Record(1, -1, b"k", b"later")])
        started = time.monotonic()
        offsets = {0: len(values), 1: 0, 2: 0}
        second = _records(await client.ask(_fetch(topic, offsets, 10_000, 1 << 20)))
        second_took = time.monotonic() - started
    assert _offsets(first[0]) == list(range(len(values)))
    # A full (sessionless) answer names every partition asked for, with or without data.
    assert sorted(first) == [0, 1, 2]
    assert not first[1] and not first[2]
    assert sorted(second) == [0, 1, 2]
    assert _offsets(second[1]) == [0]
    timings(
        "fetch across three leaders, data on one, max_wait 10s",
        answered_after=first_took,
        next_fetch_from_the_abandoned_leader_after=second_took,
    )


async def test_fetch_across_leaders_stays_within_the_clients_max_bytes(
    primary: dev.ClusterInfo, cluster: Endpoint, session_log: SessionLog
) -> None:
    topic, _ = await _spread_topic(cluster, "fetch-max-bytes")
    # About 5 KB in partitions 0 and 1 and 40 KB in 2, in batches of about 1 KB.
    counts = {0: 5, 1: 5, 2: 40}
    records = [
        Record(p, -1, b"k%d" % i, b"%d-%d-" % (p, i) + b"x" * 1000)
        for p, count in counts.items()
        for i in range(count)
    ]
    await asyncio.to_thread(_produce_one_batch_each, cluster, topic, records)
    max_bytes = 16 * 1024
    answers: list[dict[int, bytes]] = []
    offsets = dict.fromkeys(counts, 0)
    async with running_gateway(primary) as gw, raw_client(gw) as client:
        while offsets != counts and len(answers) < 50:
            # min_bytes no leader can meet alone: every leader answers, and the gateway
            # merges up to three answers of up to max_bytes each.
            request = _fetch(topic, offsets, 300, max_bytes, min_bytes=1 << 20)
            answer = _records(await client.ask(request))
            answers.append(answer)
            for partition, data in answer.items():
                read = _offsets(data)
                assert read[:1] in ([], [offsets[partition]]), "records skipped or repeated"
                offsets[partition] += len(read)
    assert offsets == counts, "the client did not read every record"
    for answer in answers:
        sizes = [len(data) for data in answer.values() if data]
        # KIP-74: the first batch is returned even when it alone exceeds max_bytes.
        assert sum(sizes) <= max_bytes or len(sizes) == 1, sizes
    assert any(sum(bool(d) for d in answer.values()) > 1 for answer in answers), (
        "no answer merged records of several leaders"
    )


def _produce_one_batch_each(ep: Endpoint, topic: str, records: list[Record]) -> None:
    """Each record in a batch of its own (linger 0, one at a time)."""
    from confluent_kafka import Producer

    producer = Producer({**librdkafka_config(ep), "linger.ms": 0, "acks": "all"})
    for record in records:
        producer.produce(topic, key=record.key, value=record.value, partition=record.partition)
        assert producer.flush(30) == 0


async def test_java_group_reads_a_topic_whose_data_is_all_on_one_leader(
    primary: dev.ClusterInfo, cluster: Endpoint, session_log: SessionLog
) -> None:
    topic, _ = await _spread_topic(cluster, "fetch-java")
    values = [b"java-%d" % i for i in range(200)]
    await aproduce("confluent", cluster, topic, [Record(0, -1, b"k", v) for v in values])
    async with running_gateway(primary) as gw:
        with JavaGroupConsumer(gw.sasl, topic, f"{topic}-group") as consumer:
            started = time.monotonic()
            read = await asyncio.to_thread(consumer.wait_for, lambda rs: len(rs) >= len(values), 60)
            took = time.monotonic() - started
            got = len(consumer.records())
    assert read, f"the Java consumer read {got} of {len(values)} records in 60 s"
    timings("java group reading one busy leader of three", read_all_after=took)
