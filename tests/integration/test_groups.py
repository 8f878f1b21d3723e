"""Consumer groups through the gateway: members split partitions, commits survive restarts.

Classic groups (JoinGroup/SyncGroup/Heartbeat/LeaveGroup, OffsetCommit/OffsetFetch,
DescribeGroups) with confluent-kafka and the Java console consumer, KIP-848 groups
(ConsumerGroupHeartbeat) with the Java consumer and librdkafka, and
``kafka-consumer-groups --describe``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer

from tests.integration.clients import (
    CLASSIC_HEARTBEAT_MS,
    Endpoint,
    GroupDescription,
    JavaGroupConsumer,
    Record,
    aconsume,
    aconsume_group,
    acreate_topic,
    aproduce,
    arun_java_tool,
    committed_offsets,
    describe_group,
    librdkafka_config,
    produce,
    unique_topic,
    watermarks,
)
from tests.integration.conftest import GatewayUnderTest

pytestmark = pytest.mark.integration

PARTITIONS = 4
PER_PARTITION = 5
CONSUMER_GROUP_COMMAND = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"


@pytest.fixture
def endpoint(gateway: GatewayUnderTest) -> Endpoint:
    return gateway.plain


def round_of_records(tag: str, partitions: int = PARTITIONS) -> list[Record]:
    """``PER_PARTITION`` records for every partition, values tagged with ``tag``."""
    return [
        Record(
            partition=p, offset=-1, key=f"{tag}-k{p}-{i}".encode(), value=f"{tag}-{p}-{i}".encode()
        )
        for p in range(partitions)
        for i in range(PER_PARTITION)
    ]


def values(records: list[Record]) -> set[bytes]:
    return {r.value for r in records}


def partitions_of(records: list[Record]) -> set[int]:
    return {r.partition for r in records}


# --------------------------------------------------------------------------- confluent-kafka


class ConfluentMember:
    """One confluent-kafka consumer of a classic group, polled by the test's thread."""

    def __init__(self, endpoint: Endpoint, topic: str, group: str) -> None:
        self.consumer = Consumer(
            {
                **librdkafka_config(endpoint),
                "group.id": group,
                "auto.offset.reset": "earliest",
                "heartbeat.interval.ms": CLASSIC_HEARTBEAT_MS,
                # Auto-commit: closing the consumer commits what it consumed.
                "enable.auto.commit": True,
            }
        )
        self.consumer.subscribe([topic])
        self.records: list[Record] = []
        self.closed = False

    def poll(self) -> None:
        for msg in self.consumer.consume(num_messages=100, timeout=0.05):
            assert msg.error() is None, msg.error()
            self.records.append(
                Record(
                    msg.partition() or 0, msg.offset() or 0, msg.key() or b"", msg.value() or b""
                )
            )

    def assigned(self) -> set[int]:
        return {tp.partition for tp in self.consumer.assignment()}

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.consumer.close()


