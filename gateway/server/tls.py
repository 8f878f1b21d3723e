"""A TLS client listener: accepts TCP connections and completes each one's handshake
with the listener's current certificate before handing it to the gateway.

The listening socket is accepted from directly (not through ``asyncio.start_server``)
so that nothing is read from a new connection before TLS wraps it: the client's
ClientHello must reach the TLS layer, and an event loop that starts reading at once
(uvloop does) would otherwise put it in a plaintext buffer where it is lost. Each
connection takes :meth:`ServerTls.context` at accept time, so a certificate renewed on
disk serves the next connection without a restart. A failed handshake (a plaintext
client, a certificate from another CA, no certificate where one is required, the
deadline passing) closes the connection and is counted in
``gateway_tls_handshake_failures_total`` and logged once, without secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable

from gateway import metrics
from gateway.identity import TlsDetails
from gateway.identity.tls import ServerTls, tls_details
from gateway.server.limits import AddressLimit

log = logging.getLogger(__name__)

# (reader, writer, what the handshake established, loop time the connection was accepted)
OnConnection = Callable[
    [asyncio.StreamReader, asyncio.StreamWriter, TlsDetails, float], Awaitable[None]
]

# How long to wait before accepting again when accept itself fails (e.g. out of file
# descriptors), so that the loop does not spin.
_ACCEPT_RETRY_SECONDS = 0.1


def handshake_failure_reason(exc: BaseException) -> str:
    """A fixed word for why a TLS handshake failed (a metric label)."""
    if isinstance(exc, TimeoutError | ConnectionAbortedError):
        # asyncio reports its ssl_handshake_timeout as ConnectionAbortedError.
        return "timeout"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "bad_certificate"
    if isinstance(exc, ssl.SSLError):
        return _ssl_reason(exc.reason or "")
    return "closed"


def _ssl_reason(reason: str) -> str:
    reason = reason.upper()
    not_tls = (
        "WRONG_VERSION_NUMBER",
        "HTTP_REQUEST",
        "UNKNOWN_PROTOCOL",
        "RECORD_LAYER_FAILURE",
        "PACKET_LENGTH_TOO_LONG",
    )
    if reason in not_tls:
        return "not_tls"
    if "CERTIFICATE" in reason and ("NO_" in reason or "DID_NOT_RETURN" in reason):
        return "no_certificate"
    if "CERTIFICATE" in reason or "UNKNOWN_CA" in reason:
        return "bad_certificate"
    if "VERSION" in reason or "NO_SHARED_CIPHER" in reason or "NO_PROTOCOLS" in reason:
        return "unsupported_version"
    return "protocol"


class TlsServer:
    """Serves one TLS listener; ``close`` and ``wait_closed`` as an asyncio.Server."""

    def __init__(
        self,
        name: str,
        tls: ServerTls,
        handshake_timeout: float,
        on_connection: OnConnection,
        address_limit: AddressLimit | None = None,
    ) -> None:
        self.name = name
        # Checked before the handshake, so that refused connections cost no TLS work.
        self._address_limit = address_limit
        self._tls = tls
        self._timeout = handshake_timeout
        self._on_connection = on_connection
        self._sock: socket.socket | None = None
        self._accepting: asyncio.Future[None] | None = None
        # Connections still in their handshake: closing the listener ends them.
        self._handshaking: set[asyncio.Task[None]] = set()
        self._serving: set[asyncio.Task[None]] = set()

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return (self._sock,) if self._sock is not None else ()

    async def start(self, host: str, port: int, backlog: int = 1024) -> None:
        """Listen on ``host:port`` (OSError when the address cannot be used)."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._accepting = asyncio.ensure_future(self._accept_loop(sock))

    async def _accept_loop(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as exc:
                log.warning("listener %s: accept failed: %s", self.name, exc.strerror)
                await asyncio.sleep(_ACCEPT_RETRY_SECONDS)
                continue
            task = asyncio.ensure_future(self._serve(conn))
            self._handshaking.add(task)
            self._serving.add(task)
            task.add_done_callback(self._handshaking.discard)
            task.add_done_callback(self._serving.discard)

    async def _serve(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        accepted = loop.time()
        try:
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            host, port = conn.getpeername()[:2]
        except OSError:
            conn.close()
            return
        limit = self._address_limit
        if limit is not None and not limit.admit(self.name, str(host)):
            conn.close()
            return
        try:
            await self._serve_admitted(loop, conn, f"{host}:{port}", accepted)
        finally:
            if limit is not None:
                limit.release(str(host))

    async def _serve_admitted(
        self, loop: asyncio.AbstractEventLoop, conn: socket.socket, peer: str, accepted: float
    ) -> None:
        reader = asyncio.StreamReader(loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol,
                conn,
                ssl=self._tls.context(),
                ssl_handshake_timeout=self._timeout,
            )
        except (TimeoutError, ssl.SSLError, OSError, EOFError) as exc:
            conn.close()
            self._failed(peer, exc)
            return
        task = asyncio.current_task()
        if task is not None:
            self._handshaking.discard(task)
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is None:  # the client left right after the handshake
            writer.close()
            return
        # The authentication deadline counts from the accept, the handshake included.
        await self._on_connection(reader, writer, tls_details(ssl_object), accepted)

    def _failed(self, peer: str, exc: BaseException) -> None:
        reason = handshake_failure_reason(exc)
        metrics.TLS_HANDSHAKE_FAILURES.labels(self.name, reason).inc()
        metrics.CONNECTIONS_CLOSED.labels(self.name, "tls handshake failed").inc()
        # The TLS library's own word names the cause (PEER_DID_NOT_RETURN_A_CERTIFICATE,
        # CERTIFICATE_VERIFY_FAILED); it holds no key material.
        detail = getattr(exc, "reason", None) or type(exc).__name__
        log.info("TLS handshake from %s on %s failed (%s): %s", peer, self.name, reason, detail)

    def close(self) -> None:
        """Stop accepting; connections still in their handshake are ended."""
        if self._accepting is not None:
            self._accepting.cancel()
        for task in self._handshaking:
            task.cancel()
        if self._sock is not None:
            self._sock.close()

    async def wait_closed(self) -> None:
        waiting: list[asyncio.Future[None]] = list(self._handshaking)
        if self._accepting is not None:
            waiting.append(self._accepting)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*waiting, return_exceptions=True)
