"""Graceful shutdown: stop accepting, answer what is owed, close upstream connections."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import REGISTRY

from gateway import dev
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


def _long_poll_fetch(topic: str, max_wait: float = 2) -> Any:
    module = codec.entity_module(codec.request_schema(1, 12))
    return codec.build(
        module.FetchRequest,
        max_wait=datetime.timedelta(seconds=max_wait),
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


@dataclass(frozen=True)
class _Sample:
    """One sample of this process's metrics (every in-process gateway shares them)."""

    name: str
    labels: tuple[tuple[str, str], ...]

    def value(self) -> float:
        return REGISTRY.get_sample_value(self.name, dict(self.labels)) or 0.0


async def _until(condition: Callable[[], bool], timeout: float = 10) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` passes (False)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(0.01)
    return True


UPSTREAM = _Sample("gateway_upstream_connections_open", (("cluster", "primary"),))
PLAIN_OPEN = _Sample(
    "gateway_connections_open", (("listener", "plain"), ("security_protocol", "PLAINTEXT"))
)
SASL_OPEN = _Sample(
    "gateway_connections_open", (("listener", "sasl"), ("security_protocol", "SASL_PLAINTEXT"))
)
PLAIN_RECEIVED = _Sample("gateway_bytes_received_total", (("listener", "plain"),))
CLOSED_BY_SHUTDOWN = _Sample(
    "gateway_connections_closed_total", (("listener", "plain"), ("reason", "shutdown"))
)
CLOSED_IDLE = _Sample(
    "gateway_connections_closed_total", (("listener", "plain"), ("reason", "idle timeout"))
)


async def _no_client_connections() -> None:
    """Wait until every in-process gateway's client connections are closed.

    A client connection gives its upstream connections back only once the gateway has
    finished with it, which for a long-polling client of an earlier test can be after
    that test ended; the gauges are shared by every gateway of the process.
    """
    assert await _until(lambda: PLAIN_OPEN.value() == SASL_OPEN.value() == 0, timeout=30), (
        f"client connections of earlier tests still open: {PLAIN_OPEN.value()} plain, "
        f"{SASL_OPEN.value()} sasl"
    )


async def _until_fetchable(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, topic: str
) -> None:
    """Send zero-wait Fetches for ``topic`` until one is answered without error."""
    deadline = asyncio.get_running_loop().time() + 30
    errors: list[int] = []
    for correlation_id in range(1000, 2000):
        writer.write(_frame(_long_poll_fetch(topic, max_wait=0), correlation_id))
        await writer.drain()
        size = struct.unpack(">i", await asyncio.wait_for(reader.readexactly(4), 10))[0]
        response = codec.decode_response(1, 12, await reader.readexactly(size), 4 + 1)
        errors = [p.error_code.value for t in response.responses for p in t.partitions]
        if errors == [0]:
            return
        assert asyncio.get_running_loop().time() < deadline, f"Fetch errors {errors}"
        await asyncio.sleep(0.2)
    raise AssertionError(f"Fetch errors {errors}")


async def test_stop_answers_an_in_flight_fetch_then_refuses_new_connections(
    primary: dev.ClusterInfo, direct: Endpoint
) -> None:
    topic = unique_topic("shutdown")
    await acreate_topic(direct, topic, 1)
    config, ports = gateway_config(primary, shutdown_grace_seconds=10)
    await _no_client_connections()
    upstream_before, closed_before = UPSTREAM.value(), CLOSED_BY_SHUTDOWN.value()
    gateway = Gateway(config)
    await gateway.start()
    upstream_started = UPSTREAM.value()

    reader, writer = await asyncio.open_connection("127.0.0.1", ports["plain"])
    stopping: asyncio.Future[None] | None = None
    try:
        # With three nodes, the gateway's metadata or the partition's leader itself may
        # not know a topic created a moment ago: fetch without waiting until the leader
        # answers for it, so that the long poll below stays in flight there. This also
        # opens the client's own connection to the leader.
        await _until_fetchable(reader, writer, topic)
        received = PLAIN_RECEIVED.value()
        fetch = _frame(_long_poll_fetch(topic), 99)
        writer.write(fetch)
        await writer.drain()
        # In flight: the gateway has read the whole request and holds this client's own
        # connection to the partition's leader (the empty partition keeps it there; the
        # warm-up may have opened one to another broker too, while routes settled).
        assert await _until(
            lambda: (
                PLAIN_RECEIVED.value() == received + len(fetch)
                and UPSTREAM.value() > upstream_started
            )
        ), (
            f"received {PLAIN_RECEIVED.value() - received} of {len(fetch)} bytes, "
            f"upstream connections {UPSTREAM.value()} (at start {upstream_started})"
        )
        stopping = asyncio.ensure_future(gateway.stop())

        size = struct.unpack(">i", await asyncio.wait_for(reader.readexactly(4), 10))[0]
        answer = await reader.readexactly(size)
        response = codec.decode_response(1, 12, answer, 4 + 1)
        assert codec.read_correlation_id(answer) == 99
        assert [p.error_code.value for t in response.responses for p in t.partitions] == [0]
        assert await asyncio.wait_for(reader.read(1), 10) == b""  # then the gateway closes
        await asyncio.wait_for(stopping, 15)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        if stopping is None:  # the test failed before stopping the gateway
            await gateway.stop()

    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", ports["plain"])
    # Every connection this gateway opened, upstream and client, is closed and counted.
    assert UPSTREAM.value() == upstream_before
    assert PLAIN_OPEN.value() == 0
    assert CLOSED_BY_SHUTDOWN.value() == closed_before + 1


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
    await _no_client_connections()
    idle_closed = CLOSED_IDLE.value()
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
        # Only the idle connection was closed for idleness.
        assert CLOSED_IDLE.value() == idle_closed + 1
        for writer in (idle_writer, busy_writer):
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    finally:
        await gateway.stop()
