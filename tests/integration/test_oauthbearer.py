"""SASL/OAUTHBEARER end to end: real clients get tokens from a loopback identity
provider (client-credentials grant) and produce and consume through the gateway, which
checks them against the provider's JWKS; refused tokens are counted by reason; Java
re-authenticates on one connection past its token's lifetime (KIP-368); a session that
expires without re-authenticating is closed on its next request."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from kio.schema.errors import ErrorCode
from kio.schema.metadata.v12 import request as metadata_request
from kio.schema.sasl_authenticate.v2 import request as authenticate_request
from kio.schema.sasl_handshake.v1 import request as handshake_request
from prometheus_client import REGISTRY, generate_latest

from gateway import dev
from gateway.config import OAuthBearerConfig
from gateway.errors import AuthenticationFailed
from gateway.identity.guard import AuthGuard
from gateway.identity.oauthbearer import JwtValidator
from gateway.protocol import codec
from tests.integration.clients import (
    ClientError,
    Endpoint,
    Record,
    aconsume,
    acreate_topic,
    aproduce,
    arun_java_tool,
    unique_topic,
)
from tests.integration.conftest import GatewayUnderTest, SessionLog, running_gateway
from tests.integration.oidc import Client, IdentityProvider, tls_files

pytestmark = pytest.mark.integration

MAX_SESSION_SECONDS = 8
CLIENTS = {
    "orders": Client(secret="orders-secret", groups=["payments"]),
    "short-lived": Client(secret="short-secret", lifetime=20),
    "elsewhere": Client(secret="elsewhere-secret", claims={"aud": "another-service"}),
}


@pytest.fixture(scope="module")
def idp() -> Iterator[IdentityProvider]:
    with IdentityProvider(clients=CLIENTS) as provider:
        yield provider


@pytest.fixture(scope="module")
async def gw(
    primary: dev.ClusterInfo, idp: IdentityProvider, session_log: SessionLog
) -> AsyncIterator[GatewayUnderTest]:
    identity = {
        "oauthbearer": {
            "issuer": idp.issuer,
            "audience": idp.audience,
            "jwks_url": idp.jwks_url,
            "jwks_min_refetch_seconds": 1,
            # Expired means expired: the re-authentication test relies on it.
            "leeway_seconds": 1,
            "max_session_seconds": MAX_SESSION_SECONDS,
        }
    }
    async with running_gateway(
        primary, identity=identity, sasl_mechanisms=["PLAIN", "OAUTHBEARER"]
    ) as running:
        yield running


def oauth(gw: GatewayUnderTest, idp: IdentityProvider | None, client: str = "orders") -> Endpoint:
    """OAUTHBEARER as ``client`` with tokens from ``idp``; None: Kafka's unsecured
    login module (Java only), whose tokens are unsigned."""
    return Endpoint(
        gw.sasl.bootstrap,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="OAUTHBEARER",
        username=client,
        password=CLIENTS[client].secret if client in CLIENTS else None,
        oauth_token_url=idp.token_url if idp is not None else None,
    )


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def failures(reason: str) -> float:
    labels = {"listener": "sasl", "mechanism": "OAUTHBEARER", "reason": reason}
    return sample("gateway_authentication_failures_total", **labels)


RECORDS = [Record(0, -1, b"k%d" % i, b"order-%d" % i) for i in range(5)]


@pytest.mark.parametrize("client", ["java", "confluent"])
async def test_client_with_identity_provider_tokens_produces_and_consumes(
    gw: GatewayUnderTest, idp: IdentityProvider, client: str
) -> None:
    topic = unique_topic(f"oauth-{client}")
    await acreate_topic(gw.sasl, topic, 1)
    issued = idp.tokens_issued
    before = sample(
        "gateway_authentications_total", listener="sasl", mechanism="OAUTHBEARER", result="success"
    )
    ep = oauth(gw, idp)
    await aproduce(client, ep, topic, RECORDS, timeout=60)
    got = await aconsume(client, ep, topic, 1, len(RECORDS), timeout=60)

    assert [(r.key, r.value) for r in got] == [(r.key, r.value) for r in RECORDS]
    assert idp.tokens_issued > issued  # the tokens came from the provider's endpoint
    after = sample(
        "gateway_authentications_total", listener="sasl", mechanism="OAUTHBEARER", result="success"
    )
    assert after > before


async def test_kafkas_unsecured_jws_login_module_is_refused(gw: GatewayUnderTest) -> None:
    topic = unique_topic("oauth-unsecured")
    await acreate_topic(gw.sasl, topic, 1)
    before = failures("alg_not_allowed")
    with pytest.raises(ClientError, match="(?i)authentication"):
        await aproduce("java", oauth(gw, None, "orders"), topic, RECORDS[:1], timeout=60)
    assert failures("alg_not_allowed") > before


async def test_token_for_another_audience_is_refused_and_counted_with_its_reason(
    gw: GatewayUnderTest, idp: IdentityProvider
) -> None:
    topic = unique_topic("oauth-audience")
    await acreate_topic(gw.sasl, topic, 1)
    before = failures("bad_audience")
    # librdkafka ends with an authentication error on SASL_AUTHENTICATION_FAILED (no
    # RFC 7628 error challenge is needed), as the Java client does above.
    with pytest.raises(ClientError, match="(?i)authentication"):
        await aproduce("confluent", oauth(gw, idp, "elsewhere"), topic, RECORDS[:1], timeout=30)
    assert failures("bad_audience") > before


async def test_java_reauthenticates_on_one_connection_past_the_token_lifetime(
    gw: GatewayUnderTest, idp: IdentityProvider, session_log: SessionLog
) -> None:
    topic = unique_topic("oauth-reauth")
    await acreate_topic(gw.sasl, topic, 1)
    ep = oauth(gw, idp, "short-lived")
    reauth_before = sample(
        "gateway_reauthentications_total", listener="sasl", mechanism="OAUTHBEARER"
    )
    expired_before = sample("gateway_sessions_expired_total", listener="sasl")
    lines_before = len(session_log.lines)
    issued = idp.tokens_issued
    records = 70
    # 2 records a second for 35 s, past the 20 s tokens and several 8 s sessions.
    output = await arun_java_tool(
        ep,
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic", topic,
        "--num-records", str(records),
        "--throughput", "2",
        "--record-size", "64",
        "--producer-props", f"bootstrap.servers={ep.bootstrap}", "acks=all", "linger.ms=0",
        config_option="--producer.config",
        timeout=120,
    )  # fmt: skip

    assert f"{records} records sent" in output
    # The first token expired during the run: the client fetched a fresh one.
    assert idp.tokens_issued - issued >= 2
    reauths = sample("gateway_reauthentications_total", listener="sasl", mechanism="OAUTHBEARER")
    assert reauths - reauth_before >= 3
    assert sample("gateway_sessions_expired_total", listener="sasl") == expired_before
    # One connection re-authenticated again and again, past the first token's expiry.
    peers: dict[str, int] = {}
    for line in session_log.lines[lines_before:]:
        found = re.search(r"re-authenticated short-lived from (\S+)", line)
        if found:
            peers[found.group(1)] = peers.get(found.group(1), 0) + 1
    assert max(peers.values(), default=0) >= 3, peers
    consumed = await aconsume("confluent", oauth(gw, idp), topic, 1, records, timeout=60)
    assert len(consumed) == records


class RawSasl:
    """One connection speaking the SASL requests by hand, to hold a session open
    without re-authenticating, as an old or broken client would."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self._next_id = 0

    def send(self, body: Any) -> None:
        self._next_id += 1
        header = codec.encode_request_header(
            body.__api_key__, body.__version__, self._next_id, "raw-oauth"
        )
        payload = header + codec.encode_body(body)
        self.writer.write(struct.pack(">i", len(payload)) + payload)

    async def answer(self, body: Any) -> Any:
        size = struct.unpack(">i", await asyncio.wait_for(self.reader.readexactly(4), 30))[0]
        data = await asyncio.wait_for(self.reader.readexactly(size), 30)
        offset = codec.response_header_size(body.__api_key__, body.__version__, data)
        return codec.decode_response(body.__api_key__, body.__version__, data, offset)

    async def ask(self, body: Any) -> Any:
        self.send(body)
        await self.writer.drain()
        return await self.answer(body)

    async def authenticate(self, token: str) -> Any:
        """Handshake and authenticate with ``token``: the SaslAuthenticate answer."""
        shake = await self.ask(handshake_request.SaslHandshakeRequest(mechanism="OAUTHBEARER"))
        assert shake.error_code == ErrorCode.none
        return await self.ask(
            authenticate_request.SaslAuthenticateRequest(
                auth_bytes=f"n,,\x01auth=Bearer {token}\x01\x01".encode()
            )
        )


