"""SaslHandshake and SaslAuthenticate: client authentication at the gateway.

The client's credentials are checked against the gateway's own users; they never
travel upstream, and the upstream's credentials are never accepted here.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from kio.schema.errors import ErrorCode

from gateway import metrics
from gateway.errors import AuthenticationFailed
from gateway.identity import plain
from gateway.protocol import codec
from gateway.protocol.codec import Request
from gateway.protocol.versions import SASL_AUTHENTICATE, SASL_HANDSHAKE
from gateway.session import ClientSession

log = logging.getLogger(__name__)

MECHANISMS = (plain.MECHANISM,)


async def handle_handshake(session: ClientSession, request: Request) -> Any:
    cls = codec.response_schema(SASL_HANDSHAKE, request.api_version)
    mechanism = request.body.mechanism
    if not session.listener.uses_sasl or session.is_authenticated:
        error = ErrorCode.illegal_sasl_state
    elif mechanism not in MECHANISMS:
        error = ErrorCode.unsupported_sasl_mechanism
        metrics.AUTHENTICATIONS.labels("unsupported", "rejected").inc()
    else:
        error = ErrorCode.none
        session.sasl_mechanism = mechanism
        # After a v0 handshake the token comes as a bare frame, not a Kafka request.
        session.protocol.expects_raw_token = request.api_version == 0
    return codec.build(cls, error_code=error, mechanisms=MECHANISMS)


async def handle_authenticate(session: ClientSession, request: Request) -> Any:
    cls = codec.response_schema(SASL_AUTHENTICATE, request.api_version)

    def answer(error: ErrorCode, message: str | None) -> Any:
        return codec.build(
            cls,
            error_code=error,
            error_message=message,
            auth_bytes=b"",
            session_lifetime=datetime.timedelta(0),
        )

    if session.sasl_mechanism is None or session.is_authenticated:
        return answer(ErrorCode.illegal_sasl_state, "SaslHandshake must come first")
    if await authenticate(session, request.body.auth_bytes):
        return answer(ErrorCode.none, None)
    return answer(ErrorCode.sasl_authentication_failed, "Authentication failed")


async def authenticate(session: ClientSession, token: bytes) -> bool:
    """Check a token; on failure the connection closes after its answer."""
    mechanism = session.sasl_mechanism or "none"
    try:
        identity = await session.services.authenticator.authenticate(token)
    except AuthenticationFailed as exc:
        metrics.AUTHENTICATIONS.labels(mechanism, "failure").inc()
        log.info("authentication failed from %s: %s", session.peer, exc)
        session.close_after_response = True
        return False
    metrics.AUTHENTICATIONS.labels(mechanism, "success").inc()
    log.info("authenticated %s from %s via %s", identity.principal, session.peer, mechanism)
    session.authenticated(identity)
    return True
