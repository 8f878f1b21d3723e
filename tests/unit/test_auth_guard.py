"""AuthGuard: credential checks off the event loop within a per-address share of the
workers, failures limited per address in a sliding minute, a delay on every failure,
and bounded memory however many addresses try.

Checks run on real worker threads, held by ``threading.Event`` gates; waiting for
threads is bounded polling, never a timing assertion.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from gateway.errors import AuthenticationFailed
from gateway.identity.guard import AuthGuard
from tests.unit.harness import settle


class Checks:
    """A credential check that blocks in its worker thread until the test opens a gate."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self._lock = threading.Lock()
        self.running: dict[str, int] = {}
        self.started: dict[str, int] = {}

    def check(self, address: str) -> bool:
        with self._lock:
            self.running[address] = self.running.get(address, 0) + 1
            self.started[address] = self.started.get(address, 0) + 1
        self.gate.wait(10)
        with self._lock:
            self.running[address] -= 1
        return True


async def until(condition: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.005)
    assert condition(), what


def guard(**kwargs: object) -> AuthGuard:
    settings: dict[str, object] = {
        "workers": 4,
        "per_address": 2,
        "failures_per_minute": 5,
        "delay": 0.0,
    }
    settings.update(kwargs)
    return AuthGuard(**settings)  # type: ignore[arg-type]


async def test_one_address_gets_only_its_share_of_the_workers_and_others_keep_theirs() -> None:
    checks = Checks()
    g = guard()
    try:
        flood = [
            asyncio.ensure_future(g.run("10.0.0.66", checks.check, "10.0.0.66")) for _ in range(20)
        ]
        other = asyncio.ensure_future(g.run("10.0.0.1", checks.check, "10.0.0.1"))
        await until(lambda: checks.running.get("10.0.0.1") == 1, "the other address checked")
        await settle()
        assert checks.running["10.0.0.66"] == 2

        checks.gate.set()
        assert all(await asyncio.gather(*flood, other))
        assert checks.started["10.0.0.66"] == 20
    finally:
        checks.gate.set()
        g.close()


async def test_a_check_keeps_its_slot_until_its_thread_is_done_even_if_its_caller_left() -> None:
    checks = Checks()
    g = guard(per_address=1)
    try:
        left = asyncio.ensure_future(g.run("10.0.0.66", checks.check, "10.0.0.66"))
        await until(lambda: checks.running.get("10.0.0.66") == 1, "the first check running")
        left.cancel()  # the client closed its connection
        second = asyncio.ensure_future(g.run("10.0.0.66", checks.check, "10.0.0.66"))
        await asyncio.sleep(0.05)
        await settle()
        assert checks.started["10.0.0.66"] == 1, "a second check ran beside the abandoned one"

        checks.gate.set()
        assert await second
        assert checks.started["10.0.0.66"] == 2
    finally:
        checks.gate.set()
        g.close()


async def test_the_check_runs_off_the_event_loop() -> None:
    checks = Checks()
    g = guard()
    try:
        running = asyncio.ensure_future(g.run("10.0.0.1", checks.check, "10.0.0.1"))
        await until(lambda: checks.running.get("10.0.0.1") == 1, "the check running")
        # The loop keeps turning while the check blocks its thread.
        turns = 0
        for _ in range(100):
            await asyncio.sleep(0)
            turns += 1
        assert turns == 100 and not running.done()
        checks.gate.set()
        assert await running
    finally:
        checks.gate.set()
        g.close()


async def test_an_address_over_its_failures_is_refused_unchecked_until_the_minute_passes() -> None:
    now = [1000.0]
    g = guard(failures_per_minute=3, clock=lambda: now[0])
    try:
        for _ in range(3):
            g.check_allowed("10.0.0.66")
            await g.failed("10.0.0.66")
        with pytest.raises(AuthenticationFailed) as refused:
            g.check_allowed("10.0.0.66")
        assert refused.value.reason == "rate_limited"
        checked: list[str] = []
        with pytest.raises(AuthenticationFailed):
            await g.run("10.0.0.66", checked.append, "checked")
        assert checked == []
        g.check_allowed("10.0.0.1")  # another address is not affected

        now[0] += 61
        g.check_allowed("10.0.0.66")
    finally:
        g.close()


async def test_failures_older_than_a_minute_no_longer_count() -> None:
    now = [1000.0]
    g = guard(failures_per_minute=3, clock=lambda: now[0])
    try:
        await g.failed("10.0.0.66")
        await g.failed("10.0.0.66")
        now[0] += 45
        await g.failed("10.0.0.66")
        with pytest.raises(AuthenticationFailed):
            g.check_allowed("10.0.0.66")
        now[0] += 20  # the first two are now more than a minute old
        g.check_allowed("10.0.0.66")
        await g.failed("10.0.0.66")
        await g.failed("10.0.0.66")
        with pytest.raises(AuthenticationFailed):
            g.check_allowed("10.0.0.66")
    finally:
        g.close()


async def test_attempts_queued_before_the_limit_was_reached_are_refused_unchecked() -> None:
    checks = Checks()
    g = guard(per_address=1, failures_per_minute=1)
    try:
        first = asyncio.ensure_future(g.run("10.0.0.66", checks.check, "10.0.0.66"))
        await until(lambda: checks.running.get("10.0.0.66") == 1, "the first check running")
        queued = [
            asyncio.ensure_future(g.run("10.0.0.66", checks.check, "10.0.0.66")) for _ in range(10)
        ]
        await g.failed("10.0.0.66")  # some earlier attempt failed meanwhile
        checks.gate.set()
        assert await first
        results = await asyncio.gather(*queued, return_exceptions=True)
        assert all(isinstance(r, AuthenticationFailed) for r in results)
        assert checks.started["10.0.0.66"] == 1
    finally:
        checks.gate.set()
        g.close()


async def test_a_failure_is_answered_only_after_the_delay() -> None:
    g = guard(delay=3600.0)
    try:
        waiting = asyncio.ensure_future(g.failed("10.0.0.66"))
        await asyncio.sleep(0.05)
        await settle()
        assert not waiting.done()
        waiting.cancel()
    finally:
        g.close()


async def test_memory_stays_bounded_however_many_addresses_fail() -> None:
    g = guard(max_tracked=100, failures_per_minute=1)
    try:
        for n in range(5000):
            await g.failed(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
        assert g.tracked == 100
        # The most recent sources are the ones remembered.
        with pytest.raises(AuthenticationFailed):
            g.check_allowed(f"10.0.{4999 // 256}.{4999 % 256}")
        g.check_allowed("10.0.0.0")
    finally:
        g.close()
