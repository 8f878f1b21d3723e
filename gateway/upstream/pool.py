"""A pool per upstream cluster: credentials, routing metadata, connections.

The pool owns the cluster's credentials and its view of the cluster (brokers, topic
leaders, topic ids). Each client connection gets an :class:`UpstreamSession` with
its own broker connections: a Kafka broker serves one request at a time per
connection, so sharing one upstream socket between clients would let one client's
long-polling Fetch stall every other client's Produce.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import uuid
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiokafka import errors as aiokafka_errors
from aiokafka.conn import AIOKafkaConnection, create_conn

from gateway import metrics
from gateway.config import ClusterConfig
from gateway.errors import GatewayError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from gateway.protocol import codec
from gateway.protocol.versions import API_VERSIONS, METADATA, VersionRange
from gateway.upstream.wire import EncodedRequest

log = logging.getLogger(__name__)

# aiokafka's own per-request timer would cut long-polls and JoinGroups short; the
# gateway sets a budget per request instead (see UpstreamSession.request).
_CONNECTION_TIMEOUT_MS = 15 * 60 * 1000
_GATEWAY_CLIENT_ID = "soc2-gateway"


@contextlib.contextmanager
def map_errors(where: str) -> Iterator[None]:
    """Translate aiokafka and socket failures into gateway errors."""
    try:
        yield
    except GatewayError:
        raise
    except (TimeoutError, aiokafka_errors.KafkaTimeoutError) as exc:
        raise UpstreamTimeout(f"{where}: timed out") from exc
    except (aiokafka_errors.KafkaError, OSError, EOFError) as exc:
        raise UpstreamUnavailable(f"{where}: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Reply:
    """An upstream response: decoded, and the body bytes it was decoded from."""

    entity: Any
    data: memoryview


@dataclass(slots=True)
class PartitionRoute:
    leader: int
    leader_epoch: int


@dataclass(slots=True)
class TopicRoute:
    name: str
    topic_id: uuid.UUID | None
    partitions: dict[int, PartitionRoute] = field(default_factory=dict)


@dataclass(slots=True)
class ClusterView:
    """What the gateway knows of an upstream cluster's layout."""

    brokers: dict[int, tuple[str, int]] = field(default_factory=dict)
    topics: dict[str, TopicRoute] = field(default_factory=dict)
    names_by_id: dict[uuid.UUID, str] = field(default_factory=dict)
    controller_id: int = -1
    cluster_id: str | None = None

    def leader(self, topic: str, partition: int) -> int | None:
        route = self.topics.get(topic)
        if route is None:
            return None
        found = route.partitions.get(partition)
        return None if found is None or found.leader < 0 else found.leader

    def update(self, response: Any, complete: bool) -> None:
        """Take in a Metadata response; ``complete`` when it listed every topic."""
        self.brokers = {b.node_id: (b.host, b.port) for b in response.brokers}
        self.controller_id = getattr(response, "controller_id", -1)
        self.cluster_id = getattr(response, "cluster_id", None)
        if complete:
            self.topics.clear()
            self.names_by_id.clear()
        for topic in response.topics:
            if topic.name is None:
                continue
            if topic.error_code != 0:
                self._forget(topic.name)
                continue
            topic_id = getattr(topic, "topic_id", None)
            if topic_id == uuid.UUID(int=0):
                topic_id = None
            route = TopicRoute(topic.name, topic_id)
            for p in topic.partitions:
                route.partitions[p.partition_index] = PartitionRoute(
                    p.leader_id, getattr(p, "leader_epoch", -1)
                )
            self.topics[topic.name] = route
            if topic_id is not None:
                self.names_by_id[topic_id] = topic.name

    def _forget(self, name: str) -> None:
        route = self.topics.pop(name, None)
        if route is not None and route.topic_id is not None:
            self.names_by_id.pop(route.topic_id, None)


