"""One client connection: read frames, dispatch requests, write responses in order.

Requests are handled concurrently once the client has authenticated; responses are
written strictly in request order. Back-pressure works both ways: reading pauses
while ``max_in_flight_requests`` responses are owed, and writing waits for the
client to drain its socket. Before authentication requests are handled one at a
time, because each may change what the next frame is allowed to be.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
from typing import Any

from kio.schema.errors import ErrorCode
from kio.schema.index import api_key_map

from gateway import metrics
from gateway.errors import GatewayError, ProtocolError, UpstreamError, UpstreamRefused
from gateway.handlers import HANDLERS, sasl
from gateway.protocol import codec, framing, items
from gateway.protocol.codec import Chunk, EncodedBody, Request
from gateway.protocol.connection import (
    AnswerReady,
    Event,
    RequestReceived,
    SaslTokenReceived,
    ServerProtocol,
)
from gateway.protocol.versions import SASL_AUTHENTICATE, SASL_HANDSHAKE
from gateway.session import ClientSession

log = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024
Owed = asyncio.Future[list[Chunk] | None]


@functools.cache
def api_name(api_key: int) -> str:
    """Kafka's name for an API (``ListOffsets``), for metric labels and logs."""
    snake = api_key_map.get(api_key)
    if snake is None:
        return f"Api{api_key}"
    return "".join(part.title() for part in snake.split("_"))


@functools.cache
def _request_metrics(api_key: int, api_version: int, outcome: str) -> tuple[Any, Any]:
    name = api_name(api_key)
    return (
        metrics.REQUESTS.labels(name, str(api_version), outcome),
        metrics.REQUEST_LATENCY.labels(name),
    )


class SessionExpired(GatewayError):
    """The connection's session lifetime passed without re-authentication."""


def _reauthenticating(event: Event) -> bool:
    return isinstance(event, RequestReceived) and event.request.api_key in (
        SASL_HANDSHAKE,
        SASL_AUTHENTICATE,
    )


def _upstream_failure(request: Request, exc: UpstreamError) -> Any:
    """The answer to a request the upstream could not serve. The cluster's own refusal
    (UpstreamRefused) is passed on; anything else is the retriable error a broker
    gives for that API when its leader, coordinator or controller is away (None for
    an acks=0 Produce). The cluster state that explains it is logged once by the
    health checks."""
    log.debug("api_key=%d answered with errors: %s", request.api_key, exc)
    if isinstance(exc, UpstreamRefused):
        code = ErrorCode(exc.error_code)
        return items.error_response(request.body, code, code.name)
    code = items.unavailable_error(request.api_key)
    return items.error_response(request.body, code, "the cluster is not reachable; retry")


