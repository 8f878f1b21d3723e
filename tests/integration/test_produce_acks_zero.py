"""Produce with acks=0: the gateway writes the records upstream and answers nothing.

A client that sends acks=0 never reads a Produce response, so one arriving anyway
would be taken as the answer to its next request. The check is on a raw socket: the
Produce is followed on the same connection by other requests, whose answers must be
the next frames, and the records are read back from the cluster directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import struct
import time
import uuid
from typing import Any

import pytest

from gateway.protocol import codec
from tests.integration.clients import (
    Endpoint,
    aconsume,
    acreate_topic,
    list_topics,
    unique_topic,
)
from tests.integration.clients.probes import record_batch
from tests.integration.conftest import GatewayUnderTest

pytestmark = pytest.mark.integration

COUNT = 10


def _frame(body: Any, correlation_id: int) -> bytes:
    payload = codec.encode_request_header(
        body.__api_key__, body.__version__, correlation_id, "acks-zero"
    ) + codec.encode_body(body)
    return struct.pack(">i", len(payload)) + payload


def _produce_without_acks(version: int, topic: str, batch: bytes) -> Any:
    cls = codec.request_schema(0, version)
    module = codec.entity_module(cls)
    return codec.build(
        cls,
        transactional_id=None,
        acks=0,
        timeout=datetime.timedelta(seconds=30),
        topic_data=(
            codec.build(
                module.TopicProduceData,
                name=topic,
                partition_data=(module.PartitionProduceData(index=0, records=batch),),
            ),
        ),
    )


def _metadata(topic: str) -> Any:
    cls = codec.request_schema(3, 12)
    return codec.build(
        cls,
        topics=(
            codec.build(
                codec.entity_module(cls).MetadataRequestTopic, topic_id=uuid.UUID(int=0), name=topic
            ),
        ),
        allow_auto_topic_creation=False,
        include_topic_authorized_operations=False,
    )


def _api_versions() -> Any:
    return codec.build(
        codec.request_schema(18, 3), client_software_name="it", client_software_version="1"
    )


async def _listed_through(endpoint: Endpoint, topic: str, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while topic not in await asyncio.to_thread(list_topics, "confluent", endpoint):
        assert time.monotonic() < deadline, f"{topic} never appeared through {endpoint}"
        await asyncio.sleep(0.2)


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    size = struct.unpack(">i", await asyncio.wait_for(reader.readexactly(4), 30))[0]
    return await asyncio.wait_for(reader.readexactly(size), 30)


# v3 is the oldest version the gateway serves; v9 the first flexible one (v13 names
# topics by id, which this raw client would first have to look up).
@pytest.mark.parametrize("version", [3, 9])
async def test_acks_zero_produce_is_written_and_gets_no_response(
    gateway: GatewayUnderTest, direct: Endpoint, version: int
) -> None:
    topic = unique_topic("acks0")
    await acreate_topic(direct, topic, 1)
    # Every upstream broker knows the new topic before the raw exchange (with several
    # brokers, one may learn of it a moment later than the one that created it).
    await _listed_through(gateway.plain, topic)
    values = [b"acks0-%d" % i for i in range(COUNT)]
    host, port = gateway.plain.bootstrap.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        # Pipelined in one write, as a client does: the Produce, then two more requests.
        writer.write(
            _frame(_produce_without_acks(version, topic, record_batch(values)), 1)
            + _frame(_metadata(topic), 2)
            + _frame(_api_versions(), 3)
        )
        await writer.drain()
        answers = [await _read_frame(reader) for _ in range(2)]
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    assert [codec.read_correlation_id(a) for a in answers] == [2, 3]
    metadata = codec.decode_response(3, 12, answers[0], 4 + 1)
    assert [(t.name, t.error_code.value) for t in metadata.topics] == [(topic, 0)]
    stored = await aconsume("kafka-python", direct, topic, 1, COUNT)
    assert [(r.offset, r.key, r.value) for r in stored] == [
        (i, b"k%d" % i, v) for i, v in enumerate(values)
    ]