class ClusterPool:
    """One upstream cluster: credentials, negotiated versions, layout, connections."""

    def __init__(self, name: str, config: ClusterConfig, timeout: float) -> None:
        self.name = name
        self.config = config
        self.timeout = timeout
        self.view = ClusterView()
        self.api_versions: dict[int, VersionRange] = {}
        self._password = config.sasl.password.resolve() if config.sasl else None
        self._ssl = _ssl_context(config) if config.security_protocol.endswith("SSL") else None
        self._control: UpstreamSession | None = None
        self._refreshing: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<ClusterPool {self.name} {','.join(self.config.bootstrap_servers)}>"

    async def start(self) -> None:
        """Learn the cluster's API versions and layout through a bootstrap server."""
        self._control = self.session()
        last: Exception | None = None
        for host, port in self.config.addresses:
            try:
                await self._bootstrap(host, port)
                return
            except UpstreamError as exc:
                last = exc
                log.warning("cluster %s: bootstrap %s:%d failed: %s", self.name, host, port, exc)
        raise UpstreamUnavailable(f"cluster {self.name}: no bootstrap server answered: {last}")

    async def _bootstrap(self, host: str, port: int) -> None:
        assert self._control is not None
        conn = await self.connect(host, port)
        try:
            request = codec.build(codec.request_schema(API_VERSIONS, 0))
            response = await self._control.send_on(conn, request, None, self.timeout)
            self.api_versions = {
                k.api_key: VersionRange(k.min_version, k.max_version) for k in response.api_keys
            }
            await self._refresh(conn)
        finally:
            conn.close()

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
        if self._control is not None:
            await self._control.close()

    async def connect(self, host: str, port: int) -> AIOKafkaConnection:
        """Open an authenticated connection to one broker."""
        sasl = self.config.sasl
        with map_errors(f"cluster {self.name} connect {host}:{port}"):
            return await asyncio.wait_for(
                create_conn(
                    host,
                    port,
                    client_id=_GATEWAY_CLIENT_ID,
                    request_timeout_ms=_CONNECTION_TIMEOUT_MS,
                    ssl_context=self._ssl,
                    security_protocol=self.config.security_protocol,
                    sasl_mechanism=sasl.mechanism if sasl else None,
                    sasl_plain_username=sasl.username if sasl else None,
                    sasl_plain_password=self._password,
                ),
                self.timeout,
            )

    def session(self) -> UpstreamSession:
        return UpstreamSession(self)

    def metadata_version(self) -> int:
        supported = self.api_versions.get(METADATA, VersionRange(0, 0))
        return min(12, supported.max)

    async def refresh(self) -> None:
        """Re-read the whole layout; concurrent callers share one request."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh())
        await asyncio.shield(self._refreshing)

    def refresh_soon(self) -> None:
        """Start a refresh without waiting for it (failures are logged)."""
        task = asyncio.ensure_future(self.refresh())
        task.add_done_callback(_log_failure)

    async def _refresh(self, conn: AIOKafkaConnection | None = None) -> None:
        assert self._control is not None
        if conn is None:
            conn = await self._control.connection(self.any_broker())
        response = await self._control.send_on(conn, self._metadata_request(), None, self.timeout)
        self.view.update(response, complete=True)

    def _metadata_request(self) -> Any:
        return codec.build(
            codec.request_schema(METADATA, self.metadata_version()),
            topics=None,
            allow_auto_topic_creation=False,
            include_cluster_authorized_operations=False,
            include_topic_authorized_operations=False,
        )

    def any_broker(self) -> int:
        """A broker to send cluster-wide requests to (the controller if known)."""
        if self.view.controller_id in self.view.brokers:
            return self.view.controller_id
        if not self.view.brokers:
            raise UpstreamUnavailable(f"cluster {self.name}: no broker known")
        return min(self.view.brokers)


class UpstreamSession:
    """The broker connections that serve one client connection."""

    def __init__(self, pool: ClusterPool) -> None:
        self.pool = pool
        self._conns: dict[int, AIOKafkaConnection] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._closed = False

    async def connection(self, node_id: int) -> AIOKafkaConnection:
        conn = self._conns.get(node_id)
        if conn is not None and conn.connected():
            return conn
        lock = self._locks.setdefault(node_id, asyncio.Lock())
        async with lock:
            conn = self._conns.get(node_id)
            if conn is not None and conn.connected():
                return conn
            address = self.pool.view.brokers.get(node_id)
            if address is None:
                raise UpstreamUnavailable(f"cluster {self.pool.name}: unknown broker {node_id}")
            if self._closed:
                raise UpstreamUnavailable("session closed")
            conn = await self.pool.connect(*address)
            self._conns[node_id] = conn
            metrics.UPSTREAM_CONNECTIONS.labels(self.pool.name).inc()
            return conn

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
        except UpstreamError:
            metrics.UPSTREAM_ERRORS.labels(self.pool.name, str(request.api_key)).inc()
            # A request that timed out leaves the connection out of step with its
            # responses; start afresh on the next request.
            conn.close()
            raise
        return Reply(codec.decode_response(request.api_key, request.api_version, data, 0), data)

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

    async def close(self) -> None:
        self._closed = True
        for conn in self._conns.values():
            conn.close()
            metrics.UPSTREAM_CONNECTIONS.labels(self.pool.name).dec()
        self._conns.clear()


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("metadata refresh failed: %s", task.exception())


def _ssl_context(config: ClusterConfig) -> ssl.SSLContext:
    tls = config.tls
    context = ssl.create_default_context(cafile=str(tls.ca_file) if tls and tls.ca_file else None)
    if tls is not None:
        context.check_hostname = tls.check_hostname
        if tls.cert_file is not None:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    return context
