"""Hot reload of the policy in a running gateway in front of the real dev cluster: the
watcher picks up a change on disk, an invalid set is refused through the admin API
while the old policy stays, a client connected throughout keeps producing and gets a
newly denied topic refused on its next Produce, and SIGHUP reloads a gateway run as
its own process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway import dev
from gateway.config import parse_config
from gateway.server.app import Gateway
from tests.integration.clients import Endpoint, Record, aproduce, connected_producer
from tests.integration.conftest import (
    ADMIN_TOKEN,
    CLIENT_PASSWORD,
    CLIENT_USER,
    admin_get,
    gateway_config_data,
    gateway_subprocess,
)

pytestmark = pytest.mark.integration

# it-client may do anything: whatever the pipeline enforces, the test's own traffic
# is allowed, and only the version changes between the two sets.
BASE = f"""\
rules:
  - id: it-client-everything
    effect: allow
    subjects: {{principals: [{CLIENT_USER}]}}
    resources:
      - {{type: topic, glob: "*"}}
      - {{type: group, glob: "*"}}
      - {{type: transactional_id, glob: "*"}}
      - {{type: cluster, literal: kafka-cluster}}
    operations: [all]
"""
EXTRA = """\
rules:
  - id: analyst-reads-orders
    effect: allow
    subjects: {principals: [analyst]}
    resources:
      - {type: topic, literal: orders}
    operations: [read]
"""
BROKEN = "rules:\n  - id: bad\n    effect: perhaps\n"


def _policy_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "base.yaml").write_text(BASE, encoding="utf-8")
    return directory


async def _policy(admin_url: str) -> dict[str, Any]:
    status, _, body = await asyncio.to_thread(admin_get, f"{admin_url}/policy", ADMIN_TOKEN)
    assert status == 200, body
    answer: dict[str, Any] = json.loads(body)
    return answer


async def _version_other_than(admin_url: str, old: str) -> dict[str, Any]:
    """``GET /policy`` once its version is no longer ``old`` (bounded, not timed)."""
    for _ in range(300):
        answer = await _policy(admin_url)
        if answer["version"] != old:
            return answer
        await asyncio.sleep(0.1)
    raise AssertionError(f"the policy version stayed {old}")


def _post(url: str, token: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, method="POST")  # noqa: S310 - a test URL
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _config(primary: dev.ClusterInfo, policy_dir: Path, interval: float) -> dict[str, Any]:
    data, ports = gateway_config_data(primary)
    data["policy"] = {"dir": str(policy_dir), "reload_interval_seconds": interval}
    data["_ports"] = ports
    return data


def _produce_one(producer: Any, topic: str, value: bytes) -> None:
    """One record through a producer that stays connected; raises on a delivery error."""
    errors: list[object] = []
    producer.produce(topic, value, on_delivery=lambda err, _msg: errors.append(err))
    assert producer.flush(30) == 0
    assert errors == [None]


@contextlib.asynccontextmanager
async def _in_process_gateway(
    primary: dev.ClusterInfo, policy_dir: Path
) -> AsyncIterator[tuple[str, Endpoint]]:
    """A gateway whose watcher looks every 0.2 s: its admin URL and SASL endpoint."""
    data = _config(primary, policy_dir, interval=0.2)
    ports = data.pop("_ports")
    running = Gateway(parse_config(data, "integration-test", environ={}))
    await running.start()
    try:
        yield (
            f"http://127.0.0.1:{ports['admin']}",
            Endpoint(
                f"127.0.0.1:{ports['sasl']}",
                security_protocol="SASL_PLAINTEXT",
                sasl_mechanism="PLAIN",
                username=CLIENT_USER,
                password=CLIENT_PASSWORD,
            ),
        )
    finally:
        await running.stop()


async def test_the_watcher_reloads_a_changed_directory_without_a_restart(
    primary: dev.ClusterInfo, tmp_path: Path
) -> None:
    policy_dir = _policy_dir(tmp_path)
    topic = f"it-reload-{time.monotonic_ns()}"
    async with _in_process_gateway(primary, policy_dir) as (admin_url, sasl):
        producer = await asyncio.to_thread(connected_producer, sasl)
        try:
            first = await _policy(admin_url)
            await asyncio.to_thread(_produce_one, producer, topic, b"before")

            (policy_dir / "extra.yaml").write_text(EXTRA, encoding="utf-8")
            second = await _version_other_than(admin_url, first["version"])
            await asyncio.to_thread(_produce_one, producer, topic, b"after")

            (policy_dir / "broken.yaml").write_text(BROKEN, encoding="utf-8")
            refused_status, refused = await asyncio.to_thread(
                _post, f"{admin_url}/policy/reload", ADMIN_TOKEN
            )
            await asyncio.to_thread(_produce_one, producer, topic, b"while refused")
            await aproduce("confluent", sasl, topic, [Record(0, -1, b"k", b"new connection")])
        finally:
            await asyncio.to_thread(producer.close)

    assert first["enforced"] is True and first["files"] == ["base.yaml"]
    assert second["files"] == ["base.yaml", "extra.yaml"] and second["rules"] == 2
    assert second["last_reload"]["result"] == "success"
    assert refused_status == 422
    assert refused["version"] == second["version"]
    assert any("broken.yaml:3" in line for line in refused["last_reload"]["error"])


def _delivery_error(producer: Any, topic: str, value: bytes) -> str | None:
    """The delivery error's name of one record (None: delivered)."""
    errors: list[Any] = []
    producer.produce(topic, value, on_delivery=lambda err, _msg: errors.append(err))
    assert producer.flush(30) == 0
    return None if errors[0] is None else str(errors[0].name())


