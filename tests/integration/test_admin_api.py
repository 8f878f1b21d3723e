"""The admin API of a running gateway in front of the real dev cluster: bearer tokens,
roles, ``/whoami``, ``/sessions`` with a real client connected, and HTTPS."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import urllib.error
from pathlib import Path

import pytest

from gateway import dev
from tests.certs import TestAuthority
from tests.integration.clients import Endpoint, connected_producer
from tests.integration.conftest import (
    CLIENT_PASSWORD,
    CLIENT_USER,
    GatewayUnderTest,
    admin_get,
    free_port,
    running_gateway,
)
from tests.integration.oidc import SigningKey, jwks

pytestmark = pytest.mark.integration


async def _get(
    url: str, token: str | None = None, context: ssl.SSLContext | None = None
) -> tuple[int, dict[str, str], str]:
    return await asyncio.to_thread(admin_get, url, token, context)


async def _sessions_once_authenticated(gw: GatewayUnderTest, listener: str) -> tuple[int, str]:
    """``/sessions`` once ``listener`` has sessions and all of them have authenticated.

    librdkafka leaves its bootstrap connection for the broker the metadata names (the
    gateway again), so right after connecting that second connection may still be in
    its handshake or login.
    """
    for _ in range(100):
        status, _, body = await _get(f"{gw.admin_url}/sessions", gw.admin_token)
        on_listener = [s for s in json.loads(body)["sessions"] if s["listener"] == listener]
        if on_listener and all(s["authenticated"] for s in on_listener):
            break
        await asyncio.sleep(0.1)
    return status, body


@pytest.mark.parametrize(
    ("path", "token", "status"),
    [
        ("/healthz", None, 200),
        ("/metrics", None, 200),
        ("/whoami", None, 401),
        ("/sessions", None, 401),
        ("/whoami", "wrong", 401),
        ("/sessions", "wrong", 401),
        ("/whoami", "no_role", 200),
        ("/sessions", "no_role", 403),
        ("/whoami", "admin", 200),
        ("/sessions", "admin", 200),
    ],
)
async def test_admin_endpoints_answer_by_token_and_role(
    gateway: GatewayUnderTest, path: str, token: str | None, status: int
) -> None:
    tokens = {
        None: None,
        "wrong": "it-wrong-token-5d1c",
        "no_role": gateway.no_role_token,
        "admin": gateway.admin_token,
    }

    answer, headers, body = await _get(f"{gateway.admin_url}{path}", tokens[token])

    assert answer == status, body
    if status == 401:
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert "error" in json.loads(body)
    if tokens[token] is not None:
        assert tokens[token] not in body


async def test_whoami_names_the_token_holder_and_roles(gateway: GatewayUnderTest) -> None:
    status, _, body = await _get(f"{gateway.admin_url}/whoami", gateway.admin_token)

    assert status == 200
    who = json.loads(body)
    assert who["principal"] == "it-admin"
    assert who["groups"] == ["it-ops"]
    assert who["roles"] == ["admin", "approver", "auditor", "operator"]
    assert who["authenticated_by"] == "static_token"


async def test_sessions_lists_a_connected_sasl_plain_client_without_its_password(
    gateway: GatewayUnderTest,
) -> None:
    producer = await asyncio.to_thread(connected_producer, gateway.sasl)
    try:
        status, body = await _sessions_once_authenticated(gateway, "sasl")
    finally:
        await asyncio.to_thread(producer.close)
    # Once the client has gone, so have its sessions (the list holds open connections only).
    remaining = mine_after = None
    for _ in range(100):
        _, _, after = await _get(f"{gateway.admin_url}/sessions", gateway.admin_token)
        remaining = json.loads(after)["sessions"]
        mine_after = [s for s in remaining if s["principal"] == CLIENT_USER]
        if not mine_after:
            break
        await asyncio.sleep(0.1)

    assert status == 200
    mine = [s for s in json.loads(body)["sessions"] if s["principal"] == CLIENT_USER]
    assert mine, body
    for session in mine:
        assert session["authenticated"] is True
        assert session["mechanism"] == "PLAIN"
        assert session["listener"] == "sasl"
        assert session["security_protocol"] == "SASL_PLAINTEXT"
        assert session["peer"].startswith("127.0.0.1:")
        assert session["tls"] is None
        assert session["connected_since"]
    assert CLIENT_PASSWORD not in body
    assert mine_after == [], remaining


async def test_admin_api_serves_https_when_tls_is_configured(
    primary: dev.ClusterInfo, tmp_path: Path
) -> None:
    ca = TestAuthority(tmp_path, "admin test CA")
    cert, key = ca.issue("127.0.0.1", "admin")

    tls = {"cert_file": str(cert), "key_file": str(key)}
    async with running_gateway(primary, admin={"tls": tls}) as gw:
        assert gw.admin_url.startswith("https://")
        who = await _get(f"{gw.admin_url}/whoami", gw.admin_token, ca.trusting())
        anonymous = await _get(f"{gw.admin_url}/sessions", None, ca.trusting())
        health = await _get(f"{gw.admin_url}/healthz", None, ca.trusting())
        with pytest.raises(OSError):
            # Plain HTTP to the HTTPS port gets no HTTP answer.
            await _get(gw.admin_url.replace("https://", "http://") + "/healthz")
        with pytest.raises(urllib.error.URLError) as untrusted:
            # A client that does not trust the test CA refuses the certificate.
            await _get(f"{gw.admin_url}/healthz", None, ssl.create_default_context())

    assert isinstance(untrusted.value.reason, ssl.SSLCertVerificationError)
    assert who[0] == 200
    assert json.loads(who[2])["principal"] == "it-admin"
    assert anonymous[0] == 401
    assert health[0] == 200


async def test_admin_https_with_required_client_certificates_refuses_callers_without_one(
    primary: dev.ClusterInfo, tmp_path: Path
) -> None:
    ca = TestAuthority(tmp_path, "admin test CA")
    other = TestAuthority(tmp_path, "other CA")
    cert, key = ca.issue("127.0.0.1", "admin")
    client_cert, client_key = ca.issue("sre-laptop", "client", server=False)
    foreign_cert, foreign_key = other.issue("intruder", "foreign", server=False)
    with_cert = ca.trusting()
    with_cert.load_cert_chain(client_cert, client_key)
    with_foreign_cert = ca.trusting()
    with_foreign_cert.load_cert_chain(foreign_cert, foreign_key)

    tls = {
        "cert_file": str(cert),
        "key_file": str(key),
        "ca_file": str(ca.file),
        "client_auth": "required",
    }
    async with running_gateway(primary, admin={"tls": tls}) as gw:
        accepted = await _get(f"{gw.admin_url}/whoami", gw.admin_token, with_cert)
        refused = []
        for context in (ca.trusting(), with_foreign_cert):
            with pytest.raises(OSError) as failure:
                await _get(f"{gw.admin_url}/healthz", None, context)
            refused.append(failure.value)

    assert accepted[0] == 200
    # The certificate opens the channel only: the token is still required and named.
    assert json.loads(accepted[2])["principal"] == "it-admin"
    assert len(refused) == 2


async def test_admin_https_serves_a_renewed_certificate_without_a_restart(
    primary: dev.ClusterInfo, tmp_path: Path
) -> None:
    old_ca = TestAuthority(tmp_path, "old CA")
    new_ca = TestAuthority(tmp_path, "new CA")
    cert, key = old_ca.issue("127.0.0.1", "admin")

    tls = {"cert_file": str(cert), "key_file": str(key), "reload_interval_seconds": 0.2}
    async with running_gateway(primary, admin={"tls": tls}) as gw:
        before = await _get(f"{gw.admin_url}/healthz", None, old_ca.trusting())
        new_ca.issue("127.0.0.1", "admin")
        after = None
        for _ in range(100):
            try:
                after = await _get(f"{gw.admin_url}/healthz", None, new_ca.trusting())
                break
            except urllib.error.URLError:
                await asyncio.sleep(0.1)

    assert before[0] == 200
    assert after is not None, "the renewed certificate was never served"
    assert after[0] == 200


async def test_admin_api_accepts_a_jwt_from_the_oauthbearer_identity_provider(
    primary: dev.ClusterInfo, tmp_path: Path
) -> None:
    key = SigningKey.generate("admin-key")
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(jwks(key)))
    issuer, audience = "https://idp.test", "kafka-gateway"
    now = int(time.time())
    claims = {"iss": issuer, "aud": audience, "iat": now, "nbf": now, "exp": now + 300}
    auditor = key.sign({**claims, "sub": "carol", "groups": ["it-ops"]})
    nobody = key.sign({**claims, "sub": "dave", "groups": ["staff"]})
    forged = SigningKey.generate("admin-key").sign(
        {**claims, "sub": "mallory", "groups": ["it-ops"]}
    )
    identity = {
        "oauthbearer": {"issuer": issuer, "audience": audience, "jwks_file": str(jwks_file)}
    }

    async with running_gateway(primary, identity=identity) as gw:
        who = await _get(f"{gw.admin_url}/whoami", auditor)
        listed = await _get(f"{gw.admin_url}/sessions", auditor)
        without_role = await _get(f"{gw.admin_url}/sessions", nobody)
        refused = await _get(f"{gw.admin_url}/whoami", forged)

    assert who[0] == 200
    body = json.loads(who[2])
    assert (body["principal"], body["authenticated_by"]) == ("carol", "jwt")
    assert body["expires_at"] == now + 300
    assert listed[0] == 200
    assert without_role[0] == 403
    assert refused[0] == 401
    for token in (auditor, nobody, forged):
        assert all(token not in text for _, _, text in (who, listed, without_role, refused))


async def test_sessions_shows_the_tls_details_of_a_client_certificate_connection(
    primary: dev.ClusterInfo, tmp_path: Path
) -> None:
    ca = TestAuthority(tmp_path, "listener CA")
    cert, key = ca.issue("127.0.0.1", "server")
    client_cert, client_key = ca.issue("billing-batch", "client", server=False)
    listener = {
        "name": "mtls",
        "bind": f"127.0.0.1:{free_port()}",
        "security_protocol": "SSL",
        "tls": {
            "cert_file": str(cert),
            "key_file": str(key),
            "ca_file": str(ca.file),
            "client_auth": "required",
        },
    }

    async with running_gateway(primary, listeners=[listener]) as gw:
        host, port = gw.gateway.bound["mtls"]
        client = Endpoint(
            f"{host}:{port}",
            security_protocol="SSL",
            ca_file=str(ca.file),
            cert_file=str(client_cert),
            key_file=str(client_key),
        )
        producer = await asyncio.to_thread(connected_producer, client)
        try:
            status, body = await _sessions_once_authenticated(gw, "mtls")
        finally:
            await asyncio.to_thread(producer.close)

    assert status == 200
    mine = [s for s in json.loads(body)["sessions"] if s["listener"] == "mtls"]
    assert mine, body
    for session in mine:
        assert session["mechanism"] == "SSL"
        assert session["security_protocol"] == "SSL"
        assert session["tls"]["version"] in ("TLSv1.2", "TLSv1.3")
        assert session["tls"]["cipher"]
        assert session["tls"]["client_subject"] == "CN=billing-batch,O=soc2-gateway-dev"
