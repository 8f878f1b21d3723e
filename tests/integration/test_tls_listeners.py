"""TLS and mutual TLS client listeners, driven by real clients against real Kafka.

The gateway serves two TLS listeners with the certificates ``gateway dev up`` writes
(a local CA, a server certificate for 127.0.0.1): ``sasl-ssl`` (SASL/PLAIN over TLS)
and ``mtls`` (SSL, client certificate required; its subject is the identity).
confluent-kafka, Kafka's Java console tools and kcat produce and consume on both; a
certificate from another CA and a plaintext client are refused at the handshake; a
certificate replaced on disk is served to new connections without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from prometheus_client import REGISTRY

from gateway import dev
from gateway.dev.certs import CertificateAuthority, cert_pem, key_pem, subject
from gateway.protocol import codec
from tests.integration.clients import (
    ClientError,
    Endpoint,
    Record,
    aconsume,
    acreate_topic,
    aproduce,
    list_topics,
    unique_topic,
)
from tests.integration.conftest import (
    CLIENT_PASSWORD,
    CLIENT_USER,
    GatewayUnderTest,
    SessionLog,
    free_port,
    running_gateway,
)

pytestmark = pytest.mark.integration

TLS_CLIENTS = ("confluent", "java", "kcat")
SERVICE_SUBJECT = "CN=it-orders,O=soc2-gateway-dev"
SERVICE_ACCOUNT = "orders-svc"


@dataclass(frozen=True)
class TlsGateway:
    running: GatewayUnderTest
    sasl_ssl: Endpoint  # SASL/PLAIN over TLS as CLIENT_USER
    mtls: Endpoint  # the dev client certificate (mapped to principal dev-client)
    service: Endpoint  # a certificate whose subject is SERVICE_ACCOUNT's tls_subject
    stranger: Endpoint  # a client certificate from a CA the gateway does not trust
    tls_only: Endpoint  # SSL without client certificates: anonymous
    certs: dev.DevCertificates


def _tls_listeners(certs: dev.DevCertificates) -> list[dict[str, object]]:
    server = {"cert_file": str(certs.server.cert_file), "key_file": str(certs.server.key_file)}
    return [
        {
            "name": "sasl-ssl",
            "bind": f"127.0.0.1:{free_port()}",
            "security_protocol": "SASL_SSL",
            "tls": server,
        },
        {
            "name": "mtls",
            "bind": f"127.0.0.1:{free_port()}",
            "security_protocol": "SSL",
            "tls": {
                **server,
                "ca_file": str(certs.ca_file),
                "client_auth": "required",
                "principal_mapping_rules": ["RULE:^CN=([^,]+),O=soc2-gateway-dev$/$1/L"],
            },
        },
        {
            "name": "tls-only",
            "bind": f"127.0.0.1:{free_port()}",
            "security_protocol": "SSL",
            "tls": server,
        },
    ]


def _address(running: GatewayUnderTest, listener: str) -> str:
    host, port = running.gateway.bound[listener]
    return f"{host}:{port}"


@pytest.fixture(scope="module")
async def tls_gateway(
    primary: dev.ClusterInfo, session_log: SessionLog, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[TlsGateway]:
    certs = dev.dev_certificates(dev.tls_dir(dev.default_run_dir()))
    tmp = tmp_path_factory.mktemp("tls-clients")
    ca = CertificateAuthority.load(certs.ca_file, certs.ca_key_file)
    service = ca.issue_files(tmp, "service", subject("it-orders"))
    stranger_ca = CertificateAuthority.create("untrusted CA")
    stranger = stranger_ca.issue_files(tmp, "stranger", subject("dev-client"))
    users = [{"name": SERVICE_ACCOUNT, "tls_subject": SERVICE_SUBJECT, "groups": ["orders"]}]
    async with running_gateway(primary, listeners=_tls_listeners(certs), users=users) as running:
        ca_file = str(certs.ca_file)

        def mtls(files: dev.IssuedFiles) -> Endpoint:
            return Endpoint(
                _address(running, "mtls"),
                security_protocol="SSL",
                ca_file=ca_file,
                cert_file=str(files.cert_file),
                key_file=str(files.key_file),
            )

        yield TlsGateway(
            running=running,
            sasl_ssl=Endpoint(
                _address(running, "sasl-ssl"),
                security_protocol="SASL_SSL",
                sasl_mechanism="PLAIN",
                username=CLIENT_USER,
                password=CLIENT_PASSWORD,
                ca_file=ca_file,
            ),
            mtls=mtls(certs.client),
            service=mtls(service),
            stranger=mtls(stranger),
            tls_only=Endpoint(
                _address(running, "tls-only"), security_protocol="SSL", ca_file=ca_file
            ),
            certs=certs,
        )


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _records(n: int) -> list[Record]:
    return [Record(i % 2, -1, f"k{i}".encode(), f"tls value {i}".encode()) for i in range(n)]


async def _round_trip(client: str, ep: Endpoint, setup: Endpoint) -> None:
    topic = unique_topic(f"tls-{client}")
    await acreate_topic(setup, topic, 2)
    sent = _records(6)
    await aproduce(client, ep, topic, sent)
    got = await aconsume(client, ep, topic, 2, len(sent))
    assert sorted(r.value for r in got) == sorted(r.value for r in sent)


@pytest.mark.parametrize("client", TLS_CLIENTS)
async def test_clients_produce_and_consume_over_sasl_ssl(
    tls_gateway: TlsGateway, client: str
) -> None:
    await _round_trip(client, tls_gateway.sasl_ssl, tls_gateway.running.sasl)


@pytest.mark.parametrize("client", TLS_CLIENTS)
async def test_clients_produce_and_consume_with_a_client_certificate(
    tls_gateway: TlsGateway, client: str
) -> None:
    await _round_trip(client, tls_gateway.mtls, tls_gateway.running.sasl)


async def test_an_ssl_listener_without_client_certificates_serves_anonymous_clients(
    tls_gateway: TlsGateway, session_log: SessionLog
) -> None:
    await _round_trip("confluent", tls_gateway.tls_only, tls_gateway.running.sasl)

    # No login happened: the session is anonymous, as on a PLAINTEXT listener.
    assert not any("on tls-only via" in line for line in session_log.lines)
    assert _sample("gateway_connections_total", listener="tls-only", security_protocol="SSL") > 0


async def test_a_client_certificate_is_the_mapped_principal(
    tls_gateway: TlsGateway, session_log: SessionLog
) -> None:
    before = _sample(
        "gateway_authentications_total", listener="mtls", mechanism="SSL", result="success"
    )

    await asyncio.to_thread(list_topics, "confluent", tls_gateway.mtls)

    assert any(
        "authenticated dev-client from" in line
        and "on mtls via SSL (certificate CN=dev-client,O=soc2-gateway-dev)" in line
        for line in session_log.lines
    )
    assert (
        _sample("gateway_authentications_total", listener="mtls", mechanism="SSL", result="success")
        > before
    )


async def test_a_service_accounts_certificate_is_that_account(
    tls_gateway: TlsGateway, session_log: SessionLog
) -> None:
    await asyncio.to_thread(list_topics, "kcat", tls_gateway.service)

    assert any(
        f"authenticated {SERVICE_ACCOUNT} from" in line and SERVICE_SUBJECT in line
        for line in session_log.lines
    )


def _client_context(ep: Endpoint) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ep.ca_file)
    if ep.cert_file:
        context.load_cert_chain(ep.cert_file, ep.key_file)
    return context


def _api_versions_frame() -> bytes:
    body = codec.build(
        codec.request_schema(18, 3), client_software_name="tls-it", client_software_version="1"
    )
    payload = codec.encode_request_header(18, 3, 1, "tls-it") + codec.encode_body(body)
    return struct.pack(">i", len(payload)) + payload


async def _api_versions_over(
    address: str, context: ssl.SSLContext | None
) -> tuple[int, bytes | Exception]:
    """Send ApiVersions (over TLS with ``context``, else in plaintext): the answer's
    size and bytes, or the error that ended the connection."""
    host, port = address.rsplit(":", 1)
    try:
        reader, writer = await asyncio.open_connection(host, int(port), ssl=context)
    except (ssl.SSLError, OSError) as exc:
        return 0, exc
    try:
        writer.write(_api_versions_frame())
        await writer.drain()
        size = struct.unpack(">i", await asyncio.wait_for(reader.readexactly(4), 30))[0]
        return size, await reader.readexactly(size)
    except (ssl.SSLError, OSError, asyncio.IncompleteReadError) as exc:
        return 0, exc
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, OSError):
            await writer.wait_closed()


async def _failures_reach(listener: str, reason: str, target: float) -> float:
    name = "gateway_tls_handshake_failures_total"
    for _ in range(200):
        if _sample(name, listener=listener, reason=reason) >= target:
            break
        await asyncio.sleep(0.05)
    return _sample(name, listener=listener, reason=reason)


async def test_a_client_certificate_from_another_ca_is_refused(tls_gateway: TlsGateway) -> None:
    before = _sample(
        "gateway_tls_handshake_failures_total", listener="mtls", reason="bad_certificate"
    )
    size, answer = await _api_versions_over(
        tls_gateway.stranger.bootstrap, _client_context(tls_gateway.stranger)
    )

    with pytest.raises(ClientError):
        await asyncio.to_thread(list_topics, "confluent", tls_gateway.stranger, timeout=10)

    assert isinstance(answer, Exception), "the gateway answered a certificate from another CA"
    assert await _failures_reach("mtls", "bad_certificate", before + 2) >= before + 2


async def test_a_connection_without_a_client_certificate_is_refused_on_mtls(
    tls_gateway: TlsGateway,
) -> None:
    anonymous = Endpoint(tls_gateway.mtls.bootstrap, "SSL", ca_file=tls_gateway.mtls.ca_file)
    before = _sample(
        "gateway_tls_handshake_failures_total", listener="mtls", reason="no_certificate"
    )

    _, answer = await _api_versions_over(anonymous.bootstrap, _client_context(anonymous))

    assert isinstance(answer, Exception)
    assert await _failures_reach("mtls", "no_certificate", before + 1) >= before + 1


@pytest.mark.parametrize("listener", ["sasl-ssl", "mtls"])
async def test_a_plaintext_connection_to_a_tls_port_is_refused(
    tls_gateway: TlsGateway, listener: str
) -> None:
    before = _sample("gateway_tls_handshake_failures_total", listener=listener, reason="not_tls")

    _, answer = await _api_versions_over(_address(tls_gateway.running, listener), None)

    assert isinstance(answer, Exception), "a plaintext client got a Kafka answer"
    assert await _failures_reach(listener, "not_tls", before + 1) >= before + 1


async def _served_serial(address: str, ca_file: str) -> int:
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=ca_file)
    _, writer = await asyncio.open_connection(host, int(port), ssl=context)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, OSError):
            await writer.wait_closed()


async def test_a_certificate_replaced_on_disk_is_served_without_a_restart(
    primary: dev.ClusterInfo, tmp_path: Path
) -> None:
    ca = CertificateAuthority.create("reload CA")
    ca.write(tmp_path / "ca.pem", tmp_path / "ca.key")
    first = ca.issue_files(
        tmp_path, "server", subject("localhost"), server=True, ips=("127.0.0.1",)
    )
    listener = {
        "name": "reloading",
        "bind": f"127.0.0.1:{free_port()}",
        "security_protocol": "SASL_SSL",
        "tls": {
            "cert_file": str(first.cert_file),
            "key_file": str(first.key_file),
            "reload_interval_seconds": 0.2,
        },
    }
    ca_file = str(tmp_path / "ca.pem")
    async with running_gateway(primary, listeners=[listener]) as running:
        address = _address(running, "reloading")
        ep = Endpoint(
            address,
            security_protocol="SASL_SSL",
            sasl_mechanism="PLAIN",
            username=CLIENT_USER,
            password=CLIENT_PASSWORD,
            ca_file=ca_file,
        )
        old_serial = await _served_serial(address, ca_file)
        renewed, key = ca.issue(subject("localhost"), server=True, ips=("127.0.0.1",))
        first.key_file.write_bytes(key_pem(key))
        first.cert_file.write_bytes(cert_pem(renewed))
        served = old_serial
        for _ in range(100):
            served = await _served_serial(address, ca_file)
            if served != old_serial:
                break
            await asyncio.sleep(0.1)

        assert served == renewed.serial_number
        # A real client over the renewed certificate.
        assert isinstance(await asyncio.to_thread(list_topics, "kcat", ep), set)


async def test_a_client_that_never_starts_the_handshake_is_closed_at_the_deadline(
    primary: dev.ClusterInfo, tls_gateway: TlsGateway
) -> None:
    listener = {
        **_tls_listeners(tls_gateway.certs)[0],
        "name": "slow-tls",
        "bind": f"127.0.0.1:{free_port()}",
    }
    async with running_gateway(
        primary, listeners=[listener], authentication_timeout_seconds=1
    ) as running:
        before = _sample(
            "gateway_tls_handshake_failures_total", listener="slow-tls", reason="timeout"
        )
        host, port = _address(running, "slow-tls").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            # Nothing is sent: the gateway gives up on the handshake and closes.
            ended = await asyncio.wait_for(reader.read(), 30)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

        assert ended == b""
        assert await _failures_reach("slow-tls", "timeout", before + 1) >= before + 1
