"""The audit log in a gateway in front of the real dev cluster: confluent-kafka's
Produce requests are recorded with their principal, partitions and base offsets before
they are acknowledged, the closed log verifies with the published key, and when the
log cannot write, producing waits on retriable errors (``/readyz`` 503) and resumes by
itself once it can, every acknowledged record covered by an event."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway import dev
from gateway.audit import keys, read_events
from gateway.audit.verify import verify
from gateway.config import parse_config
from gateway.server.app import Gateway
from tests.integration.clients import Endpoint
from tests.integration.clients.confluent import connected_producer
from tests.integration.conftest import (
    CLIENT_PASSWORD,
    CLIENT_USER,
    admin_get,
    client_endpoint,
    gateway_config_data,
)

pytestmark = pytest.mark.integration


def published_key(directory: Path) -> tuple[Path, Path]:
    """A new signing key in ``directory`` and, beside it, the public key an auditor
    would be given: (key file, public PEM)."""
    key_file = directory / "audit.key"
    public_pem = directory / "audit.pub"
    public_pem.write_text(keys.public_pem(keys.generate(key_file).public_key()), encoding="utf-8")
    return key_file, public_pem


def verify_as_auditor(directory: Path, public_pem: Path) -> subprocess.CompletedProcess[str]:
    """``python -m gateway audit verify DIR --public-key PEM`` in a process of its own,
    as an auditor runs it."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", "audit", "verify", str(directory)]
        + ["--public-key", str(public_pem)],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(dev.__file__).resolve().parents[2],
    )


@contextlib.asynccontextmanager
async def _audited_gateway(
    primary: dev.ClusterInfo, audit_dir: Path, key_file: Path, **audit: Any
) -> AsyncIterator[tuple[Gateway, Endpoint, str]]:
    data, ports = gateway_config_data(primary)
    data["audit"] = {
        "dir": str(audit_dir),
        "key_file": str(key_file),
        "instance_id": "it-gw",
        **audit,
    }
    running = Gateway(parse_config(data, "integration-test", environ={}))
    await running.start()
    endpoint = client_endpoint(ports["sasl"])
    try:
        yield running, endpoint, f"http://127.0.0.1:{ports['admin']}"
    finally:
        await running.stop()


def _produce(producer: Any, topic: str, values: list[bytes]) -> list[tuple[int, int]]:
    """(partition, offset) of each acknowledged record; raises on a delivery error."""
    delivered: list[tuple[int, int]] = []
    errors: list[object] = []

    def done(err: object, msg: Any) -> None:
        if err is None:
            delivered.append((msg.partition(), msg.offset()))
        else:
            errors.append(err)

    for value in values:
        producer.produce(topic, value, on_delivery=done)
    assert producer.flush(60) == 0
    assert errors == []
    return delivered


def _covered(audit_dir: Path, topic: str) -> set[tuple[int, int]]:
    """(partition, offset) of every record a Produce event of ``topic`` says was written."""
    found: set[tuple[int, int]] = set()
    for line in read_events(audit_dir):
        if line.get("type") != "request" or line.get("api") != "Produce":
            continue
        for written in line.get("produce") or []:
            if written["topic"] == topic and written["base_offset"] is not None:
                base = written["base_offset"]
                found |= {(written["partition"], base + i) for i in range(written["records"])}
    return found


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit.key"
    keys.generate(path)
    return path


async def test_produce_events_cover_every_acknowledged_record_and_the_log_verifies(
    primary: dev.ClusterInfo, tmp_path: Path, key_file: Path
) -> None:
    audit_dir = tmp_path / "audit"
    topic = f"it-audit-{time.monotonic_ns()}"
    async with _audited_gateway(primary, audit_dir, key_file) as (_, endpoint, _admin):
        producer = await asyncio.to_thread(connected_producer, endpoint)
        try:
            values = [f"record-{n}".encode() for n in range(20)]
            delivered = await asyncio.to_thread(_produce, producer, topic, values)
        finally:
            await asyncio.to_thread(producer.flush, 10)
    assert len(delivered) == 20
    assert set(delivered) <= _covered(audit_dir, topic)
    lines = list(read_events(audit_dir))
    produce = [e for e in lines if e.get("api") == "Produce" and e.get("produce")]
    assert all(e["principal"] == CLIENT_USER for e in produce)
    logins = [e for e in lines if e.get("type") == "authentication"]
    assert any(e["principal"] == CLIENT_USER and e["result"] == "success" for e in logins)
    assert CLIENT_PASSWORD.encode() not in b"".join(p.read_bytes() for p in audit_dir.iterdir())
    public = keys.load_private(key_file).public_key()
    # The chain opens with how this gateway audits and ends with its clean stop.
    started = lines[0]
    assert started["type"] == "audit_started" and started["fail_open"] is False
    assert started["key_id"] == keys.key_id(public) and started["instance"] == "it-gw"
    assert [line["type"] for line in lines[-2:]] == ["audit_stopped", "checkpoint"]
    report = verify([audit_dir], public)[0]
    assert report.ok, report.problem
    assert report.unsealed is None  # stop sealed it


async def test_producing_waits_while_the_log_cannot_write_and_resumes_by_itself(
    primary: dev.ClusterInfo, tmp_path: Path, key_file: Path
) -> None:
    audit_dir = tmp_path / "audit"
    topic = f"it-audit-down-{time.monotonic_ns()}"
    async with _audited_gateway(primary, audit_dir, key_file) as (running, endpoint, admin):
        assert running.audit_log is not None
        producer = await asyncio.to_thread(connected_producer, endpoint)
        try:
            await asyncio.to_thread(_produce, producer, topic, [b"before"])
            writer = running.audit_log.writer
            real_fsync = writer._os_fsync
            failing = True

            def fsync(fd: int) -> None:
                if failing:
                    raise OSError(errno.ENOSPC, "No space left on device")
                real_fsync(fd)

            writer._os_fsync = fsync  # type: ignore[method-assign]
            # The refused Produce is retried by librdkafka; its delivery waits.
            pending = asyncio.create_task(asyncio.to_thread(_produce, producer, topic, [b"during"]))
            while running.audit_log.healthy:
                await asyncio.sleep(0.05)
            status, _, body = await asyncio.to_thread(admin_get, f"{admin}/readyz")
            assert status == 503, body
            assert "ENOSPC" in body
            assert not pending.done()
            failing = False
            delivered = await pending
            status, _, _ = await asyncio.to_thread(admin_get, f"{admin}/readyz")
            assert status == 200
        finally:
            await asyncio.to_thread(producer.flush, 10)
    assert set(delivered) <= _covered(audit_dir, topic)
    outage = [e for e in read_events(audit_dir) if e.get("type") == "audit_unavailable"]
    assert len(outage) == 1 and outage[0]["refused"] >= 1
    public = keys.load_private(key_file).public_key()
    assert verify([audit_dir], public)[0].ok
