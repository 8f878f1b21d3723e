"""The broker connections that serve one client connection, and the one way handlers
reach the active cluster (its layout, coordinators, refreshes and brokers).

A Kafka broker serves one request at a time per connection, so sharing one upstream
socket between clients would let one client's long-polling Fetch stall every other
client's Produce: each client connection gets its own :class:`UpstreamSession`,
opened lazily, one connection per broker it needs. A connection that fails or times
out is closed (its answers would be out of step) and reopened on the next request,
to the address the cluster's current layout gives, and the pool is told so that it
checks the cluster at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka.conn import AIOKafkaConnection

from gateway import metrics
from gateway.errors import MalformedResponse, UpstreamError, UpstreamUnavailable
from gateway.protocol import codec
from gateway.upstream.boundary import map_errors
from gateway.upstream.wire import EncodedRequest

if TYPE_CHECKING:
    from gateway.upstream.coordinators import Coordinators
    from gateway.upstream.pool import ClusterPool
    from gateway.upstream.view import ClusterView


@dataclass(frozen=True, slots=True)
class Reply:
    """An upstream response: decoded, and the body bytes it was decoded from."""

    entity: Any
    data: memoryview


@dataclass(slots=True)
class Unfinished:
    """A request a client stopped waiting for that is still on the wire: what it
    asked, its task, and the timer that drops its answer if nobody takes it."""

    asked: object
    task: asyncio.Task[Any]
    timer: asyncio.TimerHandle | None = None

    def settle(self) -> None:
        """Its answer is taken or superseded: the timer, and with it the last hold on
        the answer, goes."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class UpstreamSession:
    """The broker connections that serve one client connection."""

    def __init__(self, pool: ClusterPool) -> None:
        self.pool = pool
        self._conns: dict[int, AIOKafkaConnection] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._closed = False
        # Per broker, a request this client stopped waiting for that is still on the
        # wire, with what it asked (see gateway.handlers.fetch); cancelled at close.
        self.unfinished: dict[int, Unfinished] = {}

    # What handlers need of the cluster they serve, so that they reach it through this
    # one object (and a later switch of clusters happens behind it).

    @property
    def cluster(self) -> str:
        return self.pool.name

    @property
    def view(self) -> ClusterView:
        return self.pool.view

    @property
    def timeout(self) -> float:
        return self.pool.timeout

    @property
    def coordinators(self) -> Coordinators:
        return self.pool.coordinators

    def any_broker(self) -> int:
        return self.pool.any_broker()

    async def refresh(self) -> None:
        await self.pool.refresh()

    def refresh_soon(self) -> None:
        self.pool.refresh_soon()

    async def connection(self, node_id: int, budget: float | None = None) -> AIOKafkaConnection:
        conn = self._conns.get(node_id)
        if conn is not None and conn.connected():
            return conn
        lock = self._locks.setdefault(node_id, asyncio.Lock())
        async with lock:
            conn = self._conns.get(node_id)
            if conn is not None and conn.connected():
                return conn
            if self._closed:
                raise UpstreamUnavailable("session closed")
            if conn is not None:
                self._forget(node_id)
            address = self.pool.view.brokers.get(node_id)
            if address is None:
                self.pool.report_failure()
                raise UpstreamUnavailable(f"cluster {self.pool.name}: unknown broker {node_id}")
            try:
                conn = await self.pool.connect(*address, budget)
            except UpstreamError:
                # The broker may have moved: the pool re-reads the layout.
                self.pool.report_failure()
                raise
            self._conns[node_id] = conn
            metrics.UPSTREAM_CONNECTIONS.labels(self.pool.name).inc()
            return conn

    def _forget(self, node_id: int) -> None:
        conn = self._conns.pop(node_id, None)
        if conn is not None:
            conn.close()
            metrics.UPSTREAM_CONNECTIONS.labels(self.pool.name).dec()

    def send_now(
        self,
        conn: AIOKafkaConnection,
        request: EncodedRequest,
        expect_response: bool = True,
    ) -> Awaitable[Any]:
        """Write the request to the socket before returning, so that the order of
        calls is the order on the wire; the awaitable yields the response bytes."""
        with map_errors(f"cluster {self.pool.name} send"):
            return conn.send(request, expect_response=expect_response)  # type: ignore[no-any-return]

    async def wait(
        self,
        conn: AIOKafkaConnection,
        pending: Awaitable[Any],
        request: EncodedRequest,
        budget: float,
    ) -> Reply:
        """Await a response sent with :meth:`send_now` and decode it with kio."""
        try:
            with map_errors(f"cluster {self.pool.name} api_key={request.api_key}"):
                async with asyncio.timeout(budget):
                    data = await pending
            return Reply(codec.decode_response(request.api_key, request.api_version, data, 0), data)
        except UpstreamError as exc:
            cluster, api = self.pool.name, str(request.api_key)
            metrics.UPSTREAM_ERRORS.labels(cluster, api).inc()
            if isinstance(exc, MalformedResponse):
                metrics.UPSTREAM_MALFORMED.labels(cluster, api).inc()
            else:
                self.pool.report_failure()
            # A request that failed leaves the connection out of step with its
            # responses; start afresh on the next request.
            conn.close()
            raise

    async def send_on(
        self, conn: AIOKafkaConnection, entity: Any, client_id: str | None, budget: float
    ) -> Any:
        request = EncodedRequest.of(entity, client_id)
        reply = await self.wait(conn, self.send_now(conn, request), request, budget)
        return reply.entity

    async def request(
        self, node_id: int | None, entity: Any, client_id: str | None, budget: float
    ) -> Any:
        """Send one request to a broker (any broker when ``node_id`` is None)."""
        return (
            await self.request_reply(node_id, EncodedRequest.of(entity, client_id), budget)
        ).entity

    async def request_reply(
        self, node_id: int | None, request: EncodedRequest, budget: float
    ) -> Reply:
        """Send an encoded request; the reply keeps the response's bytes."""
        conn = await self.connection(self.pool.any_broker() if node_id is None else node_id)
        return await self.wait(conn, self.send_now(conn, request), request, budget)

    def reset(self) -> None:
        """Close every connection; the next request opens new ones."""
        for node_id in list(self._conns):
            self._forget(node_id)

    async def close(self) -> None:
        self._closed = True
        for entry in self.unfinished.values():
            entry.task.cancel()
            entry.settle()
        self.unfinished.clear()
        self.reset()
