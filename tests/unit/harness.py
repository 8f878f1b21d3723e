"""Drive a :class:`~gateway.server.connection.ClientConnection` without a socket or a cluster.

Two fakes stand at the connection's two edges (httpcore's ``MockStream`` idea):

- the client: an ``asyncio.StreamReader`` the test feeds request frames into, and a
  :class:`ClientWriter` that records every ``writelines``/``write`` call and whose
  ``drain`` can be held, to play a client that reads slowly;
- the upstream: a :class:`ScriptedPool`, a real ``ClusterPool`` whose broker
  connections are :class:`ScriptedConnection` objects. Every request the gateway sends
  upstream is recorded as a :class:`Sent`, which the test answers, fails or leaves
  pending. The layout and API versions are set by the test; a metadata refresh is
  counted (and can be held) instead of being sent, and no health check runs.

:class:`Harness` wires a session and a connection as ``gateway.server.app`` does,
runs ``serve()`` as a task, and on exit checks that it ended and left no task behind.
Nothing here sleeps: waiting is :func:`eventually` (bounded ``sleep(0)`` turns).
"""

from __future__ import annotations

import asyncio
import struct
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, cast

from aiokafka.conn import AIOKafkaConnection
from aiokafka.errors import KafkaConnectionError

from gateway.audit.recorder import Recorder
from gateway.config import Config
from gateway.identity.registry import Authenticator
from gateway.pipeline import Pipeline
from gateway.pipeline.audit import audit_stage
from gateway.pipeline.authorize import PolicyStage
from gateway.pipeline.masking import MaskingStage
from gateway.pipeline.policies import PolicyStore
from gateway.protocol import codec
from gateway.protocol.connection import ServerProtocol
from gateway.protocol.versions import IMPLEMENTED
from gateway.server.connection import ClientConnection
from gateway.server.limits import RequestBudget
from gateway.session import ClientSession, Services
from gateway.upstream.boundary import map_errors
from gateway.upstream.pool import ClusterPool
from gateway.upstream.view import PartitionRoute, TopicRoute
from gateway.upstream.wire import EncodedRequest

GATEWAY_NODE = 0
ADVERTISED = ("gateway.test", 9092)
# How many event-loop turns :func:`eventually` and :func:`settle` give the code under test.
TURNS = 200


async def settle(turns: int = TURNS) -> None:
    """Let every task that can run, run (to assert that something did *not* happen)."""
    for _ in range(turns):
        await asyncio.sleep(0)


async def eventually(condition: Callable[[], bool], what: str = "", turns: int = TURNS) -> None:
    """Wait, in event-loop turns, until ``condition()`` holds; fail after ``turns``."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    if not condition():
        raise AssertionError(f"not reached after {turns} loop turns: {what or condition}")


# -- the client side ---------------------------------------------------------------------


def request_frame(body: Any, correlation_id: int, client_id: str | None = "harness") -> bytes:
    """A request as a client puts it on the wire: size prefix, header, body."""
    payload = codec.encode_request_header(
        body.__api_key__, body.__version__, correlation_id, client_id
    ) + codec.encode_body(body)
    return struct.pack(">i", len(payload)) + payload


@dataclass(frozen=True)
class Answer:
    """One response frame the gateway wrote, decoded."""

    correlation_id: int
    body: Any


class ClientWriter:
    """The client's end of the socket as ``ClientConnection`` uses it."""

    def __init__(self) -> None:
        self.calls: list[list[bytes]] = []  # one entry per write/writelines call
        self.drain_calls = 0
        self.closed = False
        self._drained = asyncio.Event()
        self._drained.set()

    def write(self, data: bytes | memoryview) -> None:
        self.calls.append([bytes(data)])

    def writelines(self, data: Iterable[bytes | memoryview]) -> None:
        self.calls.append([bytes(chunk) for chunk in data])

    async def drain(self) -> None:
        self.drain_calls += 1
        await self._drained.wait()

    def hold_drain(self) -> None:
        """From now on ``drain`` blocks, as when the client stops reading."""
        self._drained.clear()

    def release_drain(self) -> None:
        self._drained.set()

    def close(self) -> None:
        self.closed = True

    async def wait_closed(self) -> None:
        return None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("192.0.2.7", 50007)}.get(name, default)

    @property
    def data(self) -> bytes:
        return b"".join(chunk for call in self.calls for chunk in call)


