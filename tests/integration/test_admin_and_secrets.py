"""Admin HTTP endpoints, and the gateway-held upstream password never leaking anywhere.

The leak check runs after every other test of the session (``runs_last``) and also
drives its own traffic, so the session log it searches covers everything the suite did:
successful and failed authentication, produce, fetch, groups, transactions, admin calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import urllib.request
from typing import Any

import pytest
from aiokafka import errors as aiokafka_errors
from aiokafka.conn import create_conn

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


async def _raw_exchange(endpoint: Endpoint, requests: list[Any]) -> list[bytes]:
    host, port = endpoint.bootstrap.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    answers = []
    try:
        for correlation_id, body in enumerate(requests, start=1):
            payload = codec.encode_request_header(
                body.__api_key__, body.__version__, correlation_id, "leak-check"
            ) + codec.encode_body(body)
            writer.write(struct.pack(">i", len(payload)) + payload)
            await writer.drain()
            size = struct.unpack(">i", await reader.readexactly(4))[0]
            answers.append(await reader.readexactly(size))
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return answers


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


async def test_healthz_readyz_and_metrics_answer(gateway: GatewayUnderTest) -> None:
    topic = unique_topic("metrics")
    await acreate_topic(gateway.plain, topic, 1)
    await aproduce("kcat", gateway.plain, topic, [Record(0, -1, b"k", b"v")])

    health = await asyncio.to_thread(_get, f"{gateway.admin_url}/healthz")
    ready = await asyncio.to_thread(_get, f"{gateway.admin_url}/readyz")
    status, metrics = await asyncio.to_thread(_get, f"{gateway.admin_url}/metrics")

    assert health[0] == 200
    assert ready[0] == 200 and '"ready"' in ready[1]
    assert status == 200
    assert 'gateway_requests_total{api="Produce"' in metrics
    assert 'gateway_request_duration_seconds_bucket{api="Fetch"' in metrics or (
        'gateway_request_duration_seconds_bucket{api="Produce"' in metrics
    )
    for name in (
        "gateway_connections_open",
        "gateway_bytes_received_total",
        "gateway_bytes_sent_total",
        "gateway_upstream_errors_total",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in metrics


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
