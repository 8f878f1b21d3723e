"""One client connection: read frames, dispatch requests, write responses in order.

Requests are handled concurrently once the client has authenticated; responses are
written strictly in request order. Back-pressure works both ways: reading pauses
while ``max_in_flight_requests`` responses are owed, and writing waits for the
client to drain its socket. Before authentication requests are handled one at a
time, because each may change what the next frame is allowed to be.

Memory and time are bounded before the client is trusted: every frame reserves its
size from the gateway-wide :class:`~gateway.server.limits.RequestBudget` once its size
prefix has arrived and before its body is read (reading pauses while the budget is
spent), and one timer per connection enforces three deadlines: authenticate within
``authentication_timeout_seconds`` of connecting, complete a started frame within
``frame_timeout_seconds``, and send something within ``idle_timeout_seconds``.
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

from gateway import metrics
from gateway.errors import GatewayError, ProtocolError, UpstreamError, UpstreamRefused
from gateway.handlers import HANDLERS, sasl
from gateway.pipeline.standard import standard
from gateway.protocol import codec, framing, items
from gateway.protocol.codec import Chunk, EncodedBody, Request
from gateway.protocol.connection import (
    AnswerReady,
    Event,
    RequestReceived,
    SaslTokenReceived,
    ServerProtocol,
)
from gateway.protocol.versions import SASL_AUTHENTICATE, SASL_HANDSHAKE, api_name
from gateway.server.limits import RequestBudget
from gateway.session import ClientSession

log = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024
# What one read may take beyond the frame whose size has been reserved: the bytes a
# connection holds outside the budget (besides the stream reader's own buffer).
LOOKAHEAD = 64 * 1024
# Deadlines are checked by a timer that the loop may run this much early.
_SLACK = 0.001
Owed = asyncio.Future[list[Chunk] | None]


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
        budget: RequestBudget | None = None,
        accepted: float | None = None,
    ) -> None:
        self.session = session
        self.reader = reader
        self.writer = writer
        self.listener = session.listener.name
        limits = session.services.config.limits
        self._owed: collections.deque[Owed] = collections.deque()
        self._owed_changed = asyncio.Event()
        self._slots = asyncio.Semaphore(limits.max_in_flight_requests)
        # Shared by every connection of the gateway; a connection on its own (tests)
        # gets one of the configured size.
        self._budget = budget or RequestBudget(limits.queued_max_request_bytes)
        self._frame_held: int | None = None  # reserved for the frame being read
        self._idle_timeout = limits.idle_timeout_seconds
        self._auth_timeout = limits.authentication_timeout_seconds
        self._frame_timeout = limits.frame_timeout_seconds
        self._reading_done = False
        self._reading: asyncio.Future[None] | None = None
        # Loop time of the accept (a TLS listener's handshake came before this object).
        self._accepted = accepted
        self._connected = 0.0
        self._last_read = 0.0
        # When the frame being read began to arrive; None between frames and while
        # waiting for the budget (the gateway's wait is not the client's delay).
        self._frame_started: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.close_reason = "client closed"
        # For the audit trail's connection_closed event.
        self._bytes_in = 0
        self._bytes_out = 0
        self._requests = 0
        services = session.services
        if services.pipeline is None:
            services.pipeline = standard(services)
        self._pipeline = services.pipeline

    def stop_reading(self) -> None:
        """Take no more requests; :meth:`serve` then answers what is owed and returns."""
        self.close_reason = "shutdown"
        if self._reading is not None:
            self._reading.cancel()

    async def serve(self, grace: float) -> None:
        audit = self.session.services.audit
        if audit is not None:
            audit.connection_opened(self.session)
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
            if audit is not None:
                audit.connection_closed(
                    self.session,
                    self.close_reason,
                    self._bytes_in,
                    self._bytes_out,
                    self._requests,
                )

    def _closing(self, reason: str, detail: str) -> None:
        self.close_reason = reason
        log.info("closing connection from %s: %s: %s", self.session.peer, reason, detail)

    def _deadlines(self, now: float) -> list[tuple[float, str, str]]:
        """``(when, reason, detail)`` for each deadline in force."""
        found = []
        if not self.session.is_authenticated:
            found.append(
                (
                    self._connected + self._auth_timeout,
                    "authentication timeout",
                    f"not authenticated {self._auth_timeout}s after connecting",
                )
            )
        if self._frame_started is not None:
            found.append(
                (
                    self._frame_started + self._frame_timeout,
                    "frame timeout",
                    f"a request incomplete {self._frame_timeout}s after its first bytes",
                )
            )
        # An owed answer keeps the connection busy, not idle: look again later.
        idle_at = now + self._idle_timeout if self._owed else self._last_read + self._idle_timeout
        found.append((idle_at, "idle timeout", f"{self._idle_timeout}s without a request"))
        return found

    def _check_deadlines(self) -> None:
        """One timer per connection instead of one per read: close the connection when
        a deadline has passed, else look again at the next one."""
        now = asyncio.get_running_loop().time()
        deadlines = self._deadlines(now)
        for when, reason, detail in deadlines:
            if when <= now + _SLACK and self._reading is not None:
                self._closing(reason, detail)
                self._reading.cancel()
                return
        self._check_at(min(when for when, _, _ in deadlines))

    def _check_at(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(when, self._check_deadlines)

    def _frame_begins(self, now: float) -> None:
        self._frame_started = now
        due = now + self._frame_timeout
        if self._timer is None or self._timer.when() > due:
            self._check_at(due)

    async def _read_requests(self) -> None:
        protocol = self.session.protocol
        bytes_in = metrics.BYTES_IN.labels(self.listener)
        loop = asyncio.get_running_loop()
        self._last_read = loop.time()
        self._connected = self._last_read if self._accepted is None else self._accepted
        self._check_at(min(when for when, _, _ in self._deadlines(self._connected)))
        try:
            await self._read_loop(protocol, bytes_in, loop)
        finally:
            if self._timer is not None:
                self._timer.cancel()
            protocol.discard()
            if self._frame_held is not None:
                self._budget.release(self._frame_held)
                self._frame_held = None

    def _read_size(self, protocol: ServerProtocol) -> int:
        """Read the reserved frame's missing bytes (in chunks), or a little lookahead:
        never much more than is reserved."""
        missing = protocol.missing if self._frame_held is not None else 0
        return min(READ_CHUNK, max(LOOKAHEAD, missing))

    async def _read_loop(
        self, protocol: ServerProtocol, bytes_in: Any, loop: asyncio.AbstractEventLoop
    ) -> None:
        while True:
            try:
                data = await self.reader.read(self._read_size(protocol))
            except OSError:
                return
            if not data:
                return
            self._last_read = loop.time()
            bytes_in.inc(len(data))
            self._bytes_in += len(data)
            protocol.receive_data(data)
            del data  # the decoder has its copy; a connection waiting holds one
            try:
                await self._take_frames(protocol)
            except SessionExpired as exc:
                self._closing("session expired", str(exc))
                return
            except ProtocolError as exc:
                metrics.REQUESTS.labels("unknown", "-", "rejected").inc()
                self._pipeline.rejected(self.session, str(exc))
                self._closing("protocol error", str(exc))
                return
            if protocol.mid_frame and self._frame_started is None:
                self._frame_begins(loop.time())

    async def _take_frames(self, protocol: ServerProtocol) -> None:
        """Dispatch every complete frame, reserving each one's size from the budget as
        soon as its size prefix is in."""
        while (size := protocol.pending_frame_size()) is not None:
            if self._frame_held is None:
                self._frame_held = self._budget.try_reserve(size)
                if self._frame_held is None:
                    self._frame_held = await self._wait_for_budget(size)
            event = protocol.next_event()
            if event is None:
                return  # the rest of the frame has yet to arrive
            held, self._frame_held = self._frame_held, None
            self._frame_started = None
            await self._dispatch(event, held)

    async def _wait_for_budget(self, size: int) -> int:
        # Stop the transport too, so that the stream reader's buffer does not fill up
        # while the connection waits; the client and the kernel hold the bytes.
        transport: asyncio.Transport | None = getattr(self.writer, "transport", None)
        if transport is not None and not transport.is_reading():
            transport = None  # paused by the stream reader: it resumes it itself
        if transport is not None:
            transport.pause_reading()
        self._frame_started = None  # the gateway's wait is not the client's delay
        try:
            held = await self._budget.reserve(size)
        finally:
            if transport is not None and not transport.is_closing():
                transport.resume_reading()
        self._frame_begins(asyncio.get_running_loop().time())
        return held

    async def _dispatch(self, event: Event, held: int = 0) -> None:
        """Start answering ``event``; the ``held`` budget bytes go back once the answer
        is ready (or abandoned)."""
        self._requests += 1
        try:
            if self.session.session_expired and not _reauthenticating(event):
                # As Kafka's broker does (KIP-368): a session past its lifetime that did
                # not re-authenticate is closed on its next request.
                metrics.SESSIONS_EXPIRED.labels(self.listener).inc()
                raise SessionExpired("the session expired without re-authentication")
            await self._slots.acquire()
        except BaseException:
            self._budget.release(held)
            raise
        owed: Owed
        if isinstance(event, AnswerReady):
            owed = asyncio.get_running_loop().create_future()
            owed.set_result([event.data])
        elif isinstance(event, SaslTokenReceived):
            owed = asyncio.ensure_future(self._raw_token_answer(event.token))
        else:
            owed = asyncio.ensure_future(self._handle(event.request))
        if held:
            owed.add_done_callback(lambda _: self._budget.release(held))
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
            response = await self._pipeline.run(self.session, request, HANDLERS[request.api_key])
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
                written = sum(memoryview(chunk).nbytes for chunk in ready)
                bytes_out.inc(written)
                self._bytes_out += written
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