class Client:
    """Sends pipelined requests and decodes what came back."""

    def __init__(self) -> None:
        self.reader = asyncio.StreamReader()
        self.writer = ClientWriter()
        self._asked: dict[int, tuple[int, int]] = {}
        self._next_correlation_id = 1

    def send(self, *bodies: Any) -> list[int]:
        """Pipeline ``bodies`` in one read; their correlation ids, in order."""
        ids, frames = [], []
        for body in bodies:
            correlation_id = self._next_correlation_id
            self._next_correlation_id += 1
            self._asked[correlation_id] = (body.__api_key__, body.__version__)
            frames.append(request_frame(body, correlation_id))
            ids.append(correlation_id)
        self.reader.feed_data(b"".join(frames))
        return ids

    def answers(self) -> list[Answer]:
        """Every response written so far, in the order written."""
        return self.decode(self.writer.data)

    def decode(self, data: bytes) -> list[Answer]:
        found = []
        offset = 0
        while offset < len(data):
            (size,) = struct.unpack_from(">i", data, offset)
            frame = data[offset + 4 : offset + 4 + size]
            assert len(frame) == size, "a response frame was cut short"
            correlation_id = codec.read_correlation_id(frame)
            api_key, api_version = self._asked[correlation_id]
            header = codec.response_header_size(api_key, api_version, frame)
            found.append(
                Answer(
                    correlation_id,
                    codec.decode_response(api_key, api_version, frame, header),
                )
            )
            offset += 4 + size
        return found


# -- the upstream side -------------------------------------------------------------------


@dataclass
class Sent:
    """One request the gateway wrote to an upstream broker, for the test to answer."""

    node: int
    connection: ScriptedConnection
    request: EncodedRequest
    expect_response: bool
    future: asyncio.Future[memoryview | None]

    @property
    def api_key(self) -> int:
        return self.request.api_key

    @property
    def body(self) -> Any:
        """The request as the broker would decode it."""
        header = self.request.build_request_header(0, "scripted").encode()
        return codec.decode_request(bytes(header) + bytes(self.request.encode())).body

    def reply(self, response: Any) -> None:
        """Answer with a response entity (of the request's version)."""
        self.reply_bytes(codec.encode_body(response))

    def reply_bytes(self, data: bytes) -> None:
        """Answer with the bytes of a response body (after its header)."""
        self.future.set_result(memoryview(data))

    def fail(self, exc: BaseException) -> None:
        """Fail the request as aiokafka would (KafkaConnectionError, TimeoutError)."""
        self.future.set_exception(exc)


class ScriptedConnection:
    """Stands in for aiokafka's ``AIOKafkaConnection``: ``send`` records the request
    and returns a future; ``close`` fails what is pending, as aiokafka's does."""

    def __init__(self, pool: ScriptedPool, node: int) -> None:
        self.node = node
        self._pool = pool
        self._open = True
        self._pending: list[Sent] = []

    def connected(self) -> bool:
        return self._open

    def send(
        self, request: EncodedRequest, expect_response: bool = True
    ) -> asyncio.Future[memoryview | None]:
        if not self._open:
            raise KafkaConnectionError(f"No connection to broker {self.node}")
        future: asyncio.Future[memoryview | None] = asyncio.get_running_loop().create_future()
        sent = Sent(self.node, self, request, expect_response, future)
        self._pool.sent.append(sent)
        if expect_response:
            self._pending.append(sent)
        else:
            future.set_result(None)  # aiokafka hands back the socket's drain
        return future

    def close(self, reason: object = None, exc: BaseException | None = None) -> None:
        if not self._open:
            return
        self._open = False
        for sent in self._pending:
            if not sent.future.done():
                sent.fail(KafkaConnectionError(f"Connection to broker {self.node} closed"))
        self._pending.clear()


