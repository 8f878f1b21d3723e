"""aiokafka as a client; each call runs its own event loop with ``asyncio.run``.

``create_topic`` (aiokafka's admin client) is what the tests use to make topics.
"""

from __future__ import annotations

import asyncio
import time

from tests.integration.clients.common import (
    CLASSIC_HEARTBEAT_MS,
    Endpoint,
    Record,
    deadline_left,
    fail,
    python_client_config,
    python_record,
    run_async,
)


def produce(
    ep: Endpoint, topic: str, records: list[Record], timeout: float, compression: str | None
) -> None:
    run_async(
        lambda: asyncio.wait_for(_aiokafka_produce_async(ep, topic, records, compression), timeout)
    )


async def _aiokafka_produce_async(
    ep: Endpoint, topic: str, records: list[Record], compression: str | None
) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        **python_client_config(ep), acks="all", compression_type=compression
    )
    try:
        await producer.start()
        futures = [
            await producer.send(
                topic,
                key=rec.key,
                value=rec.value,
                partition=rec.partition,
                headers=list(rec.headers),
            )
            for rec in records
        ]
        await producer.flush()
        for fut in futures:
            try:
                await fut
            except Exception as exc:
                raise fail(ep, f"aiokafka: delivery failed: {exc!r}") from exc
    finally:
        await producer.stop()


def consume(
    ep: Endpoint, topic: str, partitions: int, expected: int, timeout: float
) -> list[Record]:
    return run_async(lambda: _aiokafka_consume_async(ep, topic, partitions, expected, timeout))


async def _aiokafka_consume_async(
    ep: Endpoint, topic: str, partitions: int, expected: int, timeout: float
) -> list[Record]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        **python_client_config(ep),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    deadline = time.monotonic() + timeout
    records: list[Record] = []
    try:
        await consumer.start()
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while len(records) < expected:
            left = deadline_left(deadline)
            if left <= 0:
                break
            batches = await consumer.getmany(timeout_ms=int(min(left, 0.5) * 1000))
            for batch in batches.values():
                records.extend(python_record(m) for m in batch)
    finally:
        await consumer.stop()
    return records


async def _aiokafka_list_topics(ep: Endpoint) -> set[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**python_client_config(ep))
    try:
        await admin.start()
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def _create_topic(
    ep: Endpoint, name: str, partitions: int, replication_factor: int, timeout: float
) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(**python_client_config(ep))
    try:
        await admin.start()
        response = await admin.create_topics(
            [NewTopic(name, partitions, replication_factor)], timeout_ms=int(timeout * 1000)
        )
        for topic_error in response.topic_errors:
            _, code, *rest = topic_error
            if code != 0:
                message = rest[0] if rest else ""
                raise fail(ep, f"create_topic {name}: error code {code} {message}")
        deadline = time.monotonic() + timeout
        while True:
            (meta,) = await admin.describe_topics([name])
            parts = meta["partitions"]
            ready = meta["error_code"] == 0 and len(parts) == partitions
            if ready and all(p["leader"] >= 0 for p in parts):
                return
            if time.monotonic() > deadline:
                raise fail(ep, f"create_topic {name}: partitions not ready: {meta}")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


def consume_group(
    ep: Endpoint, topic: str, group: str, expected: int, timeout: float, group_protocol: str
) -> list[Record]:
    return run_async(lambda: _aiokafka_consume_group_async(ep, topic, group, expected, timeout))


async def _aiokafka_consume_group_async(
    ep: Endpoint, topic: str, group: str, expected: int, timeout: float
) -> list[Record]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        **python_client_config(ep),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        heartbeat_interval_ms=CLASSIC_HEARTBEAT_MS,
    )
    deadline = time.monotonic() + timeout
    records: list[Record] = []
    try:
        await consumer.start()
        while len(records) < expected:
            left = deadline_left(deadline)
            if left <= 0:
                break
            batches = await consumer.getmany(timeout_ms=int(min(left, 0.5) * 1000))
            for batch in batches.values():
                records.extend(python_record(m) for m in batch)
        if records:
            await consumer.commit()  # the position after the last record returned
    finally:
        await consumer.stop()
    return records


def list_topics(ep: Endpoint, timeout: float) -> set[str]:
    return run_async(lambda: _aiokafka_list_topics(ep))


def create_topic(
    ep: Endpoint, name: str, partitions: int, replication_factor: int, timeout: float
) -> None:
    run_async(lambda: _create_topic(ep, name, partitions, replication_factor, timeout))


def version() -> str:
    import aiokafka

    return f"aiokafka {aiokafka.__version__}"
