"""Clients that measure while something else happens: a steady confluent-kafka
producer, repeated SASL/PLAIN logins, and raw login attempts from a chosen source
address.

``ProduceProbe`` and ``LoginProbe`` run in their own threads (blocking I/O, no event
loop) and keep ``(started, seconds)`` samples, so a test can compare the median of a
quiet period with the median during a burst. ``attempt_plain_login`` is one raw
SaslHandshake + SaslAuthenticate exchange on an asyncio socket bound to ``source``
(Linux accepts any 127.x address as a source), for attackers by the hundred.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import statistics
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatchBuilder
from kio.schema.errors import ErrorCode

from gateway.protocol import codec
from gateway.protocol.versions import SASL_AUTHENTICATE, SASL_HANDSHAKE
from tests.integration.clients.common import Endpoint, fail
from tests.integration.clients.confluent import librdkafka_config

HANDSHAKE_VERSION = 1
AUTHENTICATE_VERSION = 2


def _request(api_key: int, version: int, correlation_id: int, **fields: Any) -> bytes:
    body = codec.build(codec.request_schema(api_key, version), **fields)
    payload = codec.encode_request_header(
        api_key, version, correlation_id, "probe"
    ) + codec.encode_body(body)
    return struct.pack(">i", len(payload)) + payload


def plain_login_frames(user: str, password: str) -> bytes:
    """SaslHandshake v1 (PLAIN) and SaslAuthenticate v2, pipelined as a client may."""
    token = f"\x00{user}\x00{password}".encode()
    return _request(SASL_HANDSHAKE, HANDSHAKE_VERSION, 1, mechanism="PLAIN") + _request(
        SASL_AUTHENTICATE, AUTHENTICATE_VERSION, 2, auth_bytes=token
    )


def _error_code(api_key: int, version: int, frame: bytes) -> ErrorCode:
    header = codec.response_header_size(api_key, version, frame)
    return ErrorCode(codec.decode_response(api_key, version, frame, header).error_code)


def _host_port(ep: Endpoint) -> tuple[str, int]:
    host, port = ep.bootstrap.rsplit(":", 1)
    return host, int(port)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed by the gateway")
        data += chunk
    return bytes(data)


def plain_login(ep: Endpoint, timeout: float = 30, source: str | None = None) -> float:
    """Log in as ``ep``'s user on a new connection (blocking, from ``source`` when
    given); the seconds it took from connect to the SaslAuthenticate answer. Raises
    ClientError when refused."""
    started = time.perf_counter()
    bind = (source, 0) if source is not None else None
    with socket.create_connection(_host_port(ep), timeout=timeout, source_address=bind) as sock:
        sock.sendall(plain_login_frames(ep.username or "", ep.password or ""))
        answers = []
        for api_key, version in (
            (SASL_HANDSHAKE, HANDSHAKE_VERSION),
            (SASL_AUTHENTICATE, AUTHENTICATE_VERSION),
        ):
            (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
            answers.append(_error_code(api_key, version, _recv_exactly(sock, size)))
    if answers != [ErrorCode.none, ErrorCode.none]:
        raise fail(ep, f"login refused: {answers}")
    return time.perf_counter() - started


async def attempt_plain_login(
    ep: Endpoint, user: str, password: str, source: str, timeout: float = 60
) -> str:
    """One login attempt from ``source``: "accepted", "refused" (answered with
    SASL_AUTHENTICATION_FAILED) or "closed" (the gateway closed without that answer)."""
    host, port = _host_port(ep)
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    try:
        writer.write(plain_login_frames(user, password))
        async with asyncio.timeout(timeout):
            codes = []
            for api_key, version in (
                (SASL_HANDSHAKE, HANDSHAKE_VERSION),
                (SASL_AUTHENTICATE, AUTHENTICATE_VERSION),
            ):
                (size,) = struct.unpack(">i", await reader.readexactly(4))
                codes.append(_error_code(api_key, version, await reader.readexactly(size)))
    except (asyncio.IncompleteReadError, ConnectionError):
        return "closed"
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if codes[-1] == ErrorCode.sasl_authentication_failed:
        return "refused"
    return "accepted" if codes[-1] == ErrorCode.none else f"error {codes[-1].name}"


class _Probe:
    """Runs ``measure()`` in a thread, over and over, until stopped."""

    def __init__(self, measure: Callable[[], float], pause: float) -> None:
        self._measure = measure
        self._pause = pause
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.samples: list[tuple[float, float]] = []  # (monotonic start, seconds)
        self.errors: list[str] = []

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.samples.append((started, self._measure()))
            except Exception as exc:  # recorded, and the test asserts there are none
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self._pause)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def between(self, since: float, until: float) -> list[float]:
        return [seconds for started, seconds in self.samples if since <= started < until]

    def median_between(self, since: float, until: float) -> float:
        values = self.between(since, until)
        assert values, "no sample in the period"
        return statistics.median(values)


class LoginProbe(_Probe):
    """Logs in as ``ep``'s user on a new connection, again and again."""

    def __init__(self, ep: Endpoint, pause: float = 0.05) -> None:
        super().__init__(lambda: plain_login(ep), pause)


class ProduceProbe(_Probe):
    """One confluent-kafka producer sending one record at a time to ``topic`` and
    timing each from ``produce`` to its delivery report."""

    def __init__(self, ep: Endpoint, topic: str, pause: float = 0.02) -> None:
        from confluent_kafka import Producer

        self._producer = Producer(
            {**librdkafka_config(ep), "acks": "all", "linger.ms": 0, "message.timeout.ms": 30000}
        )
        self._topic = topic
        super().__init__(self._produce_one, pause)

    def _produce_one(self) -> float:
        from confluent_kafka import KafkaError, Message

        outcome: list[KafkaError | None] = []

        def delivered(err: KafkaError | None, _: Message) -> None:
            outcome.append(err)

        started = time.perf_counter()
        self._producer.produce(self._topic, value=b"probe", on_delivery=delivered)
        while not outcome:
            self._producer.poll(0.5)
        if outcome[0] is not None:
            raise RuntimeError(f"delivery failed: {outcome[0]}")
        return time.perf_counter() - started

    def stop(self) -> None:
        super().stop()
        self._producer.flush(5)
        self._producer.close()


def record_batch(values: list[bytes]) -> bytes:
    """One uncompressed, non-idempotent record batch (magic 2) holding ``values``."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    now_ms = int(time.time() * 1000)
    for offset, value in enumerate(values):
        builder.append(offset, timestamp=now_ms, key=b"k%d" % offset, value=value, headers=[])
    return bytes(builder.build())
