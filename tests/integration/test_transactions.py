"""Transactions through the gateway with confluent-kafka (librdkafka).

A transactional producer commits one transaction and aborts another; a read_committed
consumer sees exactly the committed records. A consume-transform-produce loop commits
its output records and its input offsets in one transaction (AddPartitionsToTxn,
AddOffsetsToTxn, TxnOffsetCommit, EndTxn).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import warnings
from collections.abc import Iterator

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from tests.integration.clients import (
    Endpoint,
    Record,
    acreate_topic,
    aproduce,
    committed_offsets,
    librdkafka_config,
    unique_topic,
    watermarks,
)
from tests.integration.conftest import GatewayUnderTest

pytestmark = pytest.mark.integration

PARTITIONS = 3
TIMEOUT = 30


@pytest.fixture
def endpoint(gateway: GatewayUnderTest) -> Endpoint:
    return gateway.plain


@contextlib.contextmanager
def transactional_producer(endpoint: Endpoint, transactional_id: str) -> Iterator[Producer]:
    producer = Producer(
        {
            **librdkafka_config(endpoint),
            "transactional.id": transactional_id,
            "transaction.timeout.ms": 60_000,
            "message.timeout.ms": TIMEOUT * 1000,
        }
    )
    try:
        producer.init_transactions(TIMEOUT)
        yield producer
    finally:
        producer.purge()
        with warnings.catch_warnings(), contextlib.suppress(KafkaException):
            # After a failed transaction close() complains that it cannot abort it;
            # the failure itself has already been raised.
            warnings.simplefilter("ignore", RuntimeWarning)
            producer.close()


def read_to_end(endpoint: Endpoint, topic: str, isolation_level: str) -> list[Record]:
    """Every record a consumer with ``isolation_level`` gets, up to the end of each partition.

    The end is where the consumer reports partition EOF: the log end offset for
    read_uncommitted, the last stable offset for read_committed (here the same, as no
    transaction is left open).
    """
    consumer = Consumer(
        {
            **librdkafka_config(endpoint),
            "group.id": unique_topic("g-assign"),  # never joined nor committed
            "enable.auto.commit": False,
            "isolation.level": isolation_level,
            "enable.partition.eof": True,
        }
    )
    records: list[Record] = []
    at_end: set[int] = set()
    deadline = time.monotonic() + TIMEOUT
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        while len(at_end) < PARTITIONS:
            assert time.monotonic() < deadline, f"EOF only on {at_end}; got {len(records)}"
            for msg in consumer.consume(num_messages=500, timeout=0.2):
                err = msg.error()
                if err is not None and err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition() or 0)
                    continue
                assert err is None, err
                at_end.discard(msg.partition() or 0)
                records.append(
                    Record(
                        msg.partition() or 0,
                        msg.offset() or 0,
                        msg.key() or b"",
                        msg.value() or b"",
                    )
                )
    finally:
        consumer.close()
    return sorted(records)


def values(records: list[Record]) -> list[bytes]:
    return sorted(r.value for r in records)


async def test_read_committed_consumer_sees_only_the_committed_transaction(
    endpoint: Endpoint,
) -> None:
    topic = unique_topic("txn-iso")
    await acreate_topic(endpoint, topic, PARTITIONS)
    committed = [f"committed-{i}".encode() for i in range(30)]
    aborted = [f"aborted-{i}".encode() for i in range(20)]

    def run_transactions() -> None:
        with transactional_producer(endpoint, unique_topic("txn-iso-id")) as producer:
            producer.begin_transaction()
            for i, value in enumerate(committed):
                producer.produce(topic, key=value, value=value, partition=i % PARTITIONS)
            producer.commit_transaction(TIMEOUT)

            producer.begin_transaction()
            for i, value in enumerate(aborted):
                producer.produce(topic, key=value, value=value, partition=i % PARTITIONS)
            assert producer.flush(TIMEOUT) == 0  # written to the log, then aborted
            producer.abort_transaction(TIMEOUT)

    await asyncio.to_thread(run_transactions)

    read_committed = await asyncio.to_thread(read_to_end, endpoint, topic, "read_committed")
    read_uncommitted = await asyncio.to_thread(read_to_end, endpoint, topic, "read_uncommitted")
    assert values(read_committed) == sorted(committed)
    # The aborted records did reach the log; only read_committed hides them.
    assert values(read_uncommitted) == sorted(committed + aborted)


async def test_consume_transform_produce_commits_output_and_input_offsets_in_one_transaction(
    endpoint: Endpoint,
) -> None:
    source, sink = unique_topic("txn-in"), unique_topic("txn-out")
    group = unique_topic("g-txn")
    await acreate_topic(endpoint, source, PARTITIONS)
    await acreate_topic(endpoint, sink, PARTITIONS)
    inputs = [
        Record(i % PARTITIONS, -1, f"k{i}".encode(), f"word-{i:03d}".encode()) for i in range(60)
    ]
    await aproduce("confluent", endpoint, source, inputs)

    def transform_loop() -> None:
        consumer = Consumer(
            {
                **librdkafka_config(endpoint),
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
            }
        )
        done = 0
        deadline = time.monotonic() + TIMEOUT
        try:
            consumer.subscribe([source])
            with transactional_producer(endpoint, unique_topic("txn-ctp-id")) as producer:
                while done < len(inputs):
                    assert time.monotonic() < deadline, f"transformed only {done}"
                    batch: list[Message] = consumer.consume(num_messages=25, timeout=0.5)
                    if not batch:
                        continue
                    assert all(m.error() is None for m in batch), [m.error() for m in batch]
                    producer.begin_transaction()
                    for msg in batch:
                        producer.produce(
                            sink,
                            key=msg.key(),
                            value=(msg.value() or b"").upper(),
                            partition=msg.partition(),
                        )
                    producer.send_offsets_to_transaction(
                        consumer.position(consumer.assignment()),
                        consumer.consumer_group_metadata(),
                        TIMEOUT,
                    )
                    producer.commit_transaction(TIMEOUT)
                    done += len(batch)
        finally:
            consumer.close()

    await asyncio.to_thread(transform_loop)

    output = await asyncio.to_thread(read_to_end, endpoint, sink, "read_committed")
    assert values(output) == sorted(r.value.upper() for r in inputs)
    assert sorted((r.partition, r.key) for r in output) == sorted(
        (r.partition, r.key) for r in inputs
    )
    ends = await asyncio.to_thread(watermarks, endpoint, source, PARTITIONS)
    offsets = await asyncio.to_thread(committed_offsets, endpoint, group, source, PARTITIONS)
    assert offsets == {p: high for p, (_, high) in ends.items()}
