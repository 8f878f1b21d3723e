"""What ``GET /sessions`` shows of the client connections open now.

Who each connection is (principal, groups, mechanism), where it came from (listener,
peer, TLS version, cipher and client certificate subject) and for how long it is
trusted. Never a credential: an :class:`~gateway.identity.Identity` holds none, and
nothing else of the session is shown.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from gateway.session import ClientSession


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def describe_session(session: ClientSession, now: float, monotonic: float) -> dict[str, Any]:
    """One session as JSON-ready data; ``now`` and ``monotonic`` are the current
    wall-clock and monotonic times (the session deadline is kept on the latter)."""
    identity = session.identity
    tls = session.tls
    expires = None
    if session.session_deadline is not None:
        expires = now + (session.session_deadline - monotonic)
    return {
        "authenticated": identity is not None,
        "principal": identity.principal if identity else None,
        "groups": list(identity.groups) if identity else [],
        "mechanism": identity.mechanism if identity else session.sasl_mechanism,
        "listener": session.listener.name,
        "security_protocol": session.listener.security_protocol,
        "peer": session.peer,
        "tls": None
        if tls is None
        else {"version": tls.version, "cipher": tls.cipher, "client_subject": tls.client_subject},
        "connected_since": _iso(session.connected_at),
        "session_expires_at": _iso(expires),
        "credential_expires_at": _iso(identity.expires_at if identity else None),
    }


def describe_sessions(sessions: Iterable[ClientSession], now: float) -> list[dict[str, Any]]:
    """Every open session, oldest first."""
    monotonic = time.monotonic()
    ordered = sorted(sessions, key=lambda s: s.connected_at)
    return [describe_session(s, now, monotonic) for s in ordered]
