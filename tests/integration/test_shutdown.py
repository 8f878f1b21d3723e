"""Graceful shutdown: stop accepting, answer what is owed, close upstream connections."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import socket
import struct
from typing import Any

import pytest

from gateway import dev, metrics
from gateway.errors import GatewayError
from gateway.protocol import codec
from gateway.server.app import Gateway
from tests.integration.clients import Endpoint, acreate_topic, unique_topic
from tests.integration.conftest import gateway_config

pytestmark = pytest.mark.integration


def _frame(body: Any, correlation_id: int) -> bytes:
    payload = codec.encode_request_header(
        body.__api_key__, body.__version__, correlation_id, "shutdown-test"
    ) + codec.encode_body(body)
    return struct.pack(">i", len(payload)) + payload


def _long_poll_fetch(topic: str) -> Any:
    module = codec.entity_module(codec.request_schema(1, 12))
    return codec.build(
        module.FetchRequest,
        max_wait=datetime.timedelta(seconds=2),
        min_bytes=1,
        max_bytes=1 << 20,
        isolation_level=0,
        session_id=0,
        session_epoch=-1,
        topics=(
            codec.build(
                module.FetchTopic,
                topic=topic,
                partitions=(
                    codec.build(
                        module.FetchPartition,
                        partition=0,
                        current_leader_epoch=-1,
                        fetch_offset=0,
                        log_start_offset=-1,
                        partition_max_bytes=1 << 20,
                    ),
                ),
            ),
        ),
        forgotten_topics_data=(),
        rack_id="",
    )


async def test_stop_answers_an_in_flight_fetch_then_refuses_new_connections(
    primary: dev.ClusterInfo, direct: Endpoint
) -> None:
    topic = unique_topic("shutdown")
    await acreate_topic(direct, topic, 1)
    config, ports = gateway_config(primary, shutdown_grace_seconds=10)
    gateway = Gateway(config)
    await gateway.start()
    upstream_before = metrics.UPSTREAM_CONNECTIONS.labels("primary")._value.get()

    reader, writer = await asyncio.open_connection("127.0.0.1", ports["plain"])
    writer.write(_frame(_long_poll_fetch(topic), 99))
    await writer.drain()
    await asyncio.sleep(0.5)  # the fetch is now waiting upstream (empty partition)
    stopping = asyncio.ensure_future(gateway.stop())

    size = struct.unpack(">i", await asyncio.wait_for(reader.readexactly(4), 10))[0]
    answer = await reader.readexactly(size)
    response = codec.decode_response(1, 12, answer, 4 + 1)
    assert codec.read_correlation_id(answer) == 99
    assert [p.error_code.value for t in response.responses for p in t.partitions] == [0]
    assert await asyncio.wait_for(reader.read(1), 10) == b""  # then the gateway closes
    await asyncio.wait_for(stopping, 15)

    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", ports["plain"])
    assert metrics.UPSTREAM_CONNECTIONS.labels("primary")._value.get() <= upstream_before
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def test_start_with_a_taken_port_names_the_listener_and_leaves_nothing_open(
    primary: dev.ClusterInfo,
) -> None:
    config, ports = gateway_config(primary)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports["sasl"]))
        squatter.listen()
        gateway = Gateway(config)
        with pytest.raises(
            GatewayError, match=f"listener sasl: cannot listen on 127.0.0.1:{ports['sasl']}"
        ):
            await gateway.start()

    # The listener that did start before the failure was closed again.
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", ports["plain"])


async def test_idle_connection_is_closed_but_one_with_an_answer_owed_is_not(
    primary: dev.ClusterInfo, direct: Endpoint
) -> None:
    topic = unique_topic("idle")
    await acreate_topic(direct, topic, 1)
    config, ports = gateway_config(primary, idle_timeout_seconds=1)
    gateway = Gateway(config)
    await gateway.start()
    try:
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", ports["plain"])
        busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", ports["plain"])
        # A long-poll longer than the idle timeout: its answer is owed meanwhile.
        busy_writer.write(_frame(_long_poll_fetch(topic), 5))
        await busy_writer.drain()

        assert await asyncio.wait_for(idle_reader.read(1), 30) == b""
        size = struct.unpack(">i", await asyncio.wait_for(busy_reader.readexactly(4), 30))[0]
        assert codec.read_correlation_id(await busy_reader.readexactly(size)) == 5
        for writer in (idle_writer, busy_writer):
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    finally:
        await gateway.stop()
