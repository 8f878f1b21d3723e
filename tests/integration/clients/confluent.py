"""confluent-kafka (librdkafka) as a client, and its admin client for inspecting state.

The Python binding insists on a ``group.id`` even in assign mode, so ``consume`` sets a
throw-away one with auto-commit off; it never joins nor commits, but librdkafka still
looks up (FindCoordinator) that group's coordinator. ``committed_offsets``,
``watermarks``, ``describe_group``, ``partition_leaders`` and ``group_coordinator`` ask
with the admin client; ``elect_preferred_leaders`` moves leadership back.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.integration.clients.common import (
    CLASSIC_HEARTBEAT_MS,
    Endpoint,
    Record,
    client_errors,
    deadline_left,
    fail,
    headers_of,
    last_offsets,
)

# How much longer than an admin request's own timeout its result is waited for.
_GRACE_S = 10.0


def committed_offsets(
    ep: Endpoint, group: str, topic: str, partitions: int, *, timeout: float = 30
) -> dict[int, int]:
    """The offsets ``group`` has committed on ``topic`` (negative where it has none).

    Asked with confluent-kafka's admin client (OffsetFetch).
    """
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient

    with client_errors("confluent list_consumer_group_offsets", ep):
        admin = AdminClient(librdkafka_config(ep))
        request = ConsumerGroupTopicPartitions(
            group, [TopicPartition(topic, p) for p in range(partitions)]
        )
        (future,) = admin.list_consumer_group_offsets([request], request_timeout=timeout).values()
        # Longer than the request's own timeout: an admin client dropped while its
        # request is still out can crash the process (librdkafka).
        result = future.result(timeout + _GRACE_S)
        return {tp.partition: tp.offset for tp in result.topic_partitions}


def watermarks(
    ep: Endpoint, topic: str, partitions: int, *, timeout: float = 30
) -> dict[int, tuple[int, int]]:
    """``{partition: (low, high)}``: log start and end offsets, asked with ListOffsets."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec

    with client_errors("confluent list_offsets", ep):
        admin = AdminClient(librdkafka_config(ep))
        ends: dict[str, dict[int, int]] = {}
        for name, spec in (("low", OffsetSpec.earliest()), ("high", OffsetSpec.latest())):
            futures = admin.list_offsets(
                {TopicPartition(topic, p): spec for p in range(partitions)},
                request_timeout=timeout,
            )
            ends[name] = {tp.partition: f.result(timeout).offset for tp, f in futures.items()}
        return {p: (ends["low"][p], ends["high"][p]) for p in range(partitions)}


@dataclass(frozen=True)
class GroupDescription:
    """A consumer group as DescribeGroups / ConsumerGroupDescribe report it."""

    state: str  # e.g. "STABLE", "EMPTY", "PREPARING_REBALANCE"
    type: str  # "CLASSIC" or "CONSUMER" (KIP-848)
    members: dict[str, frozenset[tuple[str, int]]]  # member id -> its (topic, partition)s


def describe_group(ep: Endpoint, group: str, *, timeout: float = 30) -> GroupDescription:
    """Describe ``group`` with confluent-kafka's admin client."""
    from confluent_kafka.admin import AdminClient

    with client_errors("confluent describe_consumer_groups", ep):
        admin = AdminClient(librdkafka_config(ep))
        (future,) = admin.describe_consumer_groups([group], request_timeout=timeout).values()
        desc = future.result(timeout)
        return GroupDescription(
            state=desc.state.name,
            type=desc.type.name,
            members={
                m.member_id: frozenset(
                    (tp.topic, tp.partition) for tp in m.assignment.topic_partitions
                )
                for m in desc.members
            },
        )