async def test_a_reloaded_deny_applies_to_the_next_produce_of_an_open_connection(
    primary: dev.ClusterInfo, tmp_path: Path
) -> None:
    policy_dir = _policy_dir(tmp_path)
    kept, denied = (f"it-reload-{name}-{time.monotonic_ns()}" for name in ("kept", "denied"))
    deny = (
        "rules:\n  - id: deny-writes\n    effect: deny\n"
        f"    subjects: {{principals: [{CLIENT_USER}]}}\n"
        f"    resources:\n      - {{type: topic, literal: {denied}}}\n"
        "    operations: [write]\n"
    )
    async with _in_process_gateway(primary, policy_dir) as (admin_url, sasl):
        producer = await asyncio.to_thread(connected_producer, sasl)
        try:
            first = await _policy(admin_url)
            before = [
                await asyncio.to_thread(_delivery_error, producer, t, b"v1") for t in (kept, denied)
            ]

            (policy_dir / "deny.yaml").write_text(deny, encoding="utf-8")
            await _version_other_than(admin_url, first["version"])
            after = [
                await asyncio.to_thread(_delivery_error, producer, t, b"v2") for t in (kept, denied)
            ]
        finally:
            await asyncio.to_thread(producer.close)

    assert before == [None, None]
    assert after == [None, "TOPIC_AUTHORIZATION_FAILED"]


# -- SIGHUP, on a gateway run as its own process -----------------------------------------


async def test_sighup_reloads_the_policy_of_a_running_process(
    primary: dev.ClusterInfo, tmp_path: Path
) -> None:
    policy_dir = _policy_dir(tmp_path)
    # The watcher would not look again within the test: only SIGHUP can reload.
    data = _config(primary, policy_dir, interval=3600)
    ports = data.pop("_ports")
    async with gateway_subprocess(data, ports["admin"], tmp_path) as running:
        process, admin_url, log_path = running.process, running.admin_url, running.log_path
        first = await _policy(admin_url)
        (policy_dir / "extra.yaml").write_text(EXTRA, encoding="utf-8")

        process.send_signal(signal.SIGHUP)
        second = await _version_other_than(admin_url, first["version"])

        (policy_dir / "broken.yaml").write_text(BROKEN, encoding="utf-8")
        process.send_signal(signal.SIGHUP)
        for _ in range(300):
            third = await _policy(admin_url)
            if third["last_reload"]["result"] == "failure":
                break
            await asyncio.sleep(0.1)
        alive = process.poll() is None
        log = log_path.read_text(encoding="utf-8")

    assert second["rules"] == 2 and second["last_reload"]["result"] == "success"
    assert third["last_reload"]["result"] == "failure"
    assert third["version"] == second["version"]
    assert alive
    assert f"SIGHUP: policy reload success, version {second['version']}" in log