def poll_until(members: list[ConfluentMember], done: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        for member in members:
            member.poll()
    return True


def splits_all(a: set[int], b: set[int]) -> bool:
    return bool(a) and bool(b) and not a & b and a | b == set(range(PARTITIONS))


async def test_two_confluent_consumers_split_partitions_and_the_survivor_takes_over_all(
    endpoint: Endpoint,
) -> None:
    topic = unique_topic("grp-split-confluent")
    group = unique_topic("g-split-confluent")
    await acreate_topic(endpoint, topic, PARTITIONS)
    first_round, second_round = round_of_records("one"), round_of_records("two")

    def scenario() -> None:
        a = ConfluentMember(endpoint, topic, group)
        b = ConfluentMember(endpoint, topic, group)
        try:
            assert poll_until([a, b], lambda: splits_all(a.assigned(), b.assigned()), 60), (
                f"no split: a={a.assigned()} b={b.assigned()}"
            )
            a_parts, b_parts = a.assigned(), b.assigned()

            produce("confluent", endpoint, topic, first_round)
            assert poll_until(
                [a, b], lambda: len(a.records) + len(b.records) >= len(first_round), 60
            )
            # Each member read exactly its own partitions; together, every record once.
            assert partitions_of(a.records) == a_parts
            assert partitions_of(b.records) == b_parts
            assert values(a.records) | values(b.records) == values(first_round)
            assert len(a.records) + len(b.records) == len(first_round)

            a.close()  # commits what it consumed, then leaves the group
            before = len(b.records)
            produce("confluent", endpoint, topic, second_round)
            assert poll_until([b], lambda: values(second_round) <= values(b.records), 60), (
                f"survivor has {sorted(values(b.records[before:]))}, assigned {b.assigned()}"
            )
            after_leave = b.records[before:]
            assert b.assigned() == set(range(PARTITIONS))
            assert partitions_of(after_leave) == set(range(PARTITIONS))
            # It resumed where the leaver committed: nothing of the first round again.
            assert values(after_leave) == values(second_round)
            assert len(after_leave) == len(second_round)
        finally:
            a.close()
            b.close()

    await asyncio.to_thread(scenario)


# --------------------------------------------------------------------------- Java


async def wait_for_group(
    endpoint: Endpoint, group: str, ready: Callable[[GroupDescription], bool], timeout: float = 60
) -> GroupDescription:
    deadline = time.monotonic() + timeout
    while True:
        desc = await asyncio.to_thread(describe_group, endpoint, group)
        if ready(desc) or time.monotonic() > deadline:
            return desc
        await asyncio.sleep(0.3)


def stable_split(desc: GroupDescription) -> bool:
    assigned = [{p for _, p in parts} for parts in desc.members.values()]
    stable = desc.state == "STABLE" and desc.type == "CLASSIC"
    return stable and len(assigned) == 2 and splits_all(*assigned)


async def test_two_java_console_consumers_split_partitions_and_the_survivor_takes_over_all(
    endpoint: Endpoint,
) -> None:
    topic = unique_topic("grp-split-java")
    group = unique_topic("g-split-java")
    await acreate_topic(endpoint, topic, PARTITIONS)
    first_round, second_round = round_of_records("one"), round_of_records("two")

    with (
        JavaGroupConsumer(endpoint, topic, group) as a,
        JavaGroupConsumer(endpoint, topic, group) as b,
    ):
        desc = await wait_for_group(endpoint, group, stable_split)
        assert stable_split(desc), desc

        await aproduce("confluent", endpoint, topic, first_round)
        await asyncio.to_thread(
            a.wait_for, lambda recs: len(recs) + len(b.records()) >= len(first_round), 60
        )
        got_a, got_b = a.records(), b.records()
        assert len(got_a) + len(got_b) == len(first_round), (got_a, got_b)
        assert splits_all(partitions_of(got_a), partitions_of(got_b)), (got_a, got_b)
        assert {frozenset(partitions_of(got_a)), frozenset(partitions_of(got_b))} == {
            frozenset(p for _, p in parts) for parts in desc.members.values()
        }
        assert values(got_a) | values(got_b) == values(first_round)

        await asyncio.to_thread(a.stop)  # commits its position and leaves the group
        await aproduce("confluent", endpoint, topic, second_round)
        survivor_done = await asyncio.to_thread(
            b.wait_for, lambda recs: values(second_round) <= values(recs), 60
        )
        got_b_after = b.records()[len(got_b) :]
        assert survivor_done, sorted(values(got_b_after))
        assert partitions_of(got_b_after) == set(range(PARTITIONS))
        # It resumed where the leaver committed: nothing of the first round again.
        assert values(got_b_after) == values(second_round)
        await asyncio.to_thread(b.stop)


# --------------------------------------------------------------------------- commits


async def test_committed_offsets_survive_a_consumer_restart(endpoint: Endpoint) -> None:
    topic = unique_topic("grp-restart")
    group = unique_topic("g-restart")
    await acreate_topic(endpoint, topic, PARTITIONS)
    first_round, second_round = round_of_records("old"), round_of_records("new")

    await aproduce("confluent", endpoint, topic, first_round)
    first = await aconsume_group("confluent", endpoint, topic, group, len(first_round))
    assert values(first) == values(first_round)
    committed = await asyncio.to_thread(committed_offsets, endpoint, group, topic, PARTITIONS)
    assert committed == dict.fromkeys(range(PARTITIONS), PER_PARTITION)

    await aproduce("confluent", endpoint, topic, second_round)
    second = await aconsume_group("confluent", endpoint, topic, group, len(second_round))

    # Exactly the new records: the restarted member resumed at the committed offsets.
    assert values(second) == values(second_round)
    assert len(second) == len(second_round)
    assert {r.offset for r in second} == set(range(PER_PARTITION, 2 * PER_PARTITION))
    committed = await asyncio.to_thread(committed_offsets, endpoint, group, topic, PARTITIONS)
    assert committed == dict.fromkeys(range(PARTITIONS), 2 * PER_PARTITION)


def parse_table(output: str) -> list[dict[str, str]]:
    """Rows of a kafka-consumer-groups table, keyed by the header's column names."""
    rows: list[dict[str, str]] = []
    header: list[str] | None = None
    for line in output.splitlines():
        cols = line.split()
        if cols[:2] == ["GROUP", "TOPIC"]:
            header = cols
        elif header and len(cols) == len(header):
            rows.append(dict(zip(header, cols, strict=True)))
    return rows


async def test_kafka_consumer_groups_describe_shows_partitions_and_lag(endpoint: Endpoint) -> None:
    topic = unique_topic("grp-lag")
    group = unique_topic("g-lag")
    await acreate_topic(endpoint, topic, PARTITIONS)
    consumed = round_of_records("consumed")
    await aproduce("confluent", endpoint, topic, consumed)
    assert len(await aconsume_group("confluent", endpoint, topic, group, len(consumed))) == len(
        consumed
    )
    # Partition p gets p more records: lag 0, 1, 2, 3.
    backlog = [
        Record(p, -1, f"lag-{p}-{i}".encode(), b"pending")
        for p in range(PARTITIONS)
        for i in range(p)
    ]
    await aproduce("confluent", endpoint, topic, backlog)

    output = await arun_java_tool(
        endpoint,
        CONSUMER_GROUP_COMMAND,
        "--bootstrap-server", endpoint.bootstrap,
        "--describe", "--group", group,
    )  # fmt: skip

    rows = {int(r["PARTITION"]): r for r in parse_table(output) if r["TOPIC"] == topic}
    assert set(rows) == set(range(PARTITIONS)), output
    marks = await asyncio.to_thread(watermarks, endpoint, topic, PARTITIONS)
    for p, row in rows.items():
        assert row["GROUP"] == group
        assert int(row["CURRENT-OFFSET"]) == PER_PARTITION
        assert int(row["LOG-END-OFFSET"]) == marks[p][1] == PER_PARTITION + p
        assert int(row["LAG"]) == p  # produced minus committed


# --------------------------------------------------------------------------- KIP-848


@pytest.mark.parametrize("client", ["java", "confluent"])
async def test_consumer_with_kip848_group_protocol_consumes_every_record(
    endpoint: Endpoint, client: str
) -> None:
    topic = unique_topic(f"grp-848-{client}")
    group = unique_topic(f"g-848-{client}")
    await acreate_topic(endpoint, topic, PARTITIONS)
    sent = round_of_records("kip848")
    await aproduce("confluent", endpoint, topic, sent)

    # A generous idle limit: a JVM starting on a busy 2-core machine can take a while.
    got = await aconsume_group(
        client, endpoint, topic, group, len(sent), timeout=120, group_protocol="consumer"
    )

    reference = await aconsume("aiokafka", endpoint, topic, PARTITIONS, len(sent))
    assert got == reference
    assert values(got) == values(sent)
    committed = await asyncio.to_thread(committed_offsets, endpoint, group, topic, PARTITIONS)
    assert committed == dict.fromkeys(range(PARTITIONS), PER_PARTITION)
    described = await asyncio.to_thread(describe_group, endpoint, group)
    assert described.type == "CONSUMER"  # the group really ran KIP-848's protocol
