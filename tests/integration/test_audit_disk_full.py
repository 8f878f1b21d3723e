"""A full disk under the audit log, for real: the log lives on a small tmpfs that the
test fills while confluent-kafka produces through a gateway process. Producing stalls
on retriable errors (no record is acknowledged without its event), ``/readyz`` answers
503 naming ENOSPC, the gateway logs why, and once space returns producing resumes
without a restart; the log then verifies with the published key and records the
outage."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway import dev
from gateway.audit import read_events
from tests.integration.clients import Endpoint
from tests.integration.clients.confluent import librdkafka_config
from tests.integration.conftest import (
    admin_get,
    client_endpoint,
    gateway_config_data,
    gateway_subprocess,
)
from tests.integration.test_audit_log import _covered, published_key, verify_as_auditor

pytestmark = pytest.mark.integration

# Room for the log's first lines and nothing like the size a real log needs.
TMPFS_SIZE = "2m"
# Far longer than the outage: librdkafka keeps retrying instead of failing delivery.
MESSAGE_TIMEOUT_MS = 180_000


@contextlib.contextmanager
def small_filesystem(where: Path) -> Iterator[Path]:
    """A tmpfs of TMPFS_SIZE mounted at ``where`` (the test needs mount rights: root or
    CAP_SYS_ADMIN, as on the CI machines)."""
    where.mkdir()
    mounted = subprocess.run(  # noqa: S603 - fixed arguments
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(where)],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        reason = f"cannot mount a tmpfs here: {mounted.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)  # noqa: S603, S607


def fill(directory: Path) -> Path:
    """Write a file into ``directory`` until its filesystem is full."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


class SteadyProducer:
    """A confluent-kafka producer writing one record every few milliseconds on its own
    thread, keeping what the cluster acknowledged."""

    def __init__(self, endpoint: Endpoint, topic: str) -> None:
        from confluent_kafka import Producer

        config: dict[str, Any] = librdkafka_config(endpoint) | {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": MESSAGE_TIMEOUT_MS,
        }
        self._producer = Producer(config)
        self._topic = topic
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.acked: list[tuple[int, int]] = []
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _done(self, err: Any, msg: Any) -> None:
        with self._lock:
            if err is None:
                self.acked.append((msg.partition(), msg.offset()))
            else:
                self.errors.append(str(err))

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            self._producer.produce(self._topic, f"r{n}".encode(), on_delivery=self._done)
            self._producer.poll(0.005)
            n += 1

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        try:
            assert self._producer.flush(MESSAGE_TIMEOUT_MS / 1000) == 0
        finally:
            self._producer.close()  # not left to a later test's garbage collection


async def until(predicate: Any, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def test_a_full_disk_stalls_producing_with_retriable_errors_and_it_resumes_when_space_returns(
    primary: dev.ClusterInfo, tmp_path: Path
) -> None:
    key_file, public_pem = published_key(tmp_path)
    topic = f"it-audit-full-{time.monotonic_ns()}"
    with small_filesystem(tmp_path / "fs") as fs:
        audit_dir = fs / "audit"
        data, ports = gateway_config_data(primary)
        data["audit"] = {"dir": str(audit_dir), "key_file": str(key_file), "instance_id": "full"}
        endpoint = client_endpoint(ports["sasl"])
        async with gateway_subprocess(data, ports["admin"], tmp_path) as gateway:
            readyz = f"{gateway.admin_url}/readyz"
            producer = SteadyProducer(endpoint, topic)
            producer.start()
            try:
                await until(lambda: producer.count() >= 50, "the first acknowledged records")
                filler = await asyncio.to_thread(fill, fs)
                await until(lambda: admin_get(readyz)[0] == 503, "/readyz to answer 503")
                status, _, body = await asyncio.to_thread(admin_get, readyz)
                assert status == 503 and "ENOSPC" in body, body
                _, _, metrics = await asyncio.to_thread(admin_get, f"{gateway.admin_url}/metrics")
                assert "gateway_audit_healthy 0.0" in metrics
                assert 'gateway_audit_failures_total{reason="ENOSPC"}' in metrics
                # Space returns: the gateway, never restarted, serves again by itself.
                filler.unlink()
                await until(lambda: admin_get(readyz)[0] == 200, "/readyz to answer 200")
                resumed_from = producer.count()
                await until(lambda: producer.count() >= resumed_from + 50, "producing to resume")
            finally:
                await asyncio.to_thread(producer.stop)
        assert gateway.process.returncode == 0
        assert producer.errors == []
        # No record was acknowledged without its event, before, during or after.
        assert set(producer.acked) <= _covered(audit_dir, topic)
        outages = [e for e in read_events(audit_dir) if e.get("type") == "audit_unavailable"]
        # A nearly full disk may let a write through now and then (the failed batch's
        # bytes are cut back, freeing pages): each outage is recorded once it ends.
        assert outages, "the outage was not recorded"
        assert all(e["reason"].startswith("ENOSPC") for e in outages), outages
        assert sum(e["refused"] for e in outages) >= 1
        gateway_log = gateway.log_path.read_text(encoding="utf-8")
        assert "ENOSPC" in gateway_log
        verified = await asyncio.to_thread(verify_as_auditor, audit_dir, public_pem)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert verified.stdout.startswith("OK full:")
