"""Health checks of both configured clusters against the real dev clusters: each check
logs in, reads metadata, asks every broker, and round-trips a canary record on the
gateway's own topic; ``GET /clusters`` shows the active and the standby cluster; the
standby going down (after its threshold) and coming back (after its) never touches the
active cluster's readiness.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from gateway import dev
from gateway.config import parse_config
from gateway.server.app import Gateway
from tests.integration.clients.confluent import librdkafka_config
from tests.integration.conftest import (
    ADMIN_TOKEN,
    NO_ROLE_TOKEN,
    admin_get,
    cluster_endpoint,
    cluster_section,
    gateway_config_data,
)

pytestmark = pytest.mark.integration

CHECK_LIMIT_S = 120.0


def _cluster(info: dev.ClusterInfo, canary: str) -> dict[str, Any]:
    health = {"interval_seconds": 1, "timeout_seconds": 3, "canary_topic": canary}
    thresholds = {"down_after_failures": 3, "up_after_successes": 2}
    return {**cluster_section(info), "health": {**health, **thresholds}}


class Checked:
    def __init__(self, gateway: Gateway, admin_url: str, canary: str) -> None:
        self.gateway, self.admin_url, self.canary = gateway, admin_url, canary

    def clusters(self) -> dict[str, dict[str, Any]]:
        status, _, body = admin_get(f"{self.admin_url}/clusters", ADMIN_TOKEN)
        assert status == 200, body
        doc = json.loads(body)
        assert doc["active"] == "primary"
        return {c["name"]: c for c in doc["clusters"]}

    async def wait(self, name: str, state: str, **wanted: Any) -> dict[str, Any]:
        deadline = time.monotonic() + CHECK_LIMIT_S
        while True:
            shown = (await asyncio.to_thread(self.clusters))[name]
            if shown["state"] == state and all(shown[k] == v for k, v in wanted.items()):
                return shown
            assert time.monotonic() < deadline, f"{name} never {state}: {shown}"
            await asyncio.sleep(0.2)


@pytest.fixture
async def checked(clusters: dict[str, dev.ClusterInfo]) -> AsyncIterator[Checked]:
    """A gateway with both clusters configured, checked every second with a canary."""
    canary = f"__it-canary-{uuid.uuid4().hex[:8]}"
    data, ports = gateway_config_data(clusters["primary"])
    data["clusters"] = {
        "primary": _cluster(clusters["primary"], canary),
        "secondary": _cluster(clusters["secondary"], canary),
    }
    gateway = Gateway(parse_config(data, "integration-test", environ={}))
    await gateway.start()
    try:
        yield Checked(gateway, f"http://127.0.0.1:{ports['admin']}", canary)
    finally:
        await gateway.stop()


def _canary_records(info: dev.ClusterInfo, topic: str) -> int:
    ep = cluster_endpoint(info)
    consumer = Consumer({**librdkafka_config(ep), "group.id": f"it-canary-{uuid.uuid4()}"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        return int(high - low)
    finally:
        consumer.close()


async def test_both_clusters_are_checked_with_a_canary_round_trip(
    checked: Checked, clusters: dict[str, dev.ClusterInfo]
) -> None:
    primary = await checked.wait("primary", "up")
    secondary = await checked.wait("secondary", "up")
    assert (primary["role"], secondary["role"]) == ("active", "standby")
    for shown in (primary, secondary):
        assert shown["canary_topic"] == checked.canary
        assert shown["brokers"] == len(clusters[shown["name"]].nodes)
        assert shown["canary_seconds"] is not None and shown["canary_seconds"] > 0
        assert shown["check_seconds"] >= shown["canary_seconds"]
        assert shown["reason"] == "every broker answered"
    # The canary wrote real records on each cluster (one per check, so several by now).
    for name in ("primary", "secondary"):
        written = await asyncio.to_thread(_canary_records, clusters[name], checked.canary)
        assert written >= 1, name
    status, _, body = await asyncio.to_thread(admin_get, f"{checked.admin_url}/readyz")
    assert status == 200
    assert json.loads(body)["clusters"] == {"primary": "up", "secondary": "up"}
    refused, _, _ = await asyncio.to_thread(
        admin_get, f"{checked.admin_url}/clusters", NO_ROLE_TOKEN
    )
    assert refused == 403


async def test_the_standby_goes_down_and_comes_back_by_its_thresholds_alone(
    checked: Checked, clusters: dict[str, dev.ClusterInfo]
) -> None:
    await checked.wait("secondary", "up")
    await checked.wait("primary", "up")
    try:
        await asyncio.to_thread(dev.stop_node, "secondary", 1)
        down = await checked.wait("secondary", "down")
        assert down["failures_in_a_row"] >= 3
        assert down["recoveries"] == 0
        # The active cluster keeps serving: the gateway stays ready.
        status, _, body = await asyncio.to_thread(admin_get, f"{checked.admin_url}/readyz")
        assert status == 200, body
        assert json.loads(body)["clusters"] == {"primary": "up", "secondary": "down"}
    finally:
        await asyncio.to_thread(dev.up, only=["secondary"])
    back = await checked.wait("secondary", "up")
    assert back["recoveries"] == 1
    assert back["successes_in_a_row"] >= 2