class ScriptedPool(ClusterPool):
    """A ``ClusterPool`` whose broker connections and metadata reads are the test's."""

    def __init__(self, config: Config) -> None:
        super().__init__("harness", config.clusters.primary, config.limits.upstream_timeout_seconds)
        self.api_versions = dict(IMPLEMENTED)
        self.sent: list[Sent] = []
        self.connections: list[ScriptedConnection] = []
        # Per node: a connect that fails with this aiokafka error, or waits for this event.
        self.refuse: dict[int, BaseException] = {}
        self.connect_gates: dict[int, asyncio.Event] = {}
        self.refreshes = 0
        self.refresh_gate: asyncio.Event | None = None

    def set_layout(self, brokers: Iterable[int], leaders: Mapping[str, Mapping[int, int]]) -> None:
        """Brokers by id and, per topic, partition -> leader (the controller is the
        lowest id)."""
        nodes = sorted(brokers)
        self.view.brokers = {n: (f"broker-{n}.test", 9092) for n in nodes}
        self.view.controller_id = nodes[0] if nodes else -1
        self.view.topics = {
            name: TopicRoute(
                name,
                topic_id(name),
                {index: PartitionRoute(leader, 0) for index, leader in partitions.items()},
            )
            for name, partitions in leaders.items()
        }
        self.view.names_by_id = {r.topic_id: n for n, r in self.view.topics.items() if r.topic_id}

    def sent_to(self, node: int) -> list[Sent]:
        return [s for s in self.sent if s.node == node]

    def pending(self) -> list[Sent]:
        return [s for s in self.sent if not s.future.done()]

    def _node_of(self, host: str, port: int) -> int:
        return next(n for n, address in self.view.brokers.items() if address == (host, port))

    async def _connect(self, host: str, port: int, budget: float | None) -> AIOKafkaConnection:
        node = self._node_of(host, port)
        gate = self.connect_gates.get(node)
        if gate is not None:
            await gate.wait()
        with map_errors(f"cluster {self.name} connect {host}:{port}"):
            refusal = self.refuse.get(node)
            if refusal is not None:
                raise refusal
        conn = ScriptedConnection(self, node)
        self.connections.append(conn)
        return cast(AIOKafkaConnection, conn)

    async def refresh(self) -> None:
        # The test sets the layout; a refresh only counts (and waits when held).
        self.refreshes += 1
        if self.refresh_gate is not None:
            await self.refresh_gate.wait()


def topic_id(name: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"kafka-topic:{name}")


# -- the connection between them ---------------------------------------------------------


def harness_config(overrides: dict[str, Any] | None = None, **limits: Any) -> Config:
    """The harness's config: one PLAINTEXT listener unless ``overrides`` says otherwise
    (``{"listener": {...}}`` is merged into the listener; other keys replace sections)."""
    overrides = dict(overrides or {})
    listener = {
        "name": "harness",
        "bind": "127.0.0.1:0",
        "advertised": f"{ADVERTISED[0]}:{ADVERTISED[1]}",
        "security_protocol": "PLAINTEXT",
        **overrides.pop("listener", {}),
    }
    return Config.model_validate(
        {
            "gateway": {"node_id": GATEWAY_NODE, "cluster_id": "harness-cluster"},
            "listeners": [listener],
            # No canary: it round-trips with aiokafka clients of its own, not through
            # the scripted brokers (the integration tests run it against real ones).
            "clusters": {
                "primary": {
                    "bootstrap_servers": ["bootstrap.test:9092"],
                    "health": {"canary_topic": None},
                }
            },
            "limits": {"shutdown_grace_seconds": 5.0, **limits},
            **overrides,
        }
    )


