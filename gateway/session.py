"""Per-connection state shared by the handlers: who the client is and how to reach upstream.

It holds no socket; the server owns I/O and gives the handlers a session.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.config import Config, ListenerConfig
from gateway.identity import ANONYMOUS, Identity, TlsDetails
from gateway.identity.mechanisms import AuthContext, Exchange
from gateway.identity.registry import Authenticator
from gateway.pipeline.policies import PolicyStore
from gateway.protocol.connection import ServerProtocol
from gateway.protocol.sequences import SequenceGuard
from gateway.protocol.versions import VersionRange, advertised, common
from gateway.upstream.connections import UpstreamSession
from gateway.upstream.pool import ClusterPool

if TYPE_CHECKING:
    # Stages see sessions: the pipeline module imports this one.
    from gateway.audit.recorder import Recorder
    from gateway.failover.watch import ReplicationWatch
    from gateway.masking.engine import MaskingEngine
    from gateway.pipeline import Pipeline


class OpenSessions:
    """The client sessions whose connections are open now (for the admin API's
    ``/sessions``). A session is added when its connection is accepted and removed
    when it closes, so this holds exactly the open connections and no more."""

    def __init__(self) -> None:
        # Keyed by id(): sessions are mutable dataclasses, hence unhashable.
        self._open: dict[int, ClientSession] = {}

    def add(self, session: ClientSession) -> None:
        self._open[id(session)] = session

    def remove(self, session: ClientSession) -> None:
        self._open.pop(id(session), None)

    def __iter__(self) -> Iterator[ClientSession]:
        return iter(list(self._open.values()))

    def __len__(self) -> int:
        return len(self._open)


@dataclass
class Services:
    """What every connection shares: config, the active cluster (and the standby one),
    authenticators, the policy in force, and the sessions open now."""

    config: Config
    pool: ClusterPool
    authenticator: Authenticator
    policies: PolicyStore = field(default_factory=lambda: PolicyStore(None))
    sessions: OpenSessions = field(default_factory=OpenSessions)
    # The stages every request passes (gateway.pipeline.standard builds them from the
    # above when the first connection needs them).
    pipeline: Pipeline | None = None
    # Connection and login events; None when audit is off (each hook is one ``if``).
    audit: Recorder | None = None
    # Masks fetched records by the policy's masking rules; None without ``masking:``
    # (the masking stage then refuses what rules name: it cannot mask it).
    masking: MaskingEngine | None = None
    # The other configured cluster, health-checked beside the active one (``pool``);
    # None when only one cluster is configured.
    standby: ClusterPool | None = None
    # MirrorMaker's lag from the active cluster to the standby one, measured in the
    # background; None without a standby cluster.
    replication: ReplicationWatch | None = None
    _versions: tuple[object, object, dict[int, VersionRange]] | None = field(
        init=False, default=None
    )

    @property
    def versions(self) -> dict[int, VersionRange]:
        """What ApiVersions advertises; recomputed only when an upstream's table changes.

        With a standby cluster, only what both clusters speak (once the standby's
        table is known), so that a switch between them never withdraws a version a
        client negotiated."""
        upstream = self.pool.api_versions
        other = self.standby.api_versions if self.standby is not None else None
        cached = self._versions
        if cached is None or cached[0] is not upstream or cached[1] is not other:
            both = common(upstream, other) if other else upstream
            self._versions = cached = (upstream, other, advertised(both))
        return cached[2]


@dataclass
class ClientSession:
    """One client connection's state."""

    services: Services
    listener: ListenerConfig
    peer: str
    upstream: UpstreamSession
    protocol: ServerProtocol
    tls: TlsDetails | None = None
    identity: Identity | None = None
    # The mechanism chosen by the last SaslHandshake and the exchange it started.
    sasl_mechanism: str | None = None
    sasl_exchange: Exchange | None = None
    sasl_steps: int = 0
    # time.monotonic() after which the session must re-authenticate (KIP-368).
    session_deadline: float | None = None
    connected_at: float = field(default_factory=time.time)
    # Names this one connection in audit events (session replay), made at accept.
    connection_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # Set when the response being written must be the last (failed authentication).
    close_after_response: bool = False
    # Held while a Produce is routed and written upstream, so that requests for one
    # partition leave in the order they arrived (idempotent producers rely on it).
    produce_order: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Holds an idempotent producer's later batches back while an earlier one of the
    # same partition failed upstream (see gateway.protocol.sequences).
    produce_sequences: SequenceGuard = field(default_factory=SequenceGuard)

    def __post_init__(self) -> None:
        if self.listener.security_protocol == "PLAINTEXT":
            self.authenticated(ANONYMOUS)

    @property
    def is_authenticated(self) -> bool:
        return self.identity is not None

    @property
    def address(self) -> str:
        """The peer's IP address (the unit of per-source limits)."""
        return self.peer.rpartition(":")[0].strip("[]") or self.peer

    def auth_context(self) -> AuthContext:
        return AuthContext(
            listener=self.listener.name,
            peer=self.peer,
            address=self.address,
            tls=self.tls,
            current=self.identity,
        )

    def authenticated(self, identity: Identity, lifetime: float | None = None) -> None:
        """The connection is ``identity`` (with this listener, peer and TLS details) for
        ``lifetime`` seconds, or until it closes when None."""
        self.identity = dataclasses.replace(
            identity, listener=self.listener.name, peer=self.peer, tls=self.tls
        )
        self.session_deadline = None if lifetime is None else time.monotonic() + lifetime
        self.protocol.authenticated()

    def identity_mechanism(self) -> str | None:
        return self.identity.mechanism if self.identity is not None else None

    @property
    def session_expired(self) -> bool:
        return self.session_deadline is not None and time.monotonic() >= self.session_deadline

    @property
    def node_id(self) -> int:
        return self.services.config.gateway.node_id

    @property
    def advertised_address(self) -> tuple[str, int]:
        return self.listener.advertised_address
