"""Unmodified Kafka clients produce and consume through the gateway as if it were Kafka."""

from __future__ import annotations

import asyncio
import collections
import subprocess

import pytest

from gateway import dev
from tests.integration.clients import (
    CLIENTS,
    Endpoint,
    Record,
    aconsume,
    acreate_topic,
    aproduce,
    unique_topic,
)
from tests.integration.conftest import GatewayUnderTest

pytestmark = pytest.mark.integration

PARTITIONS = 3


def make_records(count: int) -> list[Record]:
    return [
        Record(
            partition=i % PARTITIONS,
            offset=-1,
            key=f"key-{i}".encode(),
            value=f"value-{i}-{'x' * (i % 7)}".encode(),
            headers=(("trace", f"t{i}".encode()),) + ((("source", b"it"),) if i % 2 else ()),
        )
        for i in range(count)
    ]


def payloads(
    records: list[Record], with_partition: bool
) -> collections.Counter[tuple[object, ...]]:
    return collections.Counter(
        ((r.partition,) if with_partition else ()) + (r.key, r.value, r.headers) for r in records
    )


@pytest.mark.parametrize("auth", ["plain", "sasl"])
@pytest.mark.parametrize("client", CLIENTS)
async def test_client_produces_and_consumes_records_through_the_gateway(
    gateway: GatewayUnderTest, direct: Endpoint, client: str, auth: str
) -> None:
    endpoint = gateway.plain if auth == "plain" else gateway.sasl
    topic = unique_topic(f"rt-{client}")
    await acreate_topic(endpoint, topic, PARTITIONS)
    sent = make_records(30)

    await aproduce(client, endpoint, topic, sent)
    through_gateway = await aconsume(client, endpoint, topic, PARTITIONS, len(sent))
    # What really landed in Kafka, read directly with the gateway's own credentials.
    in_kafka = await aconsume("aiokafka", direct, topic, PARTITIONS, len(sent))

    assert through_gateway == in_kafka
    # The Java console producer cannot choose a partition (its partitioner does).
    assert payloads(in_kafka, client != "java") == payloads(sent, client != "java")
    for partition in range(PARTITIONS):
        offsets = [r.offset for r in in_kafka if r.partition == partition]
        assert offsets == list(range(len(offsets)))


def _topic_command(endpoint: Endpoint, *args: str) -> str:
    command = dev.java_tool_command(
        "org.apache.kafka.tools.TopicCommand", "--bootstrap-server", endpoint.bootstrap, *args
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


async def test_kafka_topics_lists_and_describes_topics_with_the_gateway_as_only_broker(
    gateway: GatewayUnderTest,
) -> None:
    topic = unique_topic("describe")
    await acreate_topic(gateway.plain, topic, PARTITIONS)

    listed = await asyncio.to_thread(_topic_command, gateway.plain, "--list")
    described = await asyncio.to_thread(
        _topic_command, gateway.plain, "--describe", "--topic", topic
    )

    assert topic in listed.split()
    node = str(gateway.config.gateway.node_id)
    partition_lines = [line for line in described.splitlines() if "Partition:" in line]
    assert len(partition_lines) == PARTITIONS
    for line in partition_lines:
        fields = dict(part.split(": ", 1) for part in line.strip().split("\t") if ": " in part)
        assert fields["Leader"] == node
        assert fields["Replicas"] == node
        assert fields["Isr"] == node
