"""The running gateway: upstream pool, client listeners and admin HTTP, with shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import ssl
import time

from gateway import __version__, metrics
from gateway.admin.http import AdminServer
from gateway.audit import events
from gateway.audit.kafka_sink import KafkaSink
from gateway.audit.log import AuditLog
from gateway.audit.recorder import Recorder, StageSettings
from gateway.config import Config, ListenerConfig
from gateway.errors import AuditUnavailable, AuthenticationFailed, ConfigError, GatewayError
from gateway.failover.watch import ReplicationWatch
from gateway.handlers import sasl
from gateway.identity import ANONYMOUS, TlsDetails
from gateway.identity.registry import Authenticator
from gateway.identity.tls import (
    CERTIFICATE_MECHANISM,
    ServerTls,
    certificate_identity,
)
from gateway.masking.service import MaskingService
from gateway.pipeline.policies import PolicyStore, PolicyWatcher
from gateway.protocol.connection import ServerProtocol
from gateway.server.connection import ClientConnection
from gateway.server.limits import AddressLimit, RequestBudget
from gateway.server.tls import TlsServer
from gateway.session import ClientSession, Services
from gateway.upstream.pool import ClusterPool

log = logging.getLogger(__name__)

# At most one log line this often about connections closed before the cluster answered.
REFUSAL_LOG_INTERVAL_S = 10.0


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
        # Audit is off without an ``audit:`` section: no log, no recorder, no stage.
        self.audit_log = AuditLog(config.audit) if config.audit is not None else None
        self.audit_sink: KafkaSink | None = None
        recorder = None
        if config.audit is not None and self.audit_log is not None:
            recorder = Recorder(self.audit_log, StageSettings(fail_open=config.audit.fail_open))
        secondary = config.clusters.secondary
        standby = (
            ClusterPool("secondary", secondary, config.limits.upstream_timeout_seconds)
            if secondary is not None
            else None
        )
        self.services = Services(
            config,
            pool,
            Authenticator(config),
            policies=PolicyStore(config.policy.dir),
            audit=recorder,
            standby=standby,
        )
        if secondary is not None:
            self.services.replication = ReplicationWatch(
                config.clusters.primary, secondary, config.clusters.replication
            )
        self.policy_watcher = PolicyWatcher(
            self.services.policies, config.policy.reload_interval_seconds
        )
        self._servers: list[asyncio.Server | TlsServer] = []
        self._connections: dict[asyncio.Task[None], ClientConnection] = {}
        self.request_budget = RequestBudget(config.limits.queued_max_request_bytes)
        # Connections closed because the cluster never answered yet, since the last
        # log line about them (one line per REFUSAL_LOG_INTERVAL_S at most).
        self._refused_before_upstream = 0
        self._refusals_logged_at = float("-inf")
        self.address_limit = AddressLimit(config.limits.max_connections_per_address)
        self._admin = AdminServer(self.services, *config.admin.bind_address)
        self.bound: dict[str, tuple[str, int]] = {}
        self.masking: MaskingService | None = None

    def _audit_started(self, audit_log: AuditLog) -> dict[str, object]:
        """The chain's record of how this gateway audits (fail_open included)."""
        config = audit_log.config
        return events.audit_started(
            config.instance,
            __version__,
            config.fail_open,
            [{"topics": p.topics, "capture": p.capture} for p in config.payloads],
            audit_log.key_id or "",
            self.services.policies.version,
        )

    async def start(self) -> None:
        """Check the upstream once, then listen; on any failure, undo what was started.

        An unreachable upstream does not stop the start: the gateway is not ready
        (``/readyz``), keeps checking, and serves as soon as the cluster answers.
        """
        try:
            if self.audit_log is not None:
                # First: a bad key file or audit directory stops the start before any
                # client could be served unaudited.
                await self.audit_log.start()
                await self.audit_log.append(self._audit_started(self.audit_log))
                self._start_audit_sink(self.audit_log)
                if self.services.audit is not None:
                    self.services.audit.watch_policy(self.services.policies)
            await self._start_masking()
            await self.services.pool.start()
            if self.services.standby is not None:
                await self.services.standby.start(first_check=False)
            if self.services.replication is not None:
                self.services.replication.start()
            if not self.services.pool.health.ready:
                log.warning(
                    "cluster %s not reachable yet; serving once it answers",
                    self.services.pool.name,
                )
            for listener in self.config.listeners:
                await self._listen(listener)
            await self._admin.start()
            self.services.authenticator.watcher.start()
            self.policy_watcher.start()
        except GatewayError:
            await self.stop()
            raise

    async def _start_masking(self) -> None:
        """Masking from ``masking:``; policy files with masking rules and no ``masking:``
        stop the start (those rules could not be applied: every read they name would be
        refused)."""
        if self.config.masking is None:
            policy = self.services.policies.current
            if policy is not None and policy.masking:
                ids = ", ".join(rule.id for rule in policy.masking)
                raise ConfigError(
                    f"the policy has masking rules ({ids}) but the config has no masking: "
                    "section (masking.key_file, and a registry or schemas_dir)"
                )
            return
        self.masking = MaskingService(self.config.masking)
        await self.masking.start()
        self.services.masking = self.masking.engine

    def _start_audit_sink(self, audit_log: AuditLog) -> None:
        audit = self.config.audit
        if audit is None or audit.kafka is None or self.audit_sink is not None:
            return
        cluster = getattr(self.config.clusters, audit.kafka.cluster)
        writer = audit_log.writer
        self.audit_sink = KafkaSink(
            audit.kafka, cluster, audit.dir, audit.instance, lambda: writer.durable_seq
        )
        self.audit_sink.start()

    async def _listen(self, listener: ListenerConfig) -> None:
        host, port = listener.bind_address
        server: asyncio.Server | TlsServer
        try:
            if listener.name in self._tls:
                server = TlsServer(
                    listener.name,
                    self._tls[listener.name],
                    self.config.limits.authentication_timeout_seconds,
                    functools.partial(self._accept, listener),
                    self.address_limit,
                )
                await server.start(host, port)
            else:
                server = await asyncio.start_server(
                    functools.partial(self._accept_tcp, listener),
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

    async def _accept_tcp(
        self, listener: ListenerConfig, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """A plaintext listener's connection: counted against its address's limit first
        (a TLS listener counts before the handshake, in its TlsServer)."""
        address = writer.get_extra_info("peername")
        host = str(address[0]) if address else "unknown"
        if not self.address_limit.admit(listener.name, host):
            writer.close()
            return
        try:
            await self._accept(listener, reader, writer)
        finally:
            self.address_limit.release(host)

    async def _accept(
        self,
        listener: ListenerConfig,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        tls: TlsDetails | None = None,
        accepted: float | None = None,
    ) -> None:
        """Serve one connection (on a TLS listener: after its handshake, ``tls`` being
        what the handshake established)."""
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
            self._refused_before_upstream += 1
            now = time.monotonic()
            if now - self._refusals_logged_at >= REFUSAL_LOG_INTERVAL_S:
                log.warning(
                    "closed %d client connection(s) on %s: cluster %s has not answered "
                    "yet (the latest from %s)",
                    self._refused_before_upstream,
                    listener.name,
                    self.services.pool.name,
                    peer,
                )
                self._refusals_logged_at, self._refused_before_upstream = now, 0
            writer.close()
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
        connection = self._connections[task] = ClientConnection(
            session, reader, writer, self.request_budget, accepted
        )
        self.services.sessions.add(session)
        try:
            await connection.serve(self.config.limits.shutdown_grace_seconds)
        except Exception:
            log.exception("connection from %s ended with an error", session.peer)
        finally:
            metrics.CONNECTIONS_OPEN.labels(listener.name, protocol).dec()
            self.services.sessions.remove(session)
            self._connections.pop(task, None)

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
            sasl.count_failure(session, CERTIFICATE_MECHANISM, exc)
            return False
        session.authenticated(identity, authenticator.max_session_seconds(CERTIFICATE_MECHANISM))
        if session.services.audit is not None:
            session.services.audit.authentication(
                session, CERTIFICATE_MECHANISM, identity.principal, True, None
            )
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

    async def _close_listeners(self) -> None:
        """Stop accepting; owed responses finish within the grace period."""
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

    async def stop(self) -> None:
        await self._close_listeners()
        await self._admin.stop()
        await self.services.authenticator.watcher.stop()
        await self.policy_watcher.stop()
        if self.services.replication is not None:
            await self.services.replication.close()
        for pool in (self.services.pool, self.services.standby):
            if pool is not None:
                await pool.close()
        self.services.authenticator.close()
        if self.masking is not None:
            await self.masking.close()
            self.masking = None
        if self.services.audit is not None:
            await self.services.audit.drain()  # the connections' last events
        if self.audit_log is not None:
            with contextlib.suppress(AuditUnavailable):  # not started, or cannot write
                await self.audit_log.append(events.audit_stopped(self.audit_log.config.instance))
            await self.audit_log.close()  # seals the log with a last checkpoint
        if self.audit_sink is not None:
            # After the log's close, so the final checkpoint is shipped too (bounded by
            # audit.kafka.stop_timeout_seconds; what is left goes at the next start).
            await self.audit_sink.stop()
            self.audit_sink = None
        log.info("gateway stopped")
