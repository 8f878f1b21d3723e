"""Upstream faults under load: the gateway rides through them and heals by itself.

Each test runs real clients through a gateway of its own while the real broker is
paused, killed or stopped, and then checks what the clients are owed: every
acknowledged record is in the log exactly once and in order, every record got a
delivery report, no client connection was dropped for an upstream failure, and the
gateway is ready again after the fault without anyone touching it. Recovery times are
printed (and appended to ``$FAULT_TIMINGS``); they are measured, not asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from gateway import dev
from tests.integration.clients import (
    Endpoint,
    acreate_topic,
    consume,
    librdkafka_config,
    unique_topic,
)
from tests.integration.conftest import GatewayUnderTest, SessionLog, running_gateway
from tests.integration.faults import (
    PacedProducer,
    ametric,
    check_log,
    readyz,
    timings,
    wait_ready,
)

pytestmark = pytest.mark.integration

PARTITIONS = 3
COUNT = 50_000
RATE = 2_000.0


def node_ids(cluster: str) -> list[int]:
    return [n.node_id for n in dev.nodes(cluster)]


@pytest.fixture
def paused_guard() -> Iterator[list[int]]:
    """Primary nodes paused by a test are resumed whatever happens to it."""
    paused: list[int] = []
    yield paused
    for node in paused:
        with contextlib.suppress(dev.DevError):
            dev.resume_node("primary", node)


@dataclasses.dataclass
class Load:
    """A gateway of the test's own with an idempotent producer writing through it."""

    gateway: GatewayUnderTest
    producer: PacedProducer
    finished_at: float = 0.0


@contextlib.asynccontextmanager
async def producing_through_a_gateway(
    primary: dev.ClusterInfo, direct: Endpoint, prefix: str
) -> AsyncIterator[Load]:
    """Load for a fault injected in the ``async with`` body; on the way out, what the
    producer is owed: every record reported, none failed, every acknowledged one in the
    log once and in order, and no client connection closed for an upstream failure."""
    topic = unique_topic(prefix)
    await acreate_topic(direct, topic, PARTITIONS)
    closed = ("gateway_connections_closed_total",)
    async with running_gateway(primary) as gw:
        dropped_before = await ametric(gw.admin_url, *closed, reason="request failed")
        load = Load(gw, PacedProducer(gw.sasl, topic, COUNT, RATE))
        load.producer.start()
        await asyncio.sleep(5)
        yield load
        deliveries = await load.producer.finish()
        load.finished_at = time.monotonic()
        dropped = await ametric(gw.admin_url, *closed, reason="request failed")
    assert deliveries.reported == COUNT
    check_log(direct, topic, PARTITIONS, deliveries)
    assert not deliveries.failed, (
        f"{len(deliveries.failed)} records failed: {set(deliveries.failed.values())}"
    )
    assert dropped == dropped_before, "a client connection was closed for an upstream failure"


async def test_idempotent_producer_rides_through_a_15s_broker_pause(
    primary: dev.ClusterInfo,
    direct: Endpoint,
    session_log: SessionLog,
    paused_guard: list[int],
) -> None:
    async with producing_through_a_gateway(primary, direct, "pause") as load:
        admin = load.gateway.admin_url
        for node in node_ids("primary"):  # the whole cluster, however many nodes
            await asyncio.to_thread(dev.pause_node, "primary", node)
            paused_guard.append(node)
        # Checks run every 5 s and give a broker 5 s: by now one has found none.
        await asyncio.sleep(13.5)
        status, took = await asyncio.to_thread(readyz, admin)
        await asyncio.sleep(1.5)
        for node in paused_guard:
            await asyncio.to_thread(dev.resume_node, "primary", node)
        resumed = time.monotonic()
        assert status == 503, "the gateway said it was ready while every broker was paused"
        ready_after = await wait_ready(admin)
        recoveries = await ametric(admin, "gateway_upstream_recoveries_total", cluster="primary")
    assert recoveries >= 1
    timings(
        "broker paused 15s",
        readyz_while_paused=took,
        ready_after_resume=ready_after,
        producer_done_after_resume=load.finished_at - resumed,
    )


async def test_idempotent_producer_rides_through_a_broker_killed_and_restarted(
    primary: dev.ClusterInfo, direct: Endpoint, session_log: SessionLog
) -> None:
    async with producing_through_a_gateway(primary, direct, "kill") as load:
        admin = load.gateway.admin_url
        for node in node_ids("primary"):
            await asyncio.to_thread(dev.kill_node, "primary", node)
        _, took = await asyncio.to_thread(readyz, admin)
        noticed = await wait_status(admin, 503)
        killed = time.monotonic()
        await asyncio.to_thread(dev.up, only=["primary"])
        restarted = time.monotonic() - killed
        ready_after = await wait_ready(admin)
    timings(
        "broker killed and restarted",
        readyz_while_dead=took,
        unready_after_kill=noticed,
        broker_restart=restarted,
        gateway_ready_after_restart=ready_after,
    )


