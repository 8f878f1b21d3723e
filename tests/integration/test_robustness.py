"""Bad input closes one connection (or gets a Kafka error) and leaves everyone else served."""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct

import pytest
from aiokafka import errors as aiokafka_errors
from aiokafka.conn import create_conn
from kio.schema.errors import ErrorCode
from prometheus_client import REGISTRY

from gateway.errors import MalformedRequest
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


async def _open(endpoint: Endpoint) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = endpoint.bootstrap.rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def _closed_by_gateway(reader: asyncio.StreamReader) -> bool:
    """True when the gateway closes the socket (EOF) without sending anything more."""
    try:
        data = await asyncio.wait_for(reader.read(1), 10)
    except ConnectionResetError:
        return True
    return data == b""


def _framed(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def _api_versions_frame(correlation_id: int) -> bytes:
    body = codec.build(
        codec.request_schema(18, 3), client_software_name="it", client_software_version="1"
    )
    return _framed(
        codec.encode_request_header(18, 3, correlation_id, "it") + codec.encode_body(body)
    )


def _future_api_versions_frame(correlation_id: int) -> bytes:
    # A version the gateway cannot know: header fields readable, body opaque.
    return _framed(struct.pack(">hhi", 18, 99, correlation_id) + b"\x00\x02it\x00\x00\x00")


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def _still_serves(gateway: GatewayUnderTest) -> None:
    topic = unique_topic("after-bad-input")
    await acreate_topic(gateway.plain, topic, 1)
    record = Record(partition=0, offset=-1, key=b"k", value=b"still-served")
    await aproduce("confluent", gateway.plain, topic, [record])
    got = await aconsume("confluent", gateway.plain, topic, 1, 1)
    assert [(r.key, r.value) for r in got] == [(b"k", b"still-served")]


_METADATA_V12 = _framed(
    codec.encode_request_header(3, 12, 1, "x")
    + codec.encode_body(
        codec.build(
            codec.request_schema(3, 12),
            topics=None,
            allow_auto_topic_creation=False,
            include_topic_authorized_operations=False,
        )
    )
)

# Sent to the SASL listener before authenticating: each input, and why the gateway
# must close the connection (the reason it logs).
BAD_INPUTS = {
    "oversized_prefix_before_auth": (
        struct.pack(">i", 600 * 1024) + b"\x00" * 16,
        f"frame size {600 * 1024} outside 0..524288 bytes",
    ),
    "negative_size": (struct.pack(">i", -5), "frame size -5 outside 0..524288 bytes"),
    "unknown_api_key": (
        _framed(struct.pack(">hhi", 9999, 0, 1) + b"\x00\x00"),
        "api_key=9999 version=0 is not served",
    ),
    "metadata_before_authentication": (_METADATA_V12, "api_key=3 before authentication"),
}


def _closing_line(writer: asyncio.StreamWriter, reason: str) -> str:
    """The line the gateway logs when it closes this client's connection for ``reason``."""
    host, port = writer.get_extra_info("sockname")[:2]
    return f"closing connection from {host}:{port}: {reason}"


def _malformed_metadata_frame(correlation_id: int) -> tuple[bytes, str]:
    """A Metadata v12 frame: a valid header, then a random body the decoder rejects.

    Returns the frame and the decoder's own complaint about it, which the gateway logs.
    """
    header = codec.encode_request_header(3, 12, correlation_id, "it")
    for _ in range(1000):
        payload = header + os.urandom(64)
        try:
            codec.decode_request(payload)
        except MalformedRequest as exc:
            return _framed(payload), str(exc)
    raise AssertionError("1000 random bodies all decoded as Metadata v12")


async def _answers_api_versions(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, correlation_id: int
) -> bool:
    writer.write(_api_versions_frame(correlation_id))
    await writer.drain()
    size = struct.unpack(">i", await asyncio.wait_for(reader.readexactly(4), 10))[0]
    body = await reader.readexactly(size)
    return codec.read_correlation_id(body) == correlation_id


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _sample_moves_to(name: str, labels: dict[str, str], target: float) -> float:
    """Poll the in-process metric until it reaches ``target`` (or 10 s pass); its value."""
    deadline = asyncio.get_running_loop().time() + 10
    while _sample(name, **labels) < target and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    return _sample(name, **labels)


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
async def test_bad_frame_closes_only_its_connection(
    gateway: GatewayUnderTest, session_log: SessionLog, name: str
) -> None:
    data, reason = BAD_INPUTS[name]
    bystander_reader, bystander_writer = await _open(gateway.sasl)
    reader, writer = await _open(gateway.sasl)
    writer.write(data)
    await writer.drain()

    assert await _closed_by_gateway(reader)
    assert _closing_line(writer, f"protocol error: {reason}") in "\n".join(session_log.lines)
    await _close(writer)
    # A connection opened before the bad one is still open and served.
    assert await _answers_api_versions(bystander_reader, bystander_writer, 42)
    await _close(bystander_writer)
    await _still_serves(gateway)


async def test_random_request_body_is_rejected_by_the_decoder_and_closes_only_its_connection(
    gateway: GatewayUnderTest, session_log: SessionLog
) -> None:
    # The plain listener needs no authentication, so the frame passes the gate and
    # reaches the request decoder.
    frame, complaint = _malformed_metadata_frame(correlation_id=1)
    closed = ("gateway_connections_closed_total", {"listener": "plain", "reason": "protocol error"})
    closed_before = _sample(closed[0], **closed[1])
    bystander_reader, bystander_writer = await _open(gateway.plain)
    reader, writer = await _open(gateway.plain)
    writer.write(frame)
    await writer.drain()

    assert await _closed_by_gateway(reader)
    assert _closing_line(writer, f"protocol error: {complaint}") in "\n".join(session_log.lines)
    assert await _sample_moves_to(*closed, closed_before + 1) == closed_before + 1
    await _close(writer)
    assert await _answers_api_versions(bystander_reader, bystander_writer, 43)
    await _close(bystander_writer)
    await _still_serves(gateway)


async def test_frame_claiming_billions_of_array_elements_closes_only_its_connection(
    gateway: GatewayUnderTest,
) -> None:
    # Metadata v9 whose topics array claims 2**32 - 2 entries in a 20-byte frame.
    claim = bytes.fromhex("0003000900000000ffff00ffffffff0f")
    reader, writer = await _open(gateway.plain)
    writer.write(_framed(claim))
    await writer.drain()

    assert await _closed_by_gateway(reader)
    await _close(writer)
    await _still_serves(gateway)


async def test_truncated_frame_then_disconnect_leaves_gateway_serving(
    gateway: GatewayUnderTest,
) -> None:
    reader, writer = await _open(gateway.plain)
    writer.write(struct.pack(">i", 1000) + b"\x00\x03\x00\x0c")
    await writer.drain()
    await _close(writer)
    await _still_serves(gateway)


async def test_api_versions_of_unknown_version_gets_v0_error_listing_versions(
    gateway: GatewayUnderTest,
) -> None:
    reader, writer = await _open(gateway.plain)
    writer.write(_future_api_versions_frame(7))
    await writer.drain()
    size = struct.unpack(">i", await reader.readexactly(4))[0]
    data = await reader.readexactly(size)
    await _close(writer)

    assert codec.read_correlation_id(data) == 7
    response = codec.decode_response(18, 0, data, 4)
    assert response.error_code == ErrorCode.unsupported_version
    listed = {k.api_key: (k.min_version, k.max_version) for k in response.api_keys}
    assert listed[18] == (0, 4)
    assert 0 in listed and 1 in listed  # Produce and Fetch are advertised


async def test_client_presenting_upstream_scram_credentials_is_refused(
    gateway: GatewayUnderTest, direct: Endpoint
) -> None:
    host, port = gateway.sasl.bootstrap.rsplit(":", 1)
    # The gateway offers SCRAM to its own identities; the upstream's user is not one.
    with pytest.raises(aiokafka_errors.SaslAuthenticationFailed):
        await create_conn(
            host,
            int(port),
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-256",
            sasl_plain_username=direct.username,
            sasl_plain_password=direct.password,
        )
    # Nor is the upstream's username and password accepted as a gateway user.
    with pytest.raises(aiokafka_errors.SaslAuthenticationFailed):
        await create_conn(
            host,
            int(port),
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_plain_username=direct.username,
            sasl_plain_password=direct.password,
        )


async def test_wrong_gateway_password_is_refused_and_right_one_accepted(
    gateway: GatewayUnderTest,
) -> None:
    host, port = gateway.sasl.bootstrap.rsplit(":", 1)
    with pytest.raises(aiokafka_errors.SaslAuthenticationFailed):
        await create_conn(
            host,
            int(port),
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_plain_username=gateway.sasl.username,
            sasl_plain_password="not-the-password",
        )
    conn = await create_conn(
        host,
        int(port),
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_plain_username=gateway.sasl.username,
        sasl_plain_password=gateway.sasl.password,
    )
    assert conn.connected()
    conn.close()
