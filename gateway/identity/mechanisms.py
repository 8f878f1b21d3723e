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

from gateway.identity import Identity


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
