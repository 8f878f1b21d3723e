"""The running gateway: upstream pool, client listeners and admin HTTP, with shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import ssl

from gateway import metrics
from gateway.admin.http import AdminServer
from gateway.config import Config, ListenerConfig
from gateway.errors import AuthenticationFailed, GatewayError
from gateway.identity import ANONYMOUS, TlsDetails
from gateway.identity.registry import Authenticator
from gateway.identity.tls import (
    CERTIFICATE_MECHANISM,
    ServerTls,
    certificate_identity,
    tls_details,
)
from gateway.protocol.connection import ServerProtocol
from gateway.server.connection import ClientConnection
from gateway.session import ClientSession, Services
from gateway.upstream.pool import ClusterPool

log = logging.getLogger(__name__)


class Gateway:
    """Start with :meth:`start`, stop with :meth:`stop` (stops accepting, lets owed
    responses finish within the grace period, closes upstream connections)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        pool = ClusterPool(
            "primary", config.clusters.primary, config.limits.upstream_timeout_seconds
        )
        # Built before anything starts: a missing or broken certificate stops the start.
        self._tls = {
            listener.name: ServerTls(listener.tls, listener.name)
            for listener in config.listeners
            if listener.tls is not None
        }
        self.services = Services(config, pool, Authenticator(config))
        self._servers: list[asyncio.Server] = []
        self._connections: dict[asyncio.Task[None], ClientConnection] = {}
        self._admin = AdminServer(self.services, *config.admin.bind_address)
        self.bound: dict[str, tuple[str, int]] = {}

    async def start(self) -> None:
        """Check the upstream once, then listen; on any failure, undo what was started.

        An unreachable upstream does not stop the start: the gateway is not ready
        (``/readyz``), keeps checking, and serves as soon as the cluster answers.
        """
        try:
            await self.services.pool.start()
            if not self.services.pool.health.ready:
                log.warning(
                    "cluster %s not reachable yet; serving once it answers",
                    self.services.pool.name,
                )
            for listener in self.config.listeners:
                await self._listen(listener)
            await self._admin.start()
        except GatewayError:
            await self.stop()
            raise

    async def _listen(self, listener: ListenerConfig) -> None:
        host, port = listener.bind_address
        try:
            server = await asyncio.start_server(
                functools.partial(self._accept, listener),
                host,
                port,
                reuse_address=True,
                backlog=1024,
            )
        except OSError as exc:
            raise GatewayError(
                f"listener {listener.name}: cannot listen on {host}:{port}: {exc.strerror}"
            ) from exc
        self._servers.append(server)
        self.bound[listener.name] = server.sockets[0].getsockname()[:2]
        log.info("listener %s on %s:%d (%s)", listener.name, host, port, listener.security_protocol)

    async def _accept(
        self, listener: ListenerConfig, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        address = writer.get_extra_info("peername")
        peer = f"{address[0]}:{address[1]}" if address else "unknown"
        if not self.services.pool.api_versions:
            # Nothing to advertise before the cluster has answered once: refuse, as a
            # broker that is still starting does, and let the client retry.
            metrics.CONNECTIONS_CLOSED.labels(listener.name, "upstream unavailable").inc()
            writer.close()
            return
        tls: TlsDetails | None = None
        if listener.name in self._tls:
            tls = await self._handshake(listener, writer, peer)
            if tls is None:
                return
        session = ClientSession(
            services=self.services,
            listener=listener,
            peer=peer,
            upstream=self.services.pool.session(),
            protocol=ServerProtocol(
                lambda: self.services.versions,
                self.config.limits.pre_auth_max_frame_bytes,
                self.config.limits.max_frame_bytes,
            ),
            tls=tls,
        )
        if listener.security_protocol == "SSL" and not self._certificate_login(session):
            await self._refuse(session, writer)
            return
        protocol = listener.security_protocol
        metrics.CONNECTIONS_TOTAL.labels(listener.name, protocol).inc()
        metrics.CONNECTIONS_OPEN.labels(listener.name, protocol).inc()
        connection = self._connections[task] = ClientConnection(session, reader, writer)
        try:
            await connection.serve(self.config.limits.shutdown_grace_seconds)
        except Exception:
            log.exception("connection from %s ended with an error", session.peer)
        finally:
            metrics.CONNECTIONS_OPEN.labels(listener.name, protocol).dec()
            self._connections.pop(task, None)

    async def _handshake(
        self, listener: ListenerConfig, writer: asyncio.StreamWriter, peer: str
    ) -> TlsDetails | None:
        """TLS on an accepted connection, with the listener's latest context; None (the
        connection closed, the failure counted and logged once) when it fails."""
        context = self._tls[listener.name].context()
        try:
            await writer.start_tls(
                context, ssl_handshake_timeout=self.config.limits.authentication_timeout_seconds
            )
        except (TimeoutError, ssl.SSLError, OSError, EOFError) as exc:
            reason = handshake_failure_reason(exc)
            metrics.TLS_HANDSHAKE_FAILURES.labels(listener.name, reason).inc()
            metrics.CONNECTIONS_CLOSED.labels(listener.name, "tls handshake failed").inc()
            # The library's own words name the cause (no certificate, unknown CA); they
            # hold no key material.
            log.info(
                "TLS handshake from %s on %s failed (%s): %s",
                peer,
                listener.name,
                reason,
                getattr(exc, "reason", None) or type(exc).__name__,
            )
            writer.transport.abort()
            return None
        ssl_object = writer.get_extra_info("ssl_object")
        assert ssl_object is not None
        return tls_details(ssl_object)

    def _certificate_login(self, session: ClientSession) -> bool:
        """An SSL listener's session is who its client certificate says (or anonymous
        without one); False when the certificate stands for no one allowed in."""
        listener = session.listener
        assert listener.tls is not None and session.tls is not None
        authenticator = self.services.authenticator
        if session.tls.client_subject is None:
            session.authenticated(ANONYMOUS)
            return True
        try:
            identity = certificate_identity(
                session.tls, listener.tls, authenticator.accounts, listener.name, session.peer
            )
        except AuthenticationFailed as exc:
            metrics.AUTHENTICATIONS.labels(listener.name, CERTIFICATE_MECHANISM, "failure").inc()
            metrics.AUTHENTICATION_FAILURES.labels(
                listener.name, CERTIFICATE_MECHANISM, exc.reason
            ).inc()
            log.info(
                "authentication failed from %s on %s via %s (%s): %s",
                session.peer,
                listener.name,
                CERTIFICATE_MECHANISM,
                exc.reason,
                exc,
            )
            return False
        session.authenticated(identity, authenticator.max_session_seconds(CERTIFICATE_MECHANISM))
        metrics.AUTHENTICATIONS.labels(listener.name, CERTIFICATE_MECHANISM, "success").inc()
        log.info(
            "authenticated %s from %s on %s via %s (certificate %s)",
            identity.principal,
            session.peer,
            listener.name,
            CERTIFICATE_MECHANISM,
            session.tls.client_subject,
        )
        return True

    async def _refuse(self, session: ClientSession, writer: asyncio.StreamWriter) -> None:
        """Close a connection whose certificate was refused, after the failure delay
        (the attacker waits, not the gateway)."""
        metrics.CONNECTIONS_CLOSED.labels(session.listener.name, "authentication failed").inc()
        try:
            await self.services.authenticator.guard.failed(session.address)
        finally:
            await session.upstream.close()
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        grace = self.config.limits.shutdown_grace_seconds
        for connection in self._connections.values():
            connection.stop_reading()
        if self._connections:
            _, late = await asyncio.wait(set(self._connections), timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        await self._admin.stop()
        await self.services.pool.close()
        self.services.authenticator.close()
        log.info("gateway stopped")


def handshake_failure_reason(exc: BaseException) -> str:
    """A fixed word for why a TLS handshake failed (a metric label)."""
    if isinstance(exc, TimeoutError | ConnectionAbortedError):
        # asyncio reports its ssl_handshake_timeout as ConnectionAbortedError.
        return "timeout"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "bad_certificate"
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or "").upper()
        if reason in (
            "WRONG_VERSION_NUMBER",
            "HTTP_REQUEST",
            "UNKNOWN_PROTOCOL",
            "RECORD_LAYER_FAILURE",
            "PACKET_LENGTH_TOO_LONG",
        ):
            return "not_tls"
        if "CERTIFICATE" in reason and ("NO_" in reason or "DID_NOT_RETURN" in reason):
            return "no_certificate"
        if "CERTIFICATE" in reason or "UNKNOWN_CA" in reason:
            return "bad_certificate"
        if "VERSION" in reason or "NO_SHARED_CIPHER" in reason or "NO_PROTOCOLS" in reason:
            return "unsupported_version"
        return "protocol"
    return "closed"
