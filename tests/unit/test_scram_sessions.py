"""SCRAM through a real ClientConnection: the two-step SaslAuthenticate exchange, the
server's final message, re-authentication (KIP-368) and a wrong password's answer."""

from __future__ import annotations

from typing import Any

import pytest
import scramp
from kio.schema.errors import ErrorCode
from kio.schema.sasl_authenticate.v2 import request as authenticate_request
from kio.schema.sasl_handshake.v1 import request as handshake_request
from prometheus_client import REGISTRY

from gateway.identity.scram import format_credential, make_credential
from tests.unit.harness import Harness, eventually
from tests.unit.test_sasl_sessions import written

LISTENER = "harness"
MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
USERS = [
    {
        "name": "alice",
        "groups": ["payments"],
        "scram_sha_256": format_credential(make_credential("SCRAM-SHA-256", "wonderland")),
        "scram_sha_512": format_credential(make_credential("SCRAM-SHA-512", "wonderland")),
    }
]


def scram_harness(max_session: float | None = None) -> Harness:
    return Harness(
        limits={"failed_authentication_delay_seconds": 0},
        overrides={
            "listener": {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanisms": list(MECHANISMS),
            },
            "users": USERS,
            "identity": {"max_session_seconds": max_session},
        },
    )


def authenticate(data: str) -> Any:
    return authenticate_request.SaslAuthenticateRequest(auth_bytes=data.encode())


async def scram_login(
    h: Harness, mechanism: str, password: str = "wonderland", already: int = 0
) -> tuple[Any, scramp.ScramClient]:
    """Handshake and both SCRAM steps; the last SaslAuthenticate answer and the client."""
    client = scramp.ScramClient([mechanism], "alice", password)
    h.client.send(handshake_request.SaslHandshakeRequest(mechanism=mechanism))
    h.client.send(authenticate(client.get_client_first()))
    answers = await written(h, already + 2)
    assert answers[already].body.error_code == ErrorCode.none
    assert answers[already + 1].body.error_code == ErrorCode.none
    client.set_server_first(answers[already + 1].body.auth_bytes.decode())
    h.client.send(authenticate(client.get_client_final()))
    answers = await written(h, already + 3)
    return answers[already + 2].body, client


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("mechanism", MECHANISMS)
async def test_scram_login_authenticates_and_proves_the_server(mechanism: str) -> None:
    async with scram_harness() as h:
        answer, client = await scram_login(h, mechanism)

        assert answer.error_code == ErrorCode.none
        client.set_server_final(answer.auth_bytes.decode())  # raises on a wrong signature
        identity = h.connection.session.identity
        assert identity is not None
        assert (identity.principal, identity.mechanism, identity.groups) == (
            "alice",
            mechanism,
            ("payments",),
        )


async def test_scram_reauthentication_keeps_the_connection() -> None:
    labels = {"listener": LISTENER, "mechanism": "SCRAM-SHA-512"}
    before = sample("gateway_reauthentications_total", **labels)
    async with scram_harness(max_session=60) as h:
        first, _ = await scram_login(h, "SCRAM-SHA-512")
        again, _ = await scram_login(h, "SCRAM-SHA-512", already=3)

        assert first.session_lifetime.total_seconds() > 0
        assert again.error_code == ErrorCode.none
        assert h.is_open
    assert sample("gateway_reauthentications_total", **labels) == before + 1


async def test_scram_wrong_password_gets_a_generic_answer_and_closes() -> None:
    labels = {"listener": LISTENER, "mechanism": "SCRAM-SHA-256"}
    before = sample("gateway_authentication_failures_total", **labels, reason="bad_password")
    async with scram_harness() as h:
        answer, _ = await scram_login(h, "SCRAM-SHA-256", password="queen")

        assert answer.error_code == ErrorCode.sasl_authentication_failed
        assert answer.error_message == "Authentication failed"
        assert answer.auth_bytes == b""
        await eventually(lambda: not h.is_open, "the connection to close")
    after = sample("gateway_authentication_failures_total", **labels, reason="bad_password")
    assert after == before + 1
