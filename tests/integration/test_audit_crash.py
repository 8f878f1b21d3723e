"""Crash rounds: a gateway process is killed with SIGKILL while confluent-kafka
producers (idempotent and not, acks=all) write through it, then started again on the
same audit directory, 20 times. Every record whose delivery a producer saw
acknowledged has a Produce event covering its offset, the whole log verifies with the
published key, and a torn last line left by a kill is sealed by a ``recovered`` line
at the next start, never silently accepted."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gateway import dev
from gateway.audit import read_events, segments
from tests.integration.clients.confluent import librdkafka_config
from tests.integration.conftest import (
    client_endpoint,
    gateway_config_data,
    gateway_subprocess,
)
from tests.integration.test_audit_log import _covered, published_key, verify_as_auditor

pytestmark = pytest.mark.integration

ROUNDS = 20
ACKED_BEFORE_KILL = 30
# Records in flight when the gateway dies fail fast instead of waiting for it.
MESSAGE_TIMEOUT_MS = 2000
# Records per second per producer: enough to have requests in flight at every kill,
# little enough not to fill the shared dev cluster for the tests that follow.
RATE = 1000
# A line cut in the middle, as a kill during a write leaves it.
TORN = b'{"v":1,"type":"request","principal":"it-cl'


class Producing:
    """A producer thread writing until stopped, keeping what was acknowledged."""

    def __init__(self, config: dict[str, Any], topic: str) -> None:
        from confluent_kafka import Producer

        self._producer = Producer(config)
        self._topic = topic
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.acked: list[tuple[int, int]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _done(self, err: Any, msg: Any) -> None:
        if err is None:
            with self._lock:
                self.acked.append((msg.partition(), msg.offset()))

    def _run(self) -> None:
        n = 0
        started = time.monotonic()
        while not self._stop.is_set():
            ahead = n / RATE - (time.monotonic() - started)
            if ahead > 0:
                self._producer.poll(ahead)
                continue
            # A full local queue while the gateway is down: try again after poll.
            with contextlib.suppress(BufferError):
                self._producer.produce(self._topic, f"r{n}".encode(), on_delivery=self._done)
            self._producer.poll(0)
            n += 1

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def stop(self) -> list[tuple[int, int]]:
        self._stop.set()
        self._thread.join(10)
        # What was in flight when the gateway died fails within MESSAGE_TIMEOUT_MS.
        self._producer.flush(MESSAGE_TIMEOUT_MS / 1000 + 5)
        # Closed here, on this thread: a librdkafka handle left to the garbage collector
        # of a later test is destroyed at an unknown moment.
        self._producer.close()
        with self._lock:
            return list(self.acked)


async def until(predicate: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_twenty_kill_9_rounds_lose_no_acknowledged_records_event_and_the_log_verifies(
    primary: dev.ClusterInfo, tmp_path: Path
) -> None:
    key_file, public_pem = published_key(tmp_path)
    audit_dir = tmp_path / "audit"
    topic = f"it-audit-crash-{time.monotonic_ns()}"
    data, ports = gateway_config_data(primary)
    data["audit"] = {"dir": str(audit_dir), "key_file": str(key_file), "instance_id": "crash"}
    base = librdkafka_config(client_endpoint(ports["sasl"])) | {
        "acks": "all",
        "linger.ms": 2,
        "message.timeout.ms": MESSAGE_TIMEOUT_MS,
        "reconnect.backoff.max.ms": 200,
    }
    acked: set[tuple[int, int]] = set()
    forced = False
    for round_ in range(ROUNDS):
        last = segments.find([audit_dir])[-1].path if round_ else None
        # The torn line a kill during a write leaves, forced once (onto a segment that
        # ends cleanly) so that its sealing is checked whatever the kills hit.
        if (
            last is not None
            and round_ >= ROUNDS // 2
            and not forced
            and last.read_bytes().endswith(b"\n")
        ):
            with last.open("ab") as out:
                out.write(TORN)
            forced = True
        run_dir = tmp_path / f"round-{round_}"
        run_dir.mkdir()
        async with gateway_subprocess(data, ports["admin"], run_dir) as gateway:
            config = base | {"enable.idempotence": round_ % 2 == 0}
            producer = await asyncio.to_thread(Producing, config, topic)
            try:
                await until(
                    lambda p=producer: p.count() >= ACKED_BEFORE_KILL,
                    "acknowledgements",
                )
            finally:
                # Killed while the producer keeps writing: requests are in flight.
                gateway.process.send_signal(signal.SIGKILL)
                await asyncio.to_thread(gateway.process.wait, 10)
                acked |= set(await asyncio.to_thread(producer.stop))
        assert gateway.process.returncode == -signal.SIGKILL

    # One clean run seals the log with its final checkpoint.
    (tmp_path / "last").mkdir()
    async with gateway_subprocess(data, ports["admin"], tmp_path / "last"):
        pass

    assert len(acked) >= ROUNDS * ACKED_BEFORE_KILL
    missing = acked - _covered(audit_dir, topic)
    assert not missing, f"acknowledged without a Produce event: {sorted(missing)[:10]}"
    lines = list(read_events(audit_dir))
    recovered = [e for e in lines if e.get("type") == "recovered"]
    assert recovered, "the torn line was not sealed"
    assert forced
    assert any(t["torn_bytes"] == len(TORN) for e in recovered for t in e.get("tears") or ()), (
        recovered
    )
    assert sum(e["type"] == "audit_started" for e in lines) == ROUNDS + 1
    verified = await asyncio.to_thread(verify_as_auditor, audit_dir, public_pem)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "recovered:" in verified.stdout
