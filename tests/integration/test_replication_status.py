"""``gateway failover status`` against the real dev clusters and the real MirrorMaker 2:
caught up once MirrorMaker has copied every committed record and synced the group's
offsets; with MirrorMaker stopped, the records written since are counted exactly as
pending (aborted ones and transaction markers are not), until it runs again. And the
gateway's own watch of the same lag and group sync: metrics and ``GET /clusters``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, Producer
from prometheus_client import REGISTRY

from gateway import dev, failover_cli
from gateway.config import Config, parse_config
from gateway.failover.replication import ReplicationStatus, replication_status
from gateway.server.app import Gateway
from tests.integration.clients.common import Endpoint
from tests.integration.clients.confluent import librdkafka_config
from tests.integration.clients.dispatch import acreate_topic
from tests.integration.conftest import (
    ADMIN_TOKEN,
    admin_get,
    cluster_endpoint,
    cluster_section,
    gateway_config_data,
)

pytestmark = pytest.mark.integration

WAIT_S = 120.0


def _produce(ep: Endpoint, topic: str, values: list[bytes], partition: int) -> None:
    producer = Producer({**librdkafka_config(ep), "enable.idempotence": True})
    for value in values:
        producer.produce(topic, value=value, partition=partition)
    assert producer.flush(30) == 0


def _transactions(ep: Endpoint, topic: str) -> None:
    """A committed transaction of 4 records and an aborted one of 3, on partition 0."""
    txn = Producer({**librdkafka_config(ep), "transactional.id": f"{topic}-txn"})
    txn.init_transactions(30)
    for commit, count in ((True, 4), (False, 3)):
        txn.begin_transaction()
        for i in range(count):
            txn.produce(topic, value=b"txn-%d" % i, partition=0)
        assert txn.flush(30) == 0
        (txn.commit_transaction if commit else txn.abort_transaction)(30)


def _read_as_group(ep: Endpoint, topic: str, group: str, count: int) -> None:
    consumer = Consumer(
        {
            **librdkafka_config(ep),
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    seen, deadline = 0, time.monotonic() + 60
    try:
        while seen < count and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                seen += 1
        assert seen == count
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()


def _admin_post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(  # noqa: S310 - a test URL
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _both_clusters(clusters: dict[str, dev.ClusterInfo], tmp_path: Path) -> tuple[Config, Path]:
    """A gateway config with both dev clusters, parsed and written to a file."""
    data, _ = gateway_config_data(clusters["primary"])
    data["clusters"] = {name: cluster_section(info) for name, info in clusters.items()}
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    config = parse_config(data, "integration-test", environ={})
    assert config.clusters.secondary is not None
    return config, config_file


async def _wait(read: Any, done: Any) -> ReplicationStatus:
    deadline = time.monotonic() + WAIT_S
    while True:
        status: ReplicationStatus = await read()
        if done(status):
            return status
        assert time.monotonic() < deadline, status.as_json()
        await asyncio.sleep(1)


async def test_status_counts_exactly_what_the_secondary_still_lacks(
    mirror: dev.MirrorInfo,
    clusters: dict[str, dev.ClusterInfo],
    direct: Endpoint,
    tmp_path: Path,
) -> None:
    tag = uuid.uuid4().hex[:10]
    topic, group = f"mirror-status-{tag}", f"mirror-status-group-{tag}"
    config, config_file = _both_clusters(clusters, tmp_path)
    only, only_group = re.compile(re.escape(topic)), re.compile(re.escape(group))

    async def read() -> ReplicationStatus:
        return await replication_status(
            config.clusters.primary, config.clusters.secondary, topics=only, groups=only_group
        )

    await acreate_topic(direct, topic, 2, 3)
    await asyncio.to_thread(_transactions, direct, topic)
    await asyncio.to_thread(_produce, direct, topic, [b"p0-%d" % i for i in range(10)], 0)
    await asyncio.to_thread(_produce, direct, topic, [b"p1-%d" % i for i in range(6)], 1)
    await asyncio.to_thread(_read_as_group, direct, topic, group, 4 + 10 + 6)

    caught_up = await _wait(
        read, lambda s: s.caught_up and len(s.groups) == 2 and all(g.synced for g in s.groups)
    )
    first, second = caught_up.partitions
    # Partition 0 on the source: 4 committed, a marker, 3 aborted, a marker, 10 more
    # (offsets 0-18); on the secondary the 14 committed ones (0-13).
    assert (first.source_end, first.target_end, first.pending) == (19, 14, 0)
    assert first.synced is not None and first.synced.upstream == 18
    assert first.synced.downstream == 13
    assert (second.source_end, second.target_end, second.pending) == (6, 6, 0)
    # The group's commits (19 and 6) translate into the mirrored data, never past it.
    points = {g.partition: (g.source_committed, g.checkpoint) for g in caught_up.groups}
    assert {p: committed for p, (committed, _) in points.items()} == {0: 19, 1: 6}
    assert all(c is not None and 0 < c.downstream <= (14, 6)[p] for p, (_, c) in points.items())

    run = dev.default_run_dir()
    dev.stop_mirror(run)
    try:
        await asyncio.to_thread(_produce, direct, topic, [b"late-%d" % i for i in range(7)], 0)
        await asyncio.to_thread(_transactions, direct, topic)
        behind = await read()
        first, second = behind.partitions
        # 7 plain and 4 committed records wait on partition 0; nothing on partition 1.
        assert (first.pending, first.exact, first.caught_up) == (11, True, False)
        assert (second.pending, second.caught_up) == (0, True)
        assert not behind.caught_up and behind.pending == 11
    finally:
        dev.start_mirror(run, clusters["primary"], clusters["secondary"])
    back = await _wait(read, lambda s: s.caught_up)
    assert back.partitions[0].target_end == 14 + 11

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = await asyncio.to_thread(
            failover_cli.main,
            ["status", "--config", str(config_file), "--json", "--topics", re.escape(topic)],
        )
    assert code == 0
    shown = json.loads(out.getvalue())
    assert shown["caught_up"] is True and shown["pending"] == 0
    assert [p["partition"] for p in shown["partitions"]] == [0, 1]
    for info in clusters.values():
        assert dev.read_password(info) not in out.getvalue()


async def test_a_drill_dry_run_hands_groups_over_exactly_where_offsets_match(
    mirror: dev.MirrorInfo,
    clusters: dict[str, dev.ClusterInfo],
    direct: Endpoint,
    tmp_path: Path,
) -> None:
    tag = uuid.uuid4().hex[:10]
    topic, group, only = f"mirror-drill-{tag}", f"mirror-drill-group-{tag}", f"drillonly-{tag}"
    config, config_file = _both_clusters(clusters, tmp_path)

    await acreate_topic(direct, topic, 2, 3)
    await acreate_topic(direct, only, 1, 3)  # MirrorMaker here copies mirror-* only
    # Partition 0 gets a transaction's markers and aborted records (offsets the copy
    # does not have); partition 1 plain records (copied at the same offsets).
    await asyncio.to_thread(_transactions, direct, topic)
    await asyncio.to_thread(_produce, direct, topic, [b"p0-%d" % i for i in range(10)], 0)
    await asyncio.to_thread(_produce, direct, topic, [b"p1-%d" % i for i in range(6)], 1)
    await asyncio.to_thread(_read_as_group, direct, topic, group, 4 + 10 + 6)
    await _wait(
        lambda: replication_status(
            config.clusters.primary,
            config.clusters.secondary,
            topics=re.compile(re.escape(topic)),
            groups=re.compile(re.escape(group)),
        ),
        lambda s: s.caught_up and len(s.groups) == 2 and all(g.synced for g in s.groups),
    )

    argv = ["drill", "--to", "secondary", "--config", str(config_file)]
    argv += ["--topics", f"{re.escape(topic)}|{re.escape(only)}", "--groups", re.escape(group)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = await asyncio.to_thread(failover_cli.main, [*argv, "--dry-run", "--json"])
    assert code == 0
    plan = json.loads(out.getvalue())
    assert plan["caught_up"] is True and plan["pending"] == 0
    assert plan["same_offsets"] == [{"topic": topic, "partition": 1}]
    assert plan["not_mirrored"] == [only]
    moves = {g["partition"]: g for g in plan["groups"]}
    # Same offsets: the commit itself is handed over; nothing is read again.
    assert (moves[1]["source_committed"], moves[1]["handoff"], moves[1]["reread"]) == (6, 6, 0)
    # Offsets differ: MirrorMaker's checkpoint, and what lies between is read again.
    gapped = moves[0]
    assert gapped["source_committed"] == 19 and gapped["same_offsets"] is False
    assert gapped["handoff"] == gapped["checkpoint"]["target"]
    assert gapped["reread"] == 19 - gapped["checkpoint"]["source"]
    for info in clusters.values():
        assert dev.read_password(info) not in out.getvalue()
    # The drill itself is not built: without --dry-run it is refused, nothing done.
    assert await asyncio.to_thread(failover_cli.main, argv) == 2


async def test_the_gateway_watches_the_lag_and_exports_it(
    mirror: dev.MirrorInfo,
    clusters: dict[str, dev.ClusterInfo],
    direct: Endpoint,
) -> None:
    tag = uuid.uuid4().hex[:10]
    # One topic MirrorMaker copies (it matches the dev mirror's topics), one it does
    # not: created on both clusters by hand, written on the primary only.
    copied, missing = f"mirror-watch-{tag}", f"unmirrored-watch-{tag}"
    await acreate_topic(direct, copied, 1, 3)
    await acreate_topic(direct, missing, 1, 3)
    await acreate_topic(cluster_endpoint(clusters["secondary"]), missing, 1, 1)
    for topic in (copied, missing):
        await asyncio.to_thread(_produce, direct, topic, [b"r-%d" % i for i in range(5)], 0)
    # A group that read the copied topic on the primary (MirrorMaker syncs its offsets).
    group = f"mirror-watch-group-{tag}"
    await asyncio.to_thread(_read_as_group, direct, copied, group, 5)
    data, ports = gateway_config_data(clusters["primary"])
    data["clusters"] = {name: cluster_section(info) for name, info in clusters.items()}
    data["clusters"]["replication"] = {
        "watch_interval_seconds": 1,
        "topics": f"(mirror|unmirrored)-watch-{tag}",
        "groups": re.escape(group),
    }
    gateway = Gateway(parse_config(data, "integration-test", environ={}))
    await gateway.start()
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            status, _, body = await asyncio.to_thread(
                admin_get, f"http://127.0.0.1:{ports['admin']}/clusters", ADMIN_TOKEN
            )
            assert status == 200, body
            shown = json.loads(body)["replication"]
            synced = {group: {"partitions": 1, "unsynced": 0}}
            if shown["topics"] == {copied: 0, missing: 5} and shown["groups"] == synced:
                break
            assert time.monotonic() < deadline, shown
            await asyncio.sleep(0.5)
        # The same gateway's admin API: what a drill would meet, for operators.
        status, plan = await asyncio.to_thread(
            _admin_post,
            f"http://127.0.0.1:{ports['admin']}/failover/drill",
            {"to": "secondary", "dry_run": True},
        )
    finally:
        await gateway.stop()
    assert status == 200, plan
    assert (plan["source"], plan["target"], plan["pending"]) == ("primary", "secondary", 5)
    assert [(g["group"], g["topic"], g["handoff"], g["reread"]) for g in plan["groups"]] == [
        (group, copied, 5, 0)
    ]
    assert (shown["source"], shown["target"]) == ("primary", "secondary")
    assert shown["error"] is None and shown["read_at"] is not None
    assert (shown["caught_up"], shown["pending"], shown["pending_exact"]) == (False, 5, True)
    pending = "gateway_replication_pending_records"
    assert REGISTRY.get_sample_value(pending, {"topic": missing}) == 5
    assert REGISTRY.get_sample_value(pending, {"topic": copied}) == 0
    assert REGISTRY.get_sample_value("gateway_replication_caught_up") == 0
    unsynced = "gateway_replication_group_unsynced_partitions"
    assert REGISTRY.get_sample_value(unsynced, {"group": group}) == 0
    assert (
        REGISTRY.get_sample_value("gateway_replication_rounds_total", {"result": "ok"}) or 0
    ) > 0
