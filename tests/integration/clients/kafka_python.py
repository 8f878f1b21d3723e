"""kafka-python as a client."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from tests.integration.clients.common import (
    CLASSIC_HEARTBEAT_MS,
    Endpoint,
    Record,
    deadline_left,
    fail,
    python_client_config,
    python_record,
)

T = TypeVar("T")


def _kafka_python_build(cls: Callable[..., T], **configs: Any) -> T:
    """``cls(**configs)``, closing the network client if the constructor fails.

    KafkaProducer/KafkaConsumer bootstrap inside their constructor; when that fails
    (bad credentials, no broker) the client they created is left open. The documented
    ``kafka_client`` hook lets us keep hold of it and close it.
    """
    from kafka.net.compat import KafkaNetClient

    created: list[Any] = []

    def make_client(**kwargs: Any) -> Any:
        client = KafkaNetClient(**kwargs)
        created.append(client)
        return client

    try:
        return cls(**configs, kafka_client=make_client)
    except BaseException:
        for client in created:
            client.close()
        raise


def produce(
    ep: Endpoint, topic: str, records: list[Record], timeout: float, compression: str | None
) -> None:
    from kafka import KafkaProducer

    producer = _kafka_python_build(
        KafkaProducer,
        **python_client_config(ep),
        acks="all",
        compression_type=compression,
        max_block_ms=int(timeout * 1000),
        bootstrap_timeout_ms=int(timeout * 1000),
    )
    try:
        futures = [
            producer.send(
                topic,
                key=rec.key,
                value=rec.value,
                partition=rec.partition,
                headers=list(rec.headers),
            )
            for rec in records
        ]
        deadline = time.monotonic() + timeout
        producer.flush(timeout)
        for fut in futures:
            try:
                fut.get(timeout=max(1.0, deadline_left(deadline)))
            except Exception as exc:
                raise fail(ep, f"kafka-python: delivery failed: {exc!r}") from exc
    finally:
        producer.close(timeout=10)


def consume(
    ep: Endpoint, topic: str, partitions: int, expected: int, timeout: float
) -> list[Record]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = _kafka_python_build(
        KafkaConsumer,
        **python_client_config(ep),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        bootstrap_timeout_ms=int(timeout * 1000),
    )
    deadline = time.monotonic() + timeout
    records: list[Record] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        while len(records) < expected:
            left = deadline_left(deadline)
            if left <= 0:
                break
            batches = consumer.poll(timeout_ms=int(min(left, 0.5) * 1000))
            for batch in batches.values():
                records.extend(python_record(m) for m in batch)
    finally:
        consumer.close(autocommit=False)
    return records


def consume_group(
    ep: Endpoint, topic: str, group: str, expected: int, timeout: float, group_protocol: str
) -> list[Record]:
    from kafka import KafkaConsumer

    consumer = _kafka_python_build(
        KafkaConsumer,
        **python_client_config(ep),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        heartbeat_interval_ms=CLASSIC_HEARTBEAT_MS,
        bootstrap_timeout_ms=int(timeout * 1000),
    )
    deadline = time.monotonic() + timeout
    records: list[Record] = []
    try:
        consumer.subscribe([topic])
        while len(records) < expected:
            left = deadline_left(deadline)
            if left <= 0:
                break
            batches = consumer.poll(timeout_ms=int(min(left, 0.5) * 1000))
            for batch in batches.values():
                records.extend(python_record(m) for m in batch)
        if records:
            consumer.commit()  # the position after the last record returned, per partition
    finally:
        consumer.close(autocommit=False)
    return records


def list_topics(ep: Endpoint, timeout: float) -> set[str]:
    from kafka import KafkaAdminClient

    admin = _kafka_python_build(KafkaAdminClient, **python_client_config(ep))
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def version() -> str:
    import kafka

    return f"kafka-python {kafka.__version__}"
