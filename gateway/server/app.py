"""The running gateway: upstream pool, client listeners and admin HTTP, with shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket

from gateway import metrics
from gateway.admin.http import AdminServer
from gateway.config import Config, ListenerConfig
from gateway.errors import GatewayError
from gateway.identity.registry import Authenticator
from gateway.protocol.connection import ServerProtocol
from gateway.server.connection import ClientConnection
from gateway.server.limits import AddressLimit, RequestBudget
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
        self.services = Services(config, pool, Authenticator(config))
        self._servers: list[asyncio.Server] = []
        self._connections: dict[asyncio.Task[None], ClientConnection] = {}
        self.request_budget = RequestBudget(config.limits.queued_max_request_bytes)
        self.address_limit = AddressLimit(config.limits.max_connections_per_address)
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
            self.services.authenticator.watcher.start()
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
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if peer else "unknown"
        if not self.address_limit.admit(listener.name, address):
            writer.close()
            return
        try:
            await self._serve(listener, task, peer, reader, writer)
        finally:
            self.address_limit.release(address)

    async def _serve(
        self,
        listener: ListenerConfig,
        task: asyncio.Task[None],
        peer: tuple[str, int] | None,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        if not self.services.pool.api_versions:
            # Nothing to advertise before the cluster has answered once: refuse, as a
            # broker that is still starting does, and let the client retry.
            metrics.CONNECTIONS_CLOSED.labels(listener.name, "upstream unavailable").inc()
            writer.close()
            return
        session = ClientSession(
            services=self.services,
            listener=listener,
            peer=f"{peer[0]}:{peer[1]}" if peer else "unknown",
            upstream=self.services.pool.session(),
            protocol=ServerProtocol(
                lambda: self.services.versions,
                self.config.limits.pre_auth_max_frame_bytes,
                self.config.limits.max_frame_bytes,
            ),
        )
        protocol = listener.security_protocol
        metrics.CONNECTIONS_TOTAL.labels(listener.name, protocol).inc()
        metrics.CONNECTIONS_OPEN.labels(listener.name, protocol).inc()
        connection = self._connections[task] = ClientConnection(
            session, reader, writer, self.request_budget
        )
        try:
            await connection.serve(self.config.limits.shutdown_grace_seconds)
        except Exception:
            log.exception("connection from %s ended with an error", session.peer)
        finally:
            metrics.CONNECTIONS_OPEN.labels(listener.name, protocol).dec()
            self._connections.pop(task, None)

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
        await self.services.authenticator.watcher.stop()
        await self.services.pool.close()
        self.services.authenticator.close()
        log.info("gateway stopped")
