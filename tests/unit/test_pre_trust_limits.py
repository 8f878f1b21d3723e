"""Bounded memory and time before trust: the request byte budget, the authentication,
frame and idle deadlines of a connection, and the per-address connection limit.

The budget and the address limit are tested on their own and through a real
``ClientConnection`` (see :mod:`tests.unit.harness`); deadlines use timeouts of a few
tens of milliseconds and wait for the connection to end, never asserting how long
anything took.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

import pytest
from kio.schema.api_versions.v3 import request as api_versions_request
from prometheus_client import REGISTRY

from gateway.protocol.framing import FrameDecoder, frame
from gateway.server.connection import LOOKAHEAD
from gateway.server.limits import AddressLimit, RequestBudget
from tests.unit.harness import Harness, eventually, request_frame, settle
from tests.unit.test_client_connection import produce, produced, with_layout

SASL_LISTENER = {"listener": {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanisms": ["PLAIN"]}}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def api_versions() -> Any:
    return api_versions_request.ApiVersionsRequest(
        client_software_name="limits", client_software_version="1"
    )


def frames_written(h: Harness) -> int:
    """How many response frames the gateway wrote (for requests fed as raw bytes)."""
    data, count, offset = h.client.writer.data, 0, 0
    while offset + 4 <= len(data):
        offset += 4 + struct.unpack_from(">i", data, offset)[0]
        count += 1
    return count


async def ended(h: Harness) -> str:
    """Wait for the connection to end by itself; the reason it gave."""
    async with asyncio.timeout(5):
        await asyncio.shield(h.served)
    return h.connection.close_reason


# -- the frame decoder tells the size before the body -----------------------------------


def test_decoder_reports_a_frames_size_once_its_prefix_is_in_and_counts_what_is_missing() -> None:
    decoder = FrameDecoder(1000)
    data = frame(b"x" * 300)

    decoder.receive(data[:2])
    assert decoder.pending_size() is None
    assert decoder.missing == 2  # of the size prefix
    decoder.receive(data[2:54])
    assert decoder.pending_size() == 300
    assert decoder.missing == 250
    assert decoder.next_frame() is None
    decoder.receive(data[54:])
    assert decoder.missing == 0
    assert decoder.next_frame() == b"x" * 300
    assert decoder.pending_size() is None
    assert decoder.missing == 0


# -- the request byte budget ------------------------------------------------------------


async def test_budget_grants_in_arrival_order_and_a_large_request_is_not_overtaken() -> None:
    budget = RequestBudget(100)
    assert budget.try_reserve(80) == 80
    large = asyncio.ensure_future(budget.reserve(60))
    await settle()
    # 20 bytes are free, but the large request waits first: the small one queues behind.
    assert budget.try_reserve(10) is None
    small = asyncio.ensure_future(budget.reserve(10))
    await settle()
    assert not large.done() and not small.done()

    budget.release(80)
    assert await large == 60
    assert await small == 10
    assert budget.reserved == 70


async def test_a_frame_larger_than_the_whole_budget_reserves_all_of_it_and_passes_alone() -> None:
    budget = RequestBudget(100)
    assert budget.try_reserve(10) == 10
    huge = asyncio.ensure_future(budget.reserve(5000))
    await settle()
    assert not huge.done()

    budget.release(10)
    assert await huge == 100
    assert budget.available == 0


async def test_a_waiter_that_leaves_lets_the_ones_behind_it_through() -> None:
    budget = RequestBudget(100)
    assert budget.try_reserve(50) == 50
    blocked = asyncio.ensure_future(budget.reserve(100))
    behind = asyncio.ensure_future(budget.reserve(40))
    await settle()
    assert not behind.done()

    blocked.cancel()
    assert await behind == 40
    assert budget.reserved == 90


async def test_a_grant_to_a_waiter_cancelled_before_it_ran_goes_back_to_the_budget() -> None:
    budget = RequestBudget(100)
    assert budget.try_reserve(100) == 100
    waiter = asyncio.ensure_future(budget.reserve(30))
    await settle()
    budget.release(100)  # grants the waiter's 30 ...
    waiter.cancel()  # ... which is cancelled before it could use them
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert budget.reserved == 0


async def test_budget_metrics_show_the_bytes_reserved_and_count_waits() -> None:
    waits = sample("gateway_request_budget_waits_total")
    budget = RequestBudget(100)
    assert budget.try_reserve(70) == 70
    assert sample("gateway_request_bytes_reserved") == 70
    waiter = asyncio.ensure_future(budget.reserve(50))
    await settle()
    assert sample("gateway_request_budget_waits_total") == waits + 1

    budget.release(70)
    await waiter
    assert sample("gateway_request_bytes_reserved") == 50


# -- the budget on a connection ---------------------------------------------------------


async def test_a_request_is_not_dispatched_while_the_budget_is_spent_and_is_once_it_frees() -> None:
    budget = RequestBudget(1000)
    held = budget.try_reserve(1000)
    assert held == 1000
    async with Harness(budget=budget) as h:
        asked = h.client.send(api_versions())
        await settle()
        assert h.client.answers() == []

        budget.release(held)
        answers = await h.answers(1)
        assert [a.correlation_id for a in answers] == asked
        await eventually(lambda: budget.reserved == 0, "the reservation released")


async def test_a_connection_waiting_for_the_budget_reads_no_more_than_the_lookahead() -> None:
    budget = RequestBudget(1 << 20)
    held = budget.try_reserve(1 << 20)
    assert held is not None
    async with Harness(budget=budget) as h:
        # A frame declared as 50 MiB of which 4 MiB are already sent.
        h.client.reader.feed_data(struct.pack(">i", 50 << 20) + b"\x00" * (4 << 20))
        await settle()
        assert h.connection.session.protocol.buffered <= LOOKAHEAD
        budget.release(held)


async def test_a_requests_reservation_is_held_until_it_is_answered() -> None:
    budget = RequestBudget(1 << 20)
    async with Harness(budget=budget) as h:
        with_layout(h.pool)
        request = produce()
        size = len(request_frame(request, 1)) - 4
        h.client.send(request)
        (sent,) = await h.sends(1)
        assert budget.reserved == size

        sent.reply(produced(sent.body))
        await h.answers(1)
        await eventually(lambda: budget.reserved == 0, "the reservation released")


async def test_a_partial_frames_reservation_is_released_when_the_client_leaves() -> None:
    budget = RequestBudget(1 << 20)
    async with Harness(budget=budget) as h:
        h.client.reader.feed_data(struct.pack(">i", 5000) + b"\x00" * 100)
        await eventually(lambda: budget.reserved == 5000, "the frame's size reserved")
    assert budget.reserved == 0


async def test_pipelined_requests_each_reserve_and_all_is_released_after_their_answers() -> None:
    budget = RequestBudget(1 << 20)
    async with Harness(budget=budget) as h:
        with_layout(h.pool)
        h.client.send(produce(), produce(), produce())
        sent = await h.sends(3)
        assert budget.reserved == 3 * (len(request_frame(produce(), 1)) - 4)
        for s in sent:
            s.reply(produced(s.body))
        await h.answers(3)
        await eventually(lambda: budget.reserved == 0, "the reservations released")


# -- deadlines --------------------------------------------------------------------------


async def test_a_connection_that_does_not_authenticate_in_time_is_closed() -> None:
    closed = sample(
        "gateway_connections_closed_total", listener="harness", reason="authentication timeout"
    )
    async with Harness(
        limits={"authentication_timeout_seconds": 0.05}, overrides=SASL_LISTENER
    ) as h:
        h.client.send(api_versions())  # talking is not authenticating
        assert await ended(h) == "authentication timeout"
    assert (
        sample(
            "gateway_connections_closed_total",
            listener="harness",
            reason="authentication timeout",
        )
        == closed + 1
    )


async def test_the_authentication_deadline_counts_from_the_accept_not_from_serving() -> None:
    # A TLS listener serves a connection only after its handshake: the handshake's
    # time counts against the deadline too.
    long_ago = asyncio.get_running_loop().time() - 60
    async with Harness(
        limits={"authentication_timeout_seconds": 30}, overrides=SASL_LISTENER, accepted=long_ago
    ) as h:
        assert await ended(h) == "authentication timeout"


async def test_an_authenticated_connection_outlives_the_authentication_deadline() -> None:
    # A PLAINTEXT listener's connections are authenticated (anonymous) from the start.
    async with Harness(limits={"authentication_timeout_seconds": 0.01}) as h:
        await asyncio.sleep(0.1)
        assert h.is_open
        asked = h.client.send(api_versions())
        assert [a.correlation_id for a in await h.answers(1)] == asked


async def test_a_frame_not_completed_in_time_closes_the_connection() -> None:
    async with Harness(limits={"frame_timeout_seconds": 0.05}) as h:
        data = request_frame(api_versions(), 1)
        h.client.reader.feed_data(data[:-1])
        assert await ended(h) == "frame timeout"
        assert h.client.answers() == []


async def test_a_partial_size_prefix_also_runs_the_frame_deadline() -> None:
    async with Harness(limits={"frame_timeout_seconds": 0.05}) as h:
        h.client.reader.feed_data(b"\x00\x00")
        assert await ended(h) == "frame timeout"


async def test_the_frame_deadline_starts_again_with_each_frame() -> None:
    async with Harness(limits={"frame_timeout_seconds": 0.2}) as h:
        first, second = request_frame(api_versions(), 1), request_frame(api_versions(), 2)
        h.client.reader.feed_data(first[:5])
        await asyncio.sleep(0.05)
        h.client.reader.feed_data(first[5:])
        await eventually(lambda: frames_written(h) == 1, "the first answer")
        # Between frames nothing runs: a quiet connection is the idle timer's business.
        await asyncio.sleep(0.3)
        assert h.is_open
        h.client.reader.feed_data(second)
        await eventually(lambda: frames_written(h) == 2, "the second answer")


async def test_waiting_for_the_budget_does_not_count_against_the_frame_deadline() -> None:
    budget = RequestBudget(1000)
    held = budget.try_reserve(1000)
    assert held is not None
    async with Harness(limits={"frame_timeout_seconds": 0.05}, budget=budget) as h:
        asked = h.client.send(api_versions())
        await asyncio.sleep(0.2)  # the gateway's wait, not the client's delay
        assert h.is_open
        budget.release(held)
        assert [a.correlation_id for a in await h.answers(1)] == asked


async def test_a_quiet_connection_is_closed_at_the_idle_timeout() -> None:
    async with Harness(limits={"idle_timeout_seconds": 0.05}) as h:
        assert await ended(h) == "idle timeout"


async def test_a_connection_owing_an_answer_is_not_idle() -> None:
    async with Harness(limits={"idle_timeout_seconds": 0.05}) as h:
        with_layout(h.pool)
        h.client.send(produce())
        (sent,) = await h.sends(1)
        await asyncio.sleep(0.2)
        assert h.is_open
        sent.reply(produced(sent.body))
        await h.answers(1)


# -- connections per address ------------------------------------------------------------


def test_connections_over_the_per_address_limit_are_refused_and_counted() -> None:
    refused = sample(
        "gateway_connections_refused_total", listener="l1", reason="too many connections"
    )
    limit = AddressLimit(2)
    assert limit.admit("l1", "192.0.2.1")
    assert limit.admit("l1", "192.0.2.1")
    assert not limit.admit("l1", "192.0.2.1")
    assert limit.admit("l1", "192.0.2.2")  # another address has its own count
    assert (
        sample("gateway_connections_refused_total", listener="l1", reason="too many connections")
        == refused + 1
    )

    limit.release("192.0.2.1")
    assert limit.admit("l1", "192.0.2.1")


def test_only_addresses_with_open_connections_are_remembered() -> None:
    limit = AddressLimit(5)
    for n in range(1000):
        assert limit.admit("l1", f"10.0.{n // 256}.{n % 256}")
        limit.release(f"10.0.{n // 256}.{n % 256}")
    assert limit._open == {}


def test_refusals_are_logged_once_per_interval_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    limit = AddressLimit(1, log_interval=60, clock=lambda: now[0])
    assert limit.admit("l1", "192.0.2.9")
    with caplog.at_level(logging.WARNING, logger="gateway.server.limits"):
        for _ in range(500):
            assert not limit.admit("l1", "192.0.2.9")
        now[0] = 61.0
        assert not limit.admit("l1", "192.0.2.9")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "192.0.2.9" in lines[0] and "1 refused" in lines[0]
    assert "500 refused" in lines[1]


class Transport:
    """The socket transport's reading switch, as a connection waiting for the budget
    flips it."""

    def __init__(self) -> None:
        self.reading = True
        self.flips: list[str] = []

    def is_reading(self) -> bool:
        return self.reading

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        self.reading = False
        self.flips.append("pause")

    def resume_reading(self) -> None:
        self.reading = True
        self.flips.append("resume")


async def test_a_connection_waiting_for_the_budget_stops_its_transport_until_granted() -> None:
    budget = RequestBudget(1000)
    held = budget.try_reserve(1000)
    assert held is not None
    async with Harness(budget=budget) as h:
        transport = Transport()
        h.client.writer.transport = transport  # type: ignore[attr-defined]
        asked = h.client.send(api_versions())
        await settle()
        assert transport.flips == ["pause"]

        budget.release(held)
        assert [a.correlation_id for a in await h.answers(1)] == asked
        assert transport.flips == ["pause", "resume"]


async def test_a_transport_the_stream_reader_paused_is_left_for_it_to_resume() -> None:
    budget = RequestBudget(1000)
    held = budget.try_reserve(1000)
    assert held is not None
    async with Harness(budget=budget) as h:
        transport = Transport()
        transport.reading = False  # the stream reader's buffer is full
        h.client.writer.transport = transport  # type: ignore[attr-defined]
        h.client.send(api_versions())
        await settle()
        budget.release(held)
        await h.answers(1)
        assert transport.flips == []