def partition_leaders(ep: Endpoint, topic: str, *, timeout: float = 30) -> dict[int, int]:
    """``{partition: leader node id}`` of ``topic`` (-1 while a partition has none).

    A topic created a moment ago may not be known yet to the broker that answers (each
    broker learns of it from the metadata log on its own): the question is asked again
    until ``timeout`` while the answer is UNKNOWN_TOPIC_OR_PART or LEADER_NOT_AVAILABLE.
    """
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import AdminClient

    retriable = {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.LEADER_NOT_AVAILABLE}
    deadline = time.monotonic() + timeout
    with client_errors("confluent list_topics", ep):
        admin = AdminClient(librdkafka_config(ep))
        while True:
            found = admin.list_topics(topic, timeout=timeout).topics[topic]
            if found.error is None:
                return {p.id: p.leader for p in found.partitions.values()}
            if found.error.code() not in retriable or time.monotonic() >= deadline:
                raise fail(ep, f"confluent: {topic}: {found.error}")
            time.sleep(0.2)


def group_coordinator(ep: Endpoint, group: str, *, timeout: float = 30) -> int:
    """The node id of the broker coordinating ``group``, as DescribeGroups reports it."""
    from confluent_kafka.admin import AdminClient

    with client_errors("confluent describe_consumer_groups", ep):
        admin = AdminClient(librdkafka_config(ep))
        (future,) = admin.describe_consumer_groups([group], request_timeout=timeout).values()
        return int(future.result(timeout + _GRACE_S).coordinator.id)


def elect_preferred_leaders(ep: Endpoint, topic: str, partitions: int) -> dict[int, str | None]:
    """Run a preferred leader election on ``topic``: ``{partition: error or None}``
    (ELECTION_NOT_NEEDED counts as done)."""
    from confluent_kafka import ElectionType, KafkaError, KafkaException, TopicPartition
    from confluent_kafka.admin import AdminClient

    with client_errors("confluent elect_leaders", ep):
        admin = AdminClient(librdkafka_config(ep))
        # No request_timeout: confluent-kafka 2.16 fails to parse it (SystemError); the
        # default is socket.timeout.ms (60 s).
        future = admin.elect_leaders(
            ElectionType.PREFERRED, [TopicPartition(topic, p) for p in range(partitions)]
        )
        outcome: dict[int, str | None] = {}
        for tp, error in future.result(60 + _GRACE_S).items():
            if isinstance(error, KafkaException):
                error = error.args[0]
            done = error is None or error.code() == KafkaError.ELECTION_NOT_NEEDED
            outcome[tp.partition] = None if done else str(error)
        return outcome


def librdkafka_config(ep: Endpoint) -> dict[str, str]:
    """Connection settings for a librdkafka client (confluent-kafka, kcat) of ``ep``."""
    conf = {"bootstrap.servers": ep.bootstrap, "security.protocol": ep.security_protocol}
    if ep.uses_sasl and ep.oauth_token_url is not None:
        conf |= {
            "sasl.mechanisms": "OAUTHBEARER",
            "sasl.oauthbearer.method": "oidc",
            "sasl.oauthbearer.token.endpoint.url": ep.oauth_token_url,
            "sasl.oauthbearer.client.id": ep.username or "",
            "sasl.oauthbearer.client.secret": ep.password or "",
            "sasl.oauthbearer.scope": "kafka",
        }
    elif ep.uses_sasl:
        conf |= {
            "sasl.mechanisms": ep.sasl_mechanism or "PLAIN",
            "sasl.username": ep.username or "",
            "sasl.password": ep.password or "",
        }
    if ep.uses_tls:
        if ep.ca_file:
            conf["ssl.ca.location"] = ep.ca_file
        if ep.cert_file:
            conf |= {
                "ssl.certificate.location": ep.cert_file,
                "ssl.key.location": ep.key_file or "",
            }
    return conf