@contextlib.asynccontextmanager
async def raw_sasl(bootstrap: str) -> AsyncIterator[RawSasl]:
    host, port = bootstrap.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        yield RawSasl(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


METADATA = metadata_request.MetadataRequest(
    topics=None,
    allow_auto_topic_creation=False,
    include_topic_authorized_operations=False,
)


async def test_session_expired_without_reauthentication_is_closed_on_its_next_request(
    gw: GatewayUnderTest, idp: IdentityProvider
) -> None:
    expired_before = sample("gateway_sessions_expired_total", listener="sasl")
    token = idp.token_for("orders")
    async with raw_sasl(gw.sasl.bootstrap) as client:
        auth = await client.authenticate(token)
        assert auth.error_code == ErrorCode.none
        lifetime = auth.session_lifetime.total_seconds()
        assert 0 < lifetime <= MAX_SESSION_SECONDS
        assert (await client.ask(METADATA)).brokers  # served while the session lasts
        await asyncio.sleep(lifetime + 0.5)
        client.send(METADATA)
        await client.writer.drain()
        # The gateway closes the connection instead of answering.
        with pytest.raises(asyncio.IncompleteReadError):
            await client.answer(METADATA)
    assert sample("gateway_sessions_expired_total", listener="sasl") == expired_before + 1


async def test_rotated_signing_key_is_accepted_after_one_jwks_refetch(
    gw: GatewayUnderTest, idp: IdentityProvider
) -> None:
    await asyncio.sleep(1.1)  # past jwks_min_refetch_seconds since any earlier read
    fetched = idp.jwks_requests
    idp.rotate()
    token = idp.token_for("orders")
    async with raw_sasl(gw.sasl.bootstrap) as client:
        auth = await client.authenticate(token)

    assert auth.error_code == ErrorCode.none
    assert idp.jwks_requests == fetched + 1


async def test_flood_of_unknown_kids_costs_one_jwks_fetch(
    primary: dev.ClusterInfo, idp: IdentityProvider
) -> None:
    identity = {
        "oauthbearer": {
            "issuer": idp.issuer,
            "audience": idp.audience,
            "jwks_url": idp.jwks_url,
            "jwks_min_refetch_seconds": 60,
        }
    }
    before = failures("unknown_kid")
    fetched = idp.jwks_requests
    claims = idp.claims_for("orders")
    async with running_gateway(
        primary,
        identity=identity,
        sasl_mechanisms=["OAUTHBEARER"],
        failed_authentication_delay_seconds=0,
    ) as flooded:

        async def attempt() -> Any:
            token = idp.signing_key.sign(claims, headers={"kid": secrets.token_hex(8)})
            async with raw_sasl(flooded.sasl.bootstrap) as client:
                return (await client.authenticate(token)).error_code

        codes = await asyncio.gather(*(attempt() for _ in range(100)))

    assert set(codes) == {ErrorCode.sasl_authentication_failed}
    assert idp.jwks_requests - fetched == 1
    assert failures("unknown_kid") == before + 100


# -- reading the JWKS over the network --------------------------------------------------------


@contextlib.asynccontextmanager
async def validator(
    idp: IdentityProvider, jwks_url: str, ca_file: Path | None = None
) -> AsyncIterator[JwtValidator]:
    cfg = OAuthBearerConfig(
        issuer=idp.issuer, audience=idp.audience, jwks_url=jwks_url, jwks_ca_file=ca_file
    )
    guard = AuthGuard(workers=1, per_address=1, failures_per_minute=100, delay=0)
    try:
        yield JwtValidator(cfg, guard)
    finally:
        guard.close()


def jwks_failures() -> float:
    return sample("gateway_jwks_fetches_total", result="failed")


async def test_https_jwks_is_verified_against_the_configured_ca(tmp_path: Path) -> None:
    ca, cert, key = tls_files(tmp_path)
    with IdentityProvider(clients=CLIENTS, tls=(cert, key)) as https_idp:
        async with validator(https_idp, https_idp.jwks_url, ca) as checker:
            identity = await checker.validate(https_idp.token_for("orders"))

    assert https_idp.jwks_url.startswith("https://")
    assert identity.principal == "orders"
    assert identity.groups == ("payments",)


async def test_https_jwks_from_an_untrusted_server_is_not_read(tmp_path: Path) -> None:
    _, cert, key = tls_files(tmp_path)
    failed = jwks_failures()
    with IdentityProvider(clients=CLIENTS, tls=(cert, key)) as https_idp:
        async with validator(https_idp, https_idp.jwks_url) as checker:
            with pytest.raises(AuthenticationFailed) as caught:
                await checker.validate(https_idp.token_for("orders"))

    assert caught.value.reason == "unknown_kid"
    assert jwks_failures() == failed + 1


@pytest.mark.parametrize("path", ["/huge-jwks", "/moved-jwks"])
async def test_oversized_or_redirected_jwks_is_not_read(idp: IdentityProvider, path: str) -> None:
    failed = jwks_failures()
    async with validator(idp, idp.issuer + path) as checker:
        with pytest.raises(AuthenticationFailed) as caught:
            await checker.validate(idp.token_for("orders"))

    assert caught.value.reason == "unknown_kid"
    assert jwks_failures() == failed + 1


async def test_tokens_and_client_secrets_appear_in_no_log_line_or_metric(
    gw: GatewayUnderTest, idp: IdentityProvider, session_log: SessionLog
) -> None:
    # The module's last test: every token the others used was issued by idp.
    secrets_seen = [*idp.issued, *(c.secret for c in CLIENTS.values())]
    assert len(idp.issued) > 5
    exported = generate_latest(REGISTRY).decode()
    for secret in secrets_seen:
        assert secret not in exported
        signature = secret.rsplit(".", 1)[-1]
        assert not any(secret in line or signature in line for line in session_log.lines)
