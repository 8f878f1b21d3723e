"""SaslHandshake and SaslAuthenticate: client authentication at the gateway, and
re-authentication on the same connection (KIP-368).

The client's credentials are checked against the gateway's own identities; they never
travel upstream, and the upstream's credentials are never accepted here. A failure is
answered with SASL_AUTHENTICATION_FAILED and a generic message after the failure
delay, and the connection closes after that answer; the precise reason goes to the log
and the ``reason`` label of ``gateway_authentication_failures_total`` only.
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import Any

from kio.schema.errors import ErrorCode

from gateway import metrics
from gateway.errors import AuthenticationFailed
from gateway.identity.mechanisms import Challenge, Verified
from gateway.protocol import codec
from gateway.protocol.codec import Request
from gateway.protocol.versions import SASL_AUTHENTICATE, SASL_HANDSHAKE
from gateway.session import ClientSession

log = logging.getLogger(__name__)

GENERIC_FAILURE = "Authentication failed"
# SCRAM needs two client messages, PLAIN and OAUTHBEARER one; anything longer is a
# client going round in circles.
MAX_STEPS = 4


async def handle_handshake(session: ClientSession, request: Request) -> Any:
    cls = codec.response_schema(SASL_HANDSHAKE, request.api_version)
    offered = session.services.authenticator.offered(session.listener)
    mechanism = request.body.mechanism
    reauthenticating = session.is_authenticated
    if not session.listener.uses_sasl or session.sasl_exchange is not None:
        error = ErrorCode.illegal_sasl_state
    elif reauthenticating and (
        request.api_version == 0 or mechanism != session.identity_mechanism()
    ):
        # KIP-368: re-authentication uses SaslAuthenticate frames (handshake v1+) and
        # the mechanism of the first authentication.
        error = ErrorCode.illegal_sasl_state
    elif mechanism not in offered:
        error = ErrorCode.unsupported_sasl_mechanism
        metrics.AUTHENTICATIONS.labels(session.listener.name, "unsupported", "failure").inc()
    else:
        error = ErrorCode.none
        session.sasl_mechanism = mechanism
        session.sasl_exchange = session.services.authenticator.mechanisms[mechanism].start(
            session.auth_context()
        )
        session.sasl_steps = 0
        # After a v0 handshake the tokens come as bare frames, not Kafka requests.
        session.protocol.expects_raw_token = request.api_version == 0
    return codec.build(cls, error_code=error, mechanisms=offered)


async def handle_authenticate(session: ClientSession, request: Request) -> Any:
    cls = codec.response_schema(SASL_AUTHENTICATE, request.api_version)

    def answer(error: ErrorCode, message: str | None, data: bytes, lifetime_ms: int) -> Any:
        return codec.build(
            cls,
            error_code=error,
            error_message=message,
            auth_bytes=data,
            session_lifetime=datetime.timedelta(milliseconds=lifetime_ms),
        )

    if session.sasl_exchange is None:
        return answer(ErrorCode.illegal_sasl_state, "SaslHandshake must come first", b"", 0)
    outcome = await step(session, request.body.auth_bytes)
    if outcome is None:
        return answer(ErrorCode.sasl_authentication_failed, GENERIC_FAILURE, b"", 0)
    data, lifetime = outcome
    # Only SaslAuthenticate v1+ can carry the session lifetime (KIP-368).
    lifetime_ms = 0 if lifetime is None or request.api_version == 0 else int(lifetime * 1000)
    return answer(ErrorCode.none, None, data, max(lifetime_ms, 0))


async def step(session: ClientSession, token: bytes) -> tuple[bytes, float | None] | None:
    """Give one client token to the exchange in progress: ``(server message, session
    lifetime or None)`` to send back, or None when authentication failed (the
    connection then closes after its answer)."""
    exchange = session.sasl_exchange
    mechanism = session.sasl_mechanism or "none"
    authenticator = session.services.authenticator
    assert exchange is not None
    session.sasl_steps += 1
    try:
        if session.sasl_steps > MAX_STEPS:
            raise AuthenticationFailed("too many SASL steps", reason="malformed")
        authenticator.guard.check_allowed(session.address)
        result = await exchange.step(token)
        if isinstance(result, Challenge):
            return result.data, None
        assert isinstance(result, Verified)
        identity = result.identity
        previous = session.identity
        if previous is not None and identity.principal != previous.principal:
            raise AuthenticationFailed(
                f"re-authentication as {identity.principal!r} on a connection of "
                f"{previous.principal!r}",
                reason="principal_changed",
            )
    except AuthenticationFailed as exc:
        await _failed(session, mechanism, exc)
        return None
    session.sasl_exchange = None
    lifetime = _lifetime(identity.expires_at, authenticator.max_session_seconds(mechanism))
    session.authenticated(identity, lifetime)
    audit = session.services.audit
    if audit is not None:
        audit.authentication(session, mechanism, identity.principal, True, None)
    if previous is None:
        metrics.AUTHENTICATIONS.labels(session.listener.name, mechanism, "success").inc()
        log.info(
            "authenticated %s from %s on %s via %s",
            identity.principal,
            session.peer,
            session.listener.name,
            mechanism,
        )
    else:
        metrics.REAUTHENTICATIONS.labels(session.listener.name, mechanism).inc()
        log.debug("re-authenticated %s from %s", identity.principal, session.peer)
    return result.final, lifetime


def _lifetime(expires_at: float | None, max_session: float | None) -> float | None:
    """min(credential expiry - now, configured maximum); None when neither bounds it."""
    if expires_at is None:
        return max_session
    remaining = expires_at - time.time()
    return remaining if max_session is None else min(remaining, max_session)


async def _failed(session: ClientSession, mechanism: str, exc: AuthenticationFailed) -> None:
    session.sasl_exchange = None
    session.close_after_response = True
    count_failure(session, mechanism, exc)
    # The attacker's connection waits, not the gateway's CPU.
    await session.services.authenticator.guard.failed(session.address)


def count_failure(session: ClientSession, mechanism: str, exc: AuthenticationFailed) -> None:
    """Count and log a refused login (SASL or client certificate): the reason goes to the
    metric label and the log, never to the client."""
    listener = session.listener.name
    metrics.AUTHENTICATIONS.labels(listener, mechanism, "failure").inc()
    metrics.AUTHENTICATION_FAILURES.labels(listener, mechanism, exc.reason).inc()
    audit = session.services.audit
    if audit is not None:
        # The fixed class of failure and the name attempted (never the message, which
        # is for the log, and never a secret).
        audit.authentication(session, mechanism, exc.attempted, False, exc.reason)
    log.info(
        "authentication failed from %s on %s via %s (%s): %s",
        session.peer,
        listener,
        mechanism,
        exc.reason,
        exc,
    )
