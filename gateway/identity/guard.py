"""Failed authentications cost the caller, not the gateway.

Credential checks that burn CPU (password hashing, signature checks) run on a small
shared thread pool, never on the event loop, and at most ``per_address`` of them run
at once for one IP address, so one source flooding wrong passwords waits in its own
line while others keep theirs. A source with more than ``failures_per_minute``
failures is refused without checking anything until the minute has passed, and every
failure is answered only after ``delay`` seconds (Kafka's
``connection.failed.authentication.delay.ms``), holding the attacker's connection
rather than the gateway's CPU. A check whose caller went away (the client closed its
connection) keeps its address's slot until its thread is done, so closing connections
early does not buy a source more than its share of the workers. At most
``max_tracked`` addresses are remembered, the least recently seen forgotten first.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import time
from collections.abc import Callable
from typing import TypeVar

from gateway.errors import AuthenticationFailed

T = TypeVar("T")

_WINDOW = 60.0


class _Address:
    __slots__ = ("failures", "running")

    def __init__(self, per_address: int, failures_kept: int) -> None:
        self.running = asyncio.Semaphore(per_address)
        # Only whether the last N failures all fall in the window matters: keep N.
        self.failures: collections.deque[float] = collections.deque(maxlen=failures_kept)


class AuthGuard:
    def __init__(
        self,
        workers: int,
        per_address: int,
        failures_per_minute: int,
        delay: float,
        clock: Callable[[], float] = time.monotonic,
        max_tracked: int = 10_000,
    ) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, "auth-check")
        self._per_address = per_address
        self._failures_per_minute = failures_per_minute
        self.delay = delay
        self._clock = clock
        self._max_tracked = max_tracked
        self._addresses: collections.OrderedDict[str, _Address] = collections.OrderedDict()

    def _entry(self, address: str) -> _Address:
        entry = self._addresses.get(address)
        if entry is None:
            entry = self._addresses[address] = _Address(
                self._per_address, self._failures_per_minute
            )
            while len(self._addresses) > self._max_tracked:
                self._addresses.popitem(last=False)
        else:
            self._addresses.move_to_end(address)
        return entry

    def _recent_failures(self, entry: _Address) -> int:
        horizon = self._clock() - _WINDOW
        while entry.failures and entry.failures[0] < horizon:
            entry.failures.popleft()
        return len(entry.failures)

    def check_allowed(self, address: str) -> None:
        """Raise AuthenticationFailed (reason ``rate_limited``) when ``address`` used up
        its failures for the last minute."""
        entry = self._addresses.get(address)
        if entry is not None and self._recent_failures(entry) >= self._failures_per_minute:
            raise AuthenticationFailed(
                f"{address} had {self._failures_per_minute} failed authentications in the "
                "last minute",
                reason="rate_limited",
            )

    async def run(self, address: str, check: Callable[..., T], *args: object) -> T:
        """Run a CPU-heavy ``check(*args)`` off the event loop, within ``address``'s share."""
        self.check_allowed(address)
        entry = self._entry(address)
        await entry.running.acquire()
        loop = asyncio.get_running_loop()
        try:
            # Attempts that queued behind this address's share before it ran out of
            # failures are refused here, unchecked.
            self.check_allowed(address)
            job = self._pool.submit(check, *args)
        except BaseException:
            entry.running.release()
            raise

        def finished(_: object) -> None:
            # Runs in the worker thread (or here, when a queued job is cancelled).
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(entry.running.release)

        job.add_done_callback(finished)
        # Cancelling the wait cancels a job still queued; a running one holds the slot.
        return await asyncio.wrap_future(job)

    @property
    def tracked(self) -> int:
        """How many addresses are remembered."""
        return len(self._addresses)

    async def failed(self, address: str) -> None:
        """Count a failure from ``address`` and wait out the failure delay."""
        self._entry(address).failures.append(self._clock())
        if self.delay > 0:
            await asyncio.sleep(self.delay)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
