"""Who a client is: the identity every later control keys on, and how it is proven.

One :class:`Identity` type everywhere: principal, groups, how it authenticated, on
which listener, from which address, with which TLS details. Mechanisms
(``plain``, ``scram``, ``oauthbearer``, ``tls``) establish it; ``accounts`` holds the
configured identities and their credentials; ``guard`` makes failed attempts cost the
caller, not the gateway. Nothing here touches sockets or Kafka messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class TlsDetails:
    """What the TLS handshake of a connection established."""

    version: str  # "TLSv1.3"
    cipher: str
    # The verified client certificate, when one was presented: its subject as an
    # RFC 2253 string and its subject alternative names ("DNS:x", "URI:x", "email:x").
    client_subject: str | None = None
    client_sans: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated (or deliberately anonymous) principal and how it got here."""

    principal: str
    mechanism: str  # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER, SSL or none
    groups: tuple[str, ...] = field(default=())
    listener: str = ""
    peer: str = ""
    tls: TlsDetails | None = None
    # Wall-clock time (seconds since the epoch) after which the credential that proved
    # this identity is no longer valid (a token's exp); None when it does not expire.
    expires_at: float | None = None
    # A token's claims that policies may name (subjects' claims): (name, value) for each
    # string, number or boolean claim and each such item of a list claim, as text.
    claims: tuple[tuple[str, str], ...] = field(default=())


ANONYMOUS = Identity(principal="anonymous", mechanism="none")
