"""The admin API of a running gateway in front of the real dev cluster: bearer tokens,
roles, ``/whoami``, ``/sessions`` with a real client connected, and HTTPS."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
import urllib.error
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway import dev
from tests.integration.clients import connected_producer
from tests.integration.conftest import (
    CLIENT_PASSWORD,
    CLIENT_USER,
    GatewayUnderTest,
    admin_get,
    running_gateway,
)

pytestmark = pytest.mark.integration


async def _get(
    url: str, token: str | None = None, context: ssl.SSLContext | None = None
) -> tuple[int, dict[str, str], str]:
    return await asyncio.to_thread(admin_get, url, token, context)


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
        status, _, body = await _get(f"{gateway.admin_url}/sessions", gateway.admin_token)
    finally:
        await asyncio.to_thread(producer.close)

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


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "admin.pem", directory / "admin.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


async def test_admin_api_serves_https_when_tls_is_configured(
    primary: dev.ClusterInfo, tmp_path: Path
) -> None:
    ca, cert, key = _certificates(tmp_path)
    trusting = ssl.create_default_context(cafile=str(ca))

    tls = {"cert_file": str(cert), "key_file": str(key)}
    async with running_gateway(primary, admin={"tls": tls}) as gw:
        assert gw.admin_url.startswith("https://")
        who = await _get(f"{gw.admin_url}/whoami", gw.admin_token, trusting)
        anonymous = await _get(f"{gw.admin_url}/sessions", None, trusting)
        health = await _get(f"{gw.admin_url}/healthz", None, trusting)
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
