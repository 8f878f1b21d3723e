"""SaslHandshake and SaslAuthenticate through a real ClientConnection: session
lifetimes, re-authentication on the same connection (KIP-368), expired sessions, and
what a failed attempt shows the client and the metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kio.schema.api_versions.v3 import request as api_versions_request
from kio.schema.errors import ErrorCode
from kio.schema.sasl_authenticate.v2 import request as authenticate_request
from kio.schema.sasl_handshake.v1 import request as handshake_request
from prometheus_client import REGISTRY

from gateway.identity.passwords import hash_password
from tests.unit.harness import Harness, eventually

PASSWORDS = {"alice": "wonderland", "bob": "builder"}
USERS = [
    {"name": name, "password_hash": hash_password(password, 1000)}
    for name, password in PASSWORDS.items()
]
LISTENER = "harness"


def overrides(max_session: float | None = None) -> dict[str, Any]:
    return {
        "listener": {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanisms": ["PLAIN"]},
        "users": USERS,
        "identity": {"max_session_seconds": max_session},
    }


def sasl_harness(max_session: float | None = None) -> Harness:
    return Harness(
        limits={"failed_authentication_delay_seconds": 0}, overrides=overrides(max_session)
    )


def handshake(mechanism: str = "PLAIN") -> Any:
    return handshake_request.SaslHandshakeRequest(mechanism=mechanism)


def plain(user: str, password: str | None = None) -> Any:
    secret = PASSWORDS[user] if password is None else password
    return authenticate_request.SaslAuthenticateRequest(
        auth_bytes=f"\x00{user}\x00{secret}".encode()
    )


def api_versions() -> Any:
    return api_versions_request.ApiVersionsRequest(
        client_software_name="harness", client_software_version="1"
    )


async def written(h: Harness, count: int) -> list[Any]:
    """Wait (in real time: password checks run on worker threads) for ``count`` answers."""
    async with asyncio.timeout(5):
        while len(h.client.answers()) < count:
            await asyncio.sleep(0.005)
    return h.client.answers()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def login(h: Harness, user: str, already: int = 0) -> Any:
    """Handshake and authenticate as ``user``; the SaslAuthenticate answer."""
    h.client.send(handshake())
    h.client.send(plain(user))
    answers = await written(h, already + 2)
    assert answers[already].body.error_code == ErrorCode.none
    return answers[already + 1].body


async def test_login_without_a_session_limit_reports_no_lifetime() -> None:
    async with sasl_harness() as h:
        answer = await login(h, "alice")

        assert answer.error_code == ErrorCode.none
        assert answer.session_lifetime.total_seconds() == 0
        assert h.connection.session.identity is not None
        assert h.connection.session.identity.principal == "alice"
        assert h.connection.session.identity.listener == LISTENER


async def test_login_reports_the_configured_session_lifetime() -> None:
    async with sasl_harness(max_session=60) as h:
        answer = await login(h, "alice")

        assert 59 <= answer.session_lifetime.total_seconds() <= 60


async def test_reauthentication_as_the_same_principal_keeps_the_connection() -> None:
    before = sample("gateway_reauthentications_total", listener=LISTENER, mechanism="PLAIN")
    async with sasl_harness(max_session=60) as h:
        await login(h, "alice")
        again = await login(h, "alice", already=2)

        assert again.error_code == ErrorCode.none
        assert again.session_lifetime.total_seconds() > 0
        assert h.is_open
    after = sample("gateway_reauthentications_total", listener=LISTENER, mechanism="PLAIN")
    assert after == before + 1


async def test_reauthentication_as_another_principal_is_refused_and_closes() -> None:
    async with sasl_harness(max_session=60) as h:
        await login(h, "alice")
        h.client.send(handshake(), plain("bob"))
        answers = await written(h, 4)

        assert answers[3].body.error_code == ErrorCode.sasl_authentication_failed
        await eventually(lambda: not h.is_open, "the connection to close")
        assert h.connection.session.identity is not None
        assert h.connection.session.identity.principal == "alice"


async def test_expired_session_is_closed_on_its_next_request() -> None:
    before = sample("gateway_sessions_expired_total", listener=LISTENER)
    async with sasl_harness(max_session=0.2) as h:
        await login(h, "alice")
        await asyncio.sleep(0.3)
        h.client.send(api_versions())

        await eventually(lambda: not h.is_open, "the expired session to close")
        assert len(h.client.answers()) == 2  # the ApiVersions request got no answer
        assert h.connection.close_reason == "session expired"
    assert sample("gateway_sessions_expired_total", listener=LISTENER) == before + 1


async def test_expired_session_may_still_reauthenticate_and_go_on() -> None:
    async with sasl_harness(max_session=0.2) as h:
        await login(h, "alice")
        await asyncio.sleep(0.3)
        again = await login(h, "alice", already=2)
        h.client.send(api_versions())
        answers = await written(h, 5)

        assert again.error_code == ErrorCode.none
        assert answers[4].body.error_code == ErrorCode.none
        assert h.is_open


async def test_reauthentication_with_a_v0_handshake_is_refused() -> None:
    async with sasl_harness(max_session=60) as h:
        await login(h, "alice")
        h.client.send(handshake_v0())
        answers = await written(h, 3)

        assert answers[2].body.error_code == ErrorCode.illegal_sasl_state


def handshake_v0() -> Any:
    from kio.schema.sasl_handshake.v0 import request as v0

    return v0.SaslHandshakeRequest(mechanism="PLAIN")


async def test_wrong_password_gets_a_generic_answer_and_a_counted_reason() -> None:
    labels = {"listener": LISTENER, "mechanism": "PLAIN"}
    before = sample("gateway_authentication_failures_total", **labels, reason="bad_password")
    async with sasl_harness() as h:
        h.client.send(handshake(), plain("alice", "not-her-password"))
        answers = await written(h, 2)

        await eventually(lambda: not h.is_open, "the connection to close")
        assert answers[1].body.error_code == ErrorCode.sasl_authentication_failed
        assert answers[1].body.error_message == "Authentication failed"
        assert h.connection.close_reason == "authentication failed"
    after = sample("gateway_authentication_failures_total", **labels, reason="bad_password")
    assert after == before + 1


async def test_mechanism_not_offered_by_the_listener_is_unsupported() -> None:
    async with sasl_harness() as h:
        h.client.send(handshake("SCRAM-SHA-256"))
        (answer,) = await written(h, 1)

        assert answer.body.error_code == ErrorCode.unsupported_sasl_mechanism
        assert list(answer.body.mechanisms) == ["PLAIN"]


@pytest.mark.parametrize("listener", [{"security_protocol": "PLAINTEXT"}])
async def test_handshake_on_a_listener_without_sasl_is_an_illegal_state(
    listener: dict[str, str],
) -> None:
    async with Harness(overrides={"listener": listener}) as h:
        h.client.send(handshake())
        (answer,) = await written(h, 1)

        assert answer.body.error_code == ErrorCode.illegal_sasl_state
