"""Idempotent producers through the gateway: 100,000 records, no duplicate and no gap.

The gateway forwards Produce requests of one connection upstream in arrival order and
leaves batches (producer id, epoch, sequence numbers) untouched, which is what
idempotent producers with several requests in flight rely on.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from confluent_kafka import KafkaError, Message, Producer

from tests.integration.clients import (
    Endpoint,
    Record,
    aconsume,
    acreate_topic,
    arun_java_tool,
    librdkafka_config,
    unique_topic,
    watermarks,
)
from tests.integration.conftest import GatewayUnderTest

pytestmark = pytest.mark.integration

PARTITIONS = 3
COUNT = 100_000
RECORD_SIZE = 100
PRODUCER_PERFORMANCE = "org.apache.kafka.tools.ProducerPerformance"


@pytest.fixture
def endpoint(gateway: GatewayUnderTest) -> Endpoint:
    return gateway.plain


def assert_exactly_once_in_log(
    records: list[Record], sent: set[bytes], marks: dict[int, tuple[int, int]]
) -> None:
    """Every sent value once, nothing else, offsets dense from 0 in every partition."""
    assert len(records) == COUNT
    duplicates = [v for v, n in Counter(r.value for r in records).items() if n > 1]
    assert not duplicates, f"{len(duplicates)} duplicated values, e.g. {duplicates[:3]}"
    assert {r.value for r in records} == sent
    for partition, (low, high) in marks.items():
        offsets = [r.offset for r in records if r.partition == partition]
        assert low == 0
        assert offsets == list(range(high)), f"partition {partition} has gaps"
    assert sum(high for _, high in marks.values()) == COUNT


def send_idempotent(endpoint: Endpoint, topic: str, values: list[bytes]) -> None:
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(str(err))

    producer = Producer(
        {
            **librdkafka_config(endpoint),
            "enable.idempotence": True,  # acks=all, up to 5 requests in flight, retries
            "linger.ms": 5,
            "error_cb": lambda err: errors.append(str(err)) if err.fatal() else None,
        }
    )
    for i, value in enumerate(values):
        while True:
            try:
                producer.produce(
                    topic, value=value, partition=i % PARTITIONS, on_delivery=on_delivery
                )
                break
            except BufferError:  # local queue full: let deliveries drain it
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(120)
    assert remaining == 0, f"{remaining} records undelivered; errors: {errors[:5]}"
    assert not errors, errors[:5]


async def test_idempotent_confluent_producer_writes_100000_records_without_duplicates_or_gaps(
    endpoint: Endpoint,
) -> None:
    topic = unique_topic("idem-confluent")
    await acreate_topic(endpoint, topic, PARTITIONS)
    values = [f"idem-{i:07d}-".encode().ljust(RECORD_SIZE, b"x") for i in range(COUNT)]

    await asyncio.to_thread(send_idempotent, endpoint, topic, values)

    records = await aconsume("aiokafka", endpoint, topic, PARTITIONS, COUNT, timeout=180)
    marks = await asyncio.to_thread(watermarks, endpoint, topic, PARTITIONS)
    assert_exactly_once_in_log(records, set(values), marks)


async def test_java_producer_default_idempotence_writes_100000_records_without_duplicates_or_gaps(
    endpoint: Endpoint,
) -> None:
    topic = unique_topic("idem-java")
    await acreate_topic(endpoint, topic, PARTITIONS)

    # Kafka's producer defaults: enable.idempotence=true, acks=all. Payloads "0".."99999".
    output = await arun_java_tool(
        endpoint,
        PRODUCER_PERFORMANCE,
        "--topic", topic,
        "--num-records", str(COUNT),
        "--payload-monotonic",
        "--throughput", "-1",
        "--producer-props", f"bootstrap.servers={endpoint.bootstrap}", "linger.ms=5",
        config_option="--producer.config",
        timeout=180,
    )  # fmt: skip

    assert output.splitlines()[-1].startswith(f"{COUNT} records sent"), output
    records = await aconsume("aiokafka", endpoint, topic, PARTITIONS, COUNT, timeout=180)
    marks = await asyncio.to_thread(watermarks, endpoint, topic, PARTITIONS)
    assert_exactly_once_in_log(records, {str(i).encode() for i in range(COUNT)}, marks)