def produce(
    ep: Endpoint, topic: str, records: list[Record], timeout: float, compression: str | None
) -> None:
    from confluent_kafka import KafkaError, Message, Producer

    errors: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(f"partition {msg.partition()}: {err}")

    producer = Producer(
        {
            **librdkafka_config(ep),
            "acks": "all",
            "message.timeout.ms": int(timeout * 1000),
            "compression.type": compression or "none",
            "error_cb": _confluent_error_cb(errors),
        }
    )
    deadline = time.monotonic() + timeout
    try:
        for rec in records:
            producer.produce(
                topic,
                key=rec.key,
                value=rec.value,
                partition=rec.partition,
                headers=list(rec.headers),
                on_delivery=on_delivery,
            )
            producer.poll(0)
        # flush(), but give up at the first fatal or authentication error.
        while len(producer) and not errors and time.monotonic() < deadline:
            producer.poll(0.1)
        remaining = len(producer)
    finally:
        producer.purge()
        producer.flush(0)
        producer.close()
    if errors or remaining:
        raise fail(ep, f"confluent: {remaining} undelivered; errors: {errors[:5]}")


def _confluent_error_cb(sink: list[str]) -> Callable[[Any], None]:
    """An ``error_cb`` recording errors that retrying will not cure."""
    from confluent_kafka import KafkaError

    def on_error(err: KafkaError) -> None:
        if err.fatal() or err.code() == KafkaError._AUTHENTICATION:
            sink.append(str(err))

    return on_error


def consume(
    ep: Endpoint, topic: str, partitions: int, expected: int, timeout: float
) -> list[Record]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    fatal: list[str] = []
    consumer = Consumer(
        {
            **librdkafka_config(ep),
            # Required by the Python binding even for assign(); never joined nor committed.
            "group.id": f"it-assign-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "error_cb": _confluent_error_cb(fatal),
        }
    )
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        records = _confluent_poll(ep, consumer, expected, timeout, fatal)
    finally:
        consumer.close()
    if fatal:
        raise fail(ep, f"confluent: {fatal[0]}")
    return records


def _confluent_poll(
    ep: Endpoint, consumer: Any, expected: int, timeout: float, fatal: list[str]
) -> list[Record]:
    """Poll until ``expected`` records, the timeout, or a fatal client error."""
    from confluent_kafka import KafkaError

    deadline = time.monotonic() + timeout
    records: list[Record] = []
    while len(records) < expected and not fatal:
        left = deadline_left(deadline)
        if left <= 0:
            break
        for msg in consumer.consume(num_messages=expected, timeout=min(left, 0.5)):
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise fail(ep, f"confluent: consume error: {err}")
            records.append(_confluent_record(msg))
    return records


def _confluent_record(msg: Any) -> Record:
    return Record(
        partition=msg.partition() or 0,
        offset=msg.offset() or 0,
        key=msg.key() or b"",
        value=msg.value() or b"",
        headers=headers_of(msg.headers()),
    )


def consume_group(
    ep: Endpoint, topic: str, group: str, expected: int, timeout: float, group_protocol: str
) -> list[Record]:
    from confluent_kafka import Consumer, TopicPartition

    fatal: list[str] = []
    conf: dict[str, Any] = {
        **librdkafka_config(ep),
        "group.id": group,
        "group.protocol": group_protocol,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "error_cb": _confluent_error_cb(fatal),
    }
    if group_protocol == "classic":
        conf["heartbeat.interval.ms"] = CLASSIC_HEARTBEAT_MS
    consumer = Consumer(conf)
    records: list[Record] = []
    try:
        consumer.subscribe([topic])
        records = _confluent_poll(ep, consumer, expected, timeout, fatal)
        if records and not fatal:
            consumer.commit(
                offsets=[TopicPartition(topic, p, o + 1) for p, o in last_offsets(records).items()],
                asynchronous=False,
            )
    finally:
        consumer.close()
    if fatal:
        raise fail(ep, f"confluent: {fatal[0]}")
    return records


def list_topics(ep: Endpoint, timeout: float) -> set[str]:
    from confluent_kafka.admin import AdminClient

    return set(AdminClient(librdkafka_config(ep)).list_topics(timeout=timeout).topics)


def version() -> str:
    import confluent_kafka

    return (
        f"confluent-kafka {confluent_kafka.__version__} "
        f"(librdkafka {confluent_kafka.libversion()[0]})"
    )
