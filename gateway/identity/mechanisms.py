"""The shape every SASL mechanism has: an exchange of tokens that ends in an identity.

A connection starts one :class:`Exchange` per authentication (and per
re-authentication, KIP-368). Each SaslAuthenticate token is given to
:meth:`Exchange.step`, which answers with a :class:`Challenge` (send its bytes, expect
another token) or :class:`Verified` (authenticated; send ``final`` to the client), or
raises :class:`~gateway.errors.AuthenticationFailed` whose ``reason`` is a fixed word
for metrics and logs and whose message never contains a secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gateway.identity import Identity, TlsDetails


@dataclass(frozen=True, slots=True)
class AuthContext:
    """Where an authentication attempt comes from."""

    listener: str
    peer: str  # "ip:port"
    address: str  # the peer's IP address, the unit of per-source limits
    tls: TlsDetails | None = None
    # On re-authentication (KIP-368): who the connection is now. A different
    # principal is refused by the caller, not by the mechanism.
    current: Identity | None = None


@dataclass(frozen=True, slots=True)
class Challenge:
    """The server's next message; the client answers with another token."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Verified:
    """The client proved ``identity``; ``final`` is the server's last message to it
    (SCRAM's server-final-message; empty for PLAIN and OAUTHBEARER)."""

    identity: Identity
    final: bytes = b""


Step = Challenge | Verified


class Exchange(Protocol):
    """One authentication attempt with one mechanism."""

    async def step(self, token: bytes) -> Step: ...


class Mechanism(Protocol):
    """A SASL mechanism the gateway offers, e.g. ``SCRAM-SHA-256``."""

    name: str

    def start(self, context: AuthContext) -> Exchange:
        """A fresh exchange for one attempt."""
        ...