async def test_gateway_started_without_its_cluster_serves_once_the_cluster_is_up(
    clusters: dict[str, dev.ClusterInfo],
    session_log: SessionLog,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secondary = clusters["secondary"]
    for node in node_ids("secondary"):
        await asyncio.to_thread(dev.stop_node, "secondary", node)
    try:
        async with running_gateway(secondary) as gw:
            status, took = await asyncio.to_thread(readyz, gw.admin_url)
            assert status == 503
            # A client now is closed at once (nothing to advertise yet), and the log
            # says why.
            host, _, port = gw.plain.bootstrap.rpartition(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
            refusals = [
                r.getMessage() for r in caplog.records if "not answered yet" in r.getMessage()
            ]
            assert refusals and "closed 1 client connection(s)" in refusals[0]
            started = time.monotonic()
            await asyncio.to_thread(dev.up, only=["secondary"])
            up_after = time.monotonic() - started
            ready_after = await wait_ready(gw.admin_url)
            topic = unique_topic("late")
            producer = Producer({**librdkafka_config(gw.plain), "acks": "all"})
            for i in range(20):
                producer.produce(topic, value=b"late-%d" % i)
            assert await asyncio.to_thread(producer.flush, 60) == 0
            records = await asyncio.to_thread(consume, "confluent", gw.plain, topic, 1, 20)
    finally:
        await asyncio.to_thread(dev.up, only=["secondary"])
    assert [r.value for r in records] == [b"late-%d" % i for i in range(20)]
    timings(
        "started without its cluster",
        readyz_while_down=took,
        cluster_start=up_after,
        ready_after_cluster_up=ready_after,
    )


async def test_gateway_resumes_by_itself_once_its_rotated_password_is_in_its_file(
    primary: dev.ClusterInfo, direct: Endpoint, session_log: SessionLog, tmp_path: Path
) -> None:
    user = f"it-rotate-{uuid.uuid4().hex[:8]}"
    old, new = f"old-{uuid.uuid4().hex}", f"new-{uuid.uuid4().hex}"
    await asyncio.to_thread(set_scram_password, direct, user, old)
    secret = tmp_path / "upstream.password"
    secret.write_text(old, encoding="utf-8")
    cluster = dataclasses.replace(primary, username=user, password_file=str(secret))
    topic = unique_topic("rotate")
    await acreate_topic(direct, topic, 1)
    async with running_gateway(cluster) as gw:
        await asyncio.to_thread(
            produce_values, gw.plain, topic, [b"before-%d" % i for i in range(10)]
        )
        await asyncio.to_thread(set_scram_password, direct, user, new)
        # A new client needs new upstream logins, which the cluster now refuses.
        late = asyncio.ensure_future(
            asyncio.to_thread(produce_values, gw.plain, topic, [b"after-%d" % i for i in range(10)])
        )
        unready = await wait_status(gw.admin_url, 503)
        secret.write_text(new, encoding="utf-8")
        ready_after = await wait_ready(gw.admin_url)
        await late
    records = await asyncio.to_thread(consume, "confluent", direct, topic, 1, 20)
    assert [r.value for r in records] == [b"before-%d" % i for i in range(10)] + [
        b"after-%d" % i for i in range(10)
    ]
    leaked = [line for line in session_log.lines if old in line or new in line]
    assert not leaked, f"a password reached the log: {leaked[0][:200]}"
    timings("credentials rotated", unready_after=unready, ready_after_file_update=ready_after)


def set_scram_password(admin_endpoint: Endpoint, user: str, password: str) -> None:
    from confluent_kafka.admin import (
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    admin = AdminClient(librdkafka_config(admin_endpoint))
    upsert = UserScramCredentialUpsertion(
        user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192), password.encode()
    )
    for future in admin.alter_user_scram_credentials([upsert]).values():
        future.result(30)


def produce_values(endpoint: Endpoint, topic: str, values: list[bytes]) -> None:
    producer = Producer(
        {**librdkafka_config(endpoint), "acks": "all", "message.timeout.ms": 120_000}
    )
    errors: list[str] = []
    for value in values:
        producer.produce(
            topic, value=value, on_delivery=lambda err, _: errors.append(str(err)) if err else None
        )
    assert producer.flush(150) == 0
    assert not errors, errors


async def wait_status(admin_url: str, wanted: int, limit: float = 60) -> float:
    started = time.monotonic()
    while (await asyncio.to_thread(readyz, admin_url))[0] != wanted:
        assert time.monotonic() - started < limit, f"/readyz never answered {wanted}"
        await asyncio.sleep(0.2)
    return time.monotonic() - started
