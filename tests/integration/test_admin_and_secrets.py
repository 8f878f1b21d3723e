"""Admin HTTP endpoints, and the gateway-held upstream password never leaking anywhere.

The leak check runs after every other test of the session (``runs_last``) and also
drives its own traffic, so the session log it searches covers everything the suite did:
successful and failed authentication, produce, fetch, groups, transactions, admin calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import errors as aiokafka_errors
from aiokafka.conn import create_conn
from prometheus_client.parser import text_string_to_metric_families

from gateway import dev
from gateway.protocol import codec
from tests.integration.clients import (
    Endpoint,
    Record,
    aconsume,
    acreate_topic,
    aproduce,
    unique_topic,
)
from tests.integration.conftest import GatewayUnderTest, SessionLog

pytestmark = pytest.mark.integration


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - test URL
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def _connect(endpoint: Endpoint) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = endpoint.bootstrap.rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


def _request_frame(body: Any, correlation_id: int) -> bytes:
    payload = codec.encode_request_header(
        body.__api_key__, body.__version__, correlation_id, "leak-check"
    ) + codec.encode_body(body)
    return struct.pack(">i", len(payload)) + payload


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    size = struct.unpack(">i", await asyncio.wait_for(reader.readexactly(4), 30))[0]
    return await reader.readexactly(size)


async def _raw_exchange(endpoint: Endpoint, requests: list[Any]) -> list[bytes]:
    reader, writer = await _connect(endpoint)
    answers = []
    try:
        for correlation_id, body in enumerate(requests, start=1):
            writer.write(_request_frame(body, correlation_id))
            await writer.drain()
            answers.append(await _read_frame(reader))
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return answers


# The API names the metrics label the requests of ``_client_requests`` with.
_API_NAMES = {18: "ApiVersions", 3: "Metadata", 60: "DescribeCluster", 10: "FindCoordinator"}


def _client_requests() -> list[Any]:
    return [
        codec.build(
            codec.request_schema(18, 3), client_software_name="x", client_software_version="1"
        ),
        codec.build(
            codec.request_schema(3, 12),
            topics=None,
            allow_auto_topic_creation=False,
            include_topic_authorized_operations=False,
        ),
        codec.build(
            codec.request_schema(60, 1),
            include_cluster_authorized_operations=False,
            endpoint_type=1,
        ),
        codec.build(codec.request_schema(10, 4), key_type=0, coordinator_keys=("g1",)),
    ]


async def test_healthz_and_readyz_answer(gateway: GatewayUnderTest) -> None:
    health = await asyncio.to_thread(_get, f"{gateway.admin_url}/healthz")
    ready = await asyncio.to_thread(_get, f"{gateway.admin_url}/readyz")

    assert health[0] == 200
    assert json.loads(health[1]) == {"status": "ok"}
    assert ready[0] == 200
    assert json.loads(ready[1])["status"] == "ready"


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def _scrape(gateway: GatewayUnderTest) -> Samples:
    """Every sample ``/metrics`` exports, parsed as Prometheus text."""
    status, text = await asyncio.to_thread(_get, f"{gateway.admin_url}/metrics")
    assert status == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 for a labelled child that was never touched."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def _wait_for_scrape(
    gateway: GatewayUnderTest, done: Callable[[Samples], bool], timeout: float = 10
) -> Samples:
    """Scrape until ``done(samples)`` holds or ``timeout`` passes; the last scrape."""
    deadline = asyncio.get_running_loop().time() + timeout
    samples = await _scrape(gateway)
    while not done(samples) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
        samples = await _scrape(gateway)
    return samples


async def test_metrics_count_the_requests_bytes_and_connection_of_one_client(
    gateway: GatewayUnderTest,
) -> None:
    plain = {"listener": "plain"}
    plain_conns = {"listener": "plain", "security_protocol": "PLAINTEXT"}
    sasl_conns = {"listener": "sasl", "security_protocol": "SASL_PLAINTEXT"}
    # Requests are counted for every connection of the process: start when the
    # connections of earlier tests are closed (the gateway may finish them late).
    before = await _wait_for_scrape(
        gateway,
        lambda s: (
            _value(s, "gateway_connections_open", **plain_conns)
            == _value(s, "gateway_connections_open", **sasl_conns)
            == 0
        ),
        timeout=30,
    )
    assert _value(before, "gateway_connections_open", **plain_conns) == 0
    assert _value(before, "gateway_connections_open", **sasl_conns) == 0
    requests = _client_requests()
    reader, writer = await _connect(gateway.plain)
    sent = received = 0
    try:
        for correlation_id, body in enumerate(requests, start=1):
            frame = _request_frame(body, correlation_id)
            writer.write(frame)
            await writer.drain()
            answer = await _read_frame(reader)
            assert codec.read_correlation_id(answer) == correlation_id
            sent, received = sent + len(frame), received + 4 + len(answer)
        during = await _scrape(gateway)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    closed = {"listener": "plain", "reason": "client closed"}
    after = await _wait_for_scrape(
        gateway,
        lambda s: (
            _value(s, "gateway_connections_closed_total", **closed)
            > _value(before, "gateway_connections_closed_total", **closed)
        ),
    )

    def moved(name: str, samples: Samples = after, **labels: str) -> float:
        return _value(samples, name, **labels) - _value(before, name, **labels)

    for body in requests:
        api = _API_NAMES[body.__api_key__]
        ok = {"api": api, "version": str(body.__version__), "outcome": "ok"}
        assert moved("gateway_requests_total", **ok) == 1, ok
        assert moved("gateway_request_duration_seconds_count", api=api) == 1, api
    assert moved("gateway_bytes_received_total", **plain) == sent
    assert moved("gateway_bytes_sent_total", **plain) == received
    assert moved("gateway_connections_total", **plain_conns) == 1
    assert moved("gateway_connections_open", during, **plain_conns) == 1
    assert moved("gateway_connections_open", **plain_conns) == 0
    assert moved("gateway_connections_closed_total", **closed) == 1


async def test_metadata_answers_never_reveal_upstream_brokers(
    gateway: GatewayUnderTest, direct: Endpoint
) -> None:
    answers = await _raw_exchange(gateway.plain, _client_requests())
    metadata = codec.decode_response(3, 12, answers[1], 4 + 1)
    cluster = codec.decode_response(60, 1, answers[2], 4 + 1)
    coordinator = codec.decode_response(10, 4, answers[3], 4 + 1)
    gateway_port = int(gateway.plain.bootstrap.rsplit(":", 1)[1])
    upstream_port = int(direct.bootstrap.rsplit(":", 1)[1])

    assert [(b.node_id, b.port) for b in metadata.brokers] == [(7, gateway_port)]
    assert [(b.broker_id, b.port) for b in cluster.brokers] == [(7, gateway_port)]
    assert [(c.node_id, c.port) for c in coordinator.coordinators] == [(7, gateway_port)]
    assert metadata.cluster_id == cluster.cluster_id == "it-gateway"
    assert all(struct.pack(">i", upstream_port) not in a for a in answers)


@pytest.mark.runs_last
async def test_upstream_password_appears_in_no_log_metric_or_response(
    gateway: GatewayUnderTest, direct: Endpoint, session_log: SessionLog
) -> None:
    secret = gateway.upstream_password
    assert len(secret) >= 16
    # Traffic of every kind, including a client trying the upstream's own credentials.
    topic = unique_topic("leak")
    await acreate_topic(gateway.sasl, topic, 2)
    await aproduce("aiokafka", gateway.sasl, topic, [Record(1, -1, b"k", b"v")])
    assert len(await aconsume("aiokafka", gateway.sasl, topic, 2, 1)) == 1
    host, port = gateway.sasl.bootstrap.rsplit(":", 1)
    with pytest.raises(aiokafka_errors.SaslAuthenticationFailed):
        await create_conn(
            host,
            int(port),
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_plain_username=direct.username,
            sasl_plain_password=secret,
        )
    responses = await _raw_exchange(gateway.plain, _client_requests())
    admin = [
        (await asyncio.to_thread(_get, f"{gateway.admin_url}{path}"))[1]
        for path in ("/healthz", "/readyz", "/metrics")
    ]

    assert session_log.lines, "the session log captured nothing"
    leaking_lines = [line for line in session_log.lines if secret in line]
    assert leaking_lines == []
    assert all(secret not in text for text in admin)
    assert all(secret.encode() not in answer for answer in responses)
    assert secret not in repr(gateway.config)


def _key_lines(path: str) -> list[str]:
    """The base64 lines of a PEM private key (what a leak of it would show)."""
    with open(path, encoding="utf-8") as fh:
        return [line.strip() for line in fh if line.strip() and not line.startswith("-----")]


@pytest.mark.runs_last
async def test_tls_private_keys_appear_in_no_log_line_or_metric(
    gateway: GatewayUnderTest, session_log: SessionLog
) -> None:
    # The dev CA, server and client keys that the TLS listener tests serve and present.
    certs = dev.dev_certificates(dev.tls_dir(dev.default_run_dir()))
    keys = [certs.ca_key_file, certs.server.key_file, certs.client.key_file]
    lines = {line for key in keys for line in _key_lines(str(key))}
    assert len(lines) >= 6
    metrics_text = (await asyncio.to_thread(_get, f"{gateway.admin_url}/metrics"))[1]

    assert session_log.lines, "the session log captured nothing"
    assert [log for log in session_log.lines if any(line in log for line in lines)] == []
    assert [line for line in lines if line in metrics_text] == []
    assert all("PRIVATE KEY" not in log for log in session_log.lines)