class ClientConnection:
    """Serves one accepted socket until the client leaves, errs or the gateway stops."""

    def __init__(
        self,
        session: ClientSession,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.session = session
        self.reader = reader
        self.writer = writer
        self.listener = session.listener.name
        limits = session.services.config.limits
        self._owed: collections.deque[Owed] = collections.deque()
        self._owed_changed = asyncio.Event()
        self._slots = asyncio.Semaphore(limits.max_in_flight_requests)
        self._idle_timeout = limits.idle_timeout_seconds
        self._reading_done = False
        self._reading: asyncio.Future[None] | None = None
        self._last_read = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self.close_reason = "client closed"

    def stop_reading(self) -> None:
        """Take no more requests; :meth:`serve` then answers what is owed and returns."""
        self.close_reason = "shutdown"
        if self._reading is not None:
            self._reading.cancel()

    async def serve(self, grace: float) -> None:
        reading = self._reading = asyncio.ensure_future(self._read_requests())
        writing = asyncio.ensure_future(self._write_responses())
        try:
            await asyncio.wait({reading, writing}, return_when=asyncio.FIRST_COMPLETED)
            if reading.done() and not writing.done():
                # Answer what is owed (bounded), then close.
                self._reading_done = True
                self._owed_changed.set()
                await asyncio.wait({writing}, timeout=grace)
        finally:
            tasks: list[asyncio.Future[Any]] = [reading, writing, *self._owed]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.session.upstream.close()
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
            metrics.CONNECTIONS_CLOSED.labels(self.listener, self.close_reason).inc()

    def _closing(self, reason: str, detail: str) -> None:
        self.close_reason = reason
        log.info("closing connection from %s: %s: %s", self.session.peer, reason, detail)

    def _check_idle(self) -> None:
        """One timer per connection instead of one per read: close the connection when
        nothing arrived for the idle timeout and no answer is owed."""
        loop = asyncio.get_running_loop()
        quiet_for = loop.time() - self._last_read
        if quiet_for >= self._idle_timeout and not self._owed and self._reading is not None:
            self._closing("idle timeout", f"{self._idle_timeout}s without a request")
            self._reading.cancel()
            return
        wait = (
            self._idle_timeout - quiet_for if quiet_for < self._idle_timeout else self._idle_timeout
        )
        self._idle_timer = loop.call_later(wait, self._check_idle)

    async def _read_requests(self) -> None:
        protocol = self.session.protocol
        bytes_in = metrics.BYTES_IN.labels(self.listener)
        loop = asyncio.get_running_loop()
        self._last_read = loop.time()
        self._idle_timer = loop.call_later(self._idle_timeout, self._check_idle)
        try:
            await self._read_loop(protocol, bytes_in, loop)
        finally:
            if self._idle_timer is not None:
                self._idle_timer.cancel()

    async def _read_loop(
        self, protocol: ServerProtocol, bytes_in: Any, loop: asyncio.AbstractEventLoop
    ) -> None:
        while True:
            try:
                data = await self.reader.read(READ_CHUNK)
            except OSError:
                return
            if not data:
                return
            self._last_read = loop.time()
            bytes_in.inc(len(data))
            protocol.receive_data(data)
            try:
                while (event := protocol.next_event()) is not None:
                    await self._dispatch(event)
            except SessionExpired as exc:
                self._closing("session expired", str(exc))
                return
            except ProtocolError as exc:
                metrics.REQUESTS.labels("unknown", "-", "rejected").inc()
                self._closing("protocol error", str(exc))
                return

    async def _dispatch(self, event: Event) -> None:
        if self.session.session_expired and not _reauthenticating(event):
            # As Kafka's broker does (KIP-368): a session past its lifetime that did
            # not re-authenticate is closed on its next request.
            metrics.SESSIONS_EXPIRED.labels(self.listener).inc()
            raise SessionExpired("the session expired without re-authentication")
        await self._slots.acquire()
        owed: Owed
        if isinstance(event, AnswerReady):
            owed = asyncio.get_running_loop().create_future()
            owed.set_result([event.data])
        elif isinstance(event, SaslTokenReceived):
            owed = asyncio.ensure_future(self._raw_token_answer(event.token))
        else:
            owed = asyncio.ensure_future(self._handle(event.request))
        self._owed.append(owed)
        self._owed_changed.set()
        if not self.session.is_authenticated:
            # Authentication changes what the next frame may be: one at a time.
            await asyncio.wait({owed})

    async def _raw_token_answer(self, token: bytes) -> list[Chunk] | None:
        # After a SaslHandshake v0 the answer is a bare frame too; a failure is
        # answered by closing the connection.
        outcome = await sasl.step(self.session, token)
        if outcome is None:
            return None
        if not self.session.is_authenticated or self.session.sasl_exchange is not None:
            # A challenge (SCRAM's server-first): the next token is a bare frame too.
            self.session.protocol.expects_raw_token = True
        return [framing.frame(outcome[0])]

    async def _handle(self, request: Request) -> list[Chunk] | None:
        started = time.perf_counter()
        outcome = "error"
        try:
            response: Any = await HANDLERS[request.api_key](self.session, request)
            outcome = "ok"
        except UpstreamError as exc:
            # As a broker would: every item of the request answered with a retriable
            # error, the connection and the requests behind this one kept.
            response = _upstream_failure(request, exc)
            outcome = "upstream_error"
        finally:
            counted, timed = _request_metrics(request.api_key, request.api_version, outcome)
            counted.inc()
            timed.observe(time.perf_counter() - started)
        if response is None:
            return None
        if isinstance(response, EncodedBody):
            return codec.encode_encoded_response(request.correlation_id, response)
        return [codec.encode_response(request.correlation_id, response)]

    async def _write_responses(self) -> None:
        bytes_out = metrics.BYTES_OUT.labels(self.listener)
        while True:
            if not self._owed:
                if self._reading_done:
                    return
                self._owed_changed.clear()
                await self._owed_changed.wait()
                continue
            try:
                await self._owed[0]
                # Every answer that is ready, in order, goes out in one write.
                ready = self._take_ready()
            except GatewayError as exc:
                self._closing("request failed", str(exc))
                return
            except Exception:
                log.exception("request from %s failed", self.session.peer)
                self.close_reason = "request failed"
                return
            if ready:
                self.writer.writelines(ready)
                bytes_out.inc(sum(memoryview(chunk).nbytes for chunk in ready))
                await self.writer.drain()
            if self.session.close_after_response:
                self._closing("authentication failed", "answered and closed")
                return

    def _take_ready(self) -> list[Chunk]:
        """Pop the owed answers that are done, from the front, keeping request order."""
        ready: list[Chunk] = []
        while self._owed and self._owed[0].done():
            if ready and self._owed[0].exception() is not None:
                break  # write the answers before it; its error comes next round
            data = self._owed[0].result()  # raises the request's error, if it failed
            self._owed.popleft()
            self._slots.release()
            if data is not None:
                ready.extend(data)
            if self.session.close_after_response:
                break
        return ready