@dataclass
class Harness:
    """One client connection to the gateway, served by ``ClientConnection.serve()``.

    Use as ``async with Harness() as h:``; leaving the block sends EOF, waits for the
    connection to finish (every answer the test made possible is written first),
    closes the pool and fails if a task started inside is still running.
    """

    limits: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    # The gateway-wide request byte budget, when the test shares or inspects it.
    budget: RequestBudget | None = None
    # Loop time the connection was accepted, when earlier than its serving (TLS).
    accepted: float | None = None
    # Audit on: connection and login events go to this recorder, and the audit stage
    # (writing to the same sink) runs first in the pipeline, before the policy.
    audit: Recorder | None = None
    # Masking on: the masking stage masks with this engine (None: rules are refused).
    masking: Any = None
    client: Client = field(init=False)
    pool: ScriptedPool = field(init=False)
    connection: ClientConnection = field(init=False)
    served: asyncio.Task[None] = field(init=False)
    _tasks_before: set[asyncio.Task[Any]] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        config = harness_config(self.overrides, **self.limits)
        self.client = Client()
        self.pool = ScriptedPool(config)
        services = Services(
            config,
            self.pool,
            Authenticator(config),
            policies=PolicyStore(config.policy.dir),
            audit=self.audit,
            masking=self.masking,
        )
        stage = audit_stage(services)
        if stage is not None:
            services.pipeline = Pipeline(
                [
                    stage,
                    PolicyStage(services.policies),
                    MaskingStage(services.policies, services.masking),
                ]
            )
        listener = config.listeners[0]
        session = ClientSession(
            services=services,
            listener=listener,
            peer="192.0.2.7:50007",
            upstream=self.pool.session(),
            protocol=ServerProtocol(
                lambda: services.versions,
                config.limits.pre_auth_max_frame_bytes,
                config.limits.max_frame_bytes,
            ),
        )
        self.connection = ClientConnection(
            session,
            self.client.reader,
            cast(asyncio.StreamWriter, self.client.writer),
            self.budget,
            self.accepted,
        )

    async def __aenter__(self) -> Harness:
        self._tasks_before = asyncio.all_tasks()
        self.served = asyncio.ensure_future(
            self.connection.serve(
                self.connection.session.services.config.limits.shutdown_grace_seconds
            )
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc is None:
                await self.finish()
        finally:
            if not self.served.done():
                self.served.cancel()
            await asyncio.gather(self.served, return_exceptions=True)
            await self.pool.close()
        if exc is None:
            await self._no_task_left()

    async def finish(self) -> None:
        """The client closes its end; the connection answers what is owed and ends."""
        self.client.reader.feed_eof()
        async with asyncio.timeout(5):
            await self.served

    @property
    def is_open(self) -> bool:
        return not self.served.done() and not self.client.writer.closed

    async def sends(self, count: int) -> list[Sent]:
        """Wait until the upstream has seen ``count`` requests in all; return them."""
        await eventually(lambda: len(self.pool.sent) >= count, f"{count} upstream requests")
        return self.pool.sent[:count]

    async def answers(self, count: int) -> list[Answer]:
        """Wait until ``count`` answers were written; return them."""
        await eventually(lambda: len(self.client.answers()) >= count, f"{count} answers")
        return self.client.answers()

    async def _no_task_left(self) -> None:
        current = asyncio.current_task()
        left: set[asyncio.Task[Any]] = set()
        for _ in range(TURNS):
            left = {
                t
                for t in asyncio.all_tasks() - self._tasks_before
                if t is not current and not t.done()
            }
            if not left:
                return
            await asyncio.sleep(0)
        raise AssertionError(f"tasks left running: {left}")
