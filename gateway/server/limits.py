"""Gateway-wide limits on what clients can make the gateway hold.

- :class:`RequestBudget`: the bytes of requests being read or handled, for all
  connections together (Kafka's ``queued.max.request.bytes`` memory pool). A
  connection reserves a frame's size as soon as its size prefix has arrived and before
  reading its body; while the budget is spent it stops reading, so the bytes wait in
  the kernel and the client, not in the gateway.
- :class:`AddressLimit`: open connections per source address (Kafka's
  ``max.connections.per.ip``), refused at accept with one log line per interval
  rather than one per connection.

Per-connection deadlines (authentication, frame completion, idle) live with the
connection in :mod:`gateway.server.connection`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable

from gateway import metrics

log = logging.getLogger(__name__)


class RequestBudget:
    """Bytes reserved for requests, granted first come, first served.

    A frame larger than the whole budget reserves the whole budget, so it can still
    pass, alone. Waiters are served in arrival order: a large frame is not starved by
    a stream of small ones.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.available = total
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    @property
    def reserved(self) -> int:
        return self.total - self.available

    def _granted(self, amount: int) -> None:
        self.available -= amount
        metrics.REQUEST_BYTES_RESERVED.set(self.reserved)

    def try_reserve(self, size: int) -> int | None:
        """Reserve at once if nobody is waiting and it fits: the amount held, else None."""
        amount = min(size, self.total)
        if self._waiters or amount > self.available:
            return None
        self._granted(amount)
        return amount

    async def reserve(self, size: int) -> int:
        """Wait until ``size`` bytes (at most the whole budget) are free, take them and
        return the amount held; give it back with :meth:`release`."""
        held = self.try_reserve(size)
        if held is not None:
            return held
        amount = min(size, self.total)
        metrics.REQUEST_BUDGET_WAITS.inc()
        waiter = (amount, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            await waiter[1]
        except asyncio.CancelledError:
            if waiter[1].done() and not waiter[1].cancelled():
                self.release(amount)  # granted, but the waiter left before using it
            else:
                self._waiters.remove(waiter)
                self._wake()  # the waiters behind it may fit now
            raise
        return amount

    def release(self, amount: int) -> None:
        if amount <= 0:
            return
        self.available += amount
        metrics.REQUEST_BYTES_RESERVED.set(self.reserved)
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._waiters[0][0] <= self.available:
            amount, future = self._waiters.popleft()
            if not future.done():
                self._granted(amount)
                future.set_result(None)


class AddressLimit:
    """Counts open connections per source address and refuses those over the limit."""

    def __init__(
        self,
        per_address: int,
        log_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_address = per_address
        self._open: dict[str, int] = {}
        self._log_interval = log_interval
        self._clock = clock
        self._last_logged: float | None = None
        self._unlogged = 0

    def open_from(self, address: str) -> int:
        return self._open.get(address, 0)

    def admit(self, listener: str, address: str) -> bool:
        """Count a new connection from ``address``; False (counted in
        ``gateway_connections_refused_total``) when it would exceed the limit."""
        count = self._open.get(address, 0)
        if count >= self.per_address:
            metrics.CONNECTIONS_REFUSED.labels(listener, "too many connections").inc()
            self._log_refusal(address)
            return False
        self._open[address] = count + 1
        return True

    def release(self, address: str) -> None:
        count = self._open.get(address, 0) - 1
        if count > 0:
            self._open[address] = count
        else:
            # Only addresses with open connections are kept: memory follows open sockets.
            self._open.pop(address, None)

    def _log_refusal(self, address: str) -> None:
        # A flood of connections must not become a flood of log lines.
        now = self._clock()
        self._unlogged += 1
        if self._last_logged is not None and now - self._last_logged < self._log_interval:
            return
        log.warning(
            "refusing connections from %s: %d open, the limit per address; %d refused "
            "since the last such line",
            address,
            self.per_address,
            self._unlogged,
        )
        self._last_logged = now
        self._unlogged = 0
