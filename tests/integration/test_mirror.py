"""MirrorMaker 2 of the dev setup replicates the primary to the secondary: topics under
their own names with every committed record, in order, with keys and headers; records of
aborted transactions left out; consumer group offsets synced, never ahead of the data.
`dev status --json` shows it, and no password is in what it records.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from gateway import dev
from tests.integration.clients.common import Endpoint
from tests.integration.clients.confluent import librdkafka_config
from tests.integration.clients.dispatch import acreate_topic

pytestmark = pytest.mark.integration

# MirrorMaker refreshes its topic and group lists every 5 s and syncs every second;
# on a busy two-core machine the first records of a new topic take longer.
MIRROR_WAIT_S = 120.0
PARTITIONS = 2


Read = dict[int, list[tuple[bytes | None, bytes | None, tuple[tuple[str, bytes], ...]]]]


def _produce(ep: Endpoint, topic: str, tag: str) -> None:
    """A committed transaction (c0..c9), an aborted one (a0..a4), then 20 idempotent
    records with keys and a header, spread over both partitions."""
    txn = Producer({**librdkafka_config(ep), "transactional.id": f"mirror-txn-{tag}"})
    txn.init_transactions(30)
    txn.begin_transaction()
    for i in range(10):
        txn.produce(topic, key=b"k%d" % (i % 4), value=b"c%d" % i, partition=i % PARTITIONS)
    txn.commit_transaction(30)
    txn.begin_transaction()
    for i in range(5):
        txn.produce(topic, key=b"k%d" % i, value=b"a%d" % i, partition=i % PARTITIONS)
    # Written to the log before the abort (abort_transaction drops what is unsent).
    assert txn.flush(30) == 0
    txn.abort_transaction(30)
    plain = Producer({**librdkafka_config(ep), "enable.idempotence": True})
    for i in range(20):
        plain.produce(
            topic,
            key=b"p%d" % i,
            value=b"v%d" % i,
            partition=i % PARTITIONS,
            headers=[("n", b"%d" % i)],
        )
    assert plain.flush(30) == 0


def _read(ep: Endpoint, topic: str, expected: int, limit: float, group: str | None = None) -> Read:
    """Every record of ``topic`` as a read_committed consumer sees it, by partition;
    with ``group``, read as that group and commit its position."""
    conf = {
        **librdkafka_config(ep),
        "group.id": group or f"mirror-reader-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    }
    consumer = Consumer(conf)
    consumer.subscribe([topic])
    seen: Read = {p: [] for p in range(PARTITIONS)}
    deadline = time.monotonic() + limit
    try:
        while sum(map(len, seen.values())) < expected and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error() is not None:
                continue
            headers = tuple((k, v or b"") for k, v in (msg.headers() or []))
            seen[msg.partition()].append((msg.key(), msg.value(), headers))
        if group is not None:
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return seen


def _synced(ep: Endpoint, topic: str, group: str) -> dict[int, int]:
    """The group's committed offsets on ``ep`` by partition (-1001: none)."""
    consumer = Consumer({**librdkafka_config(ep), "group.id": group})
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        try:
            return {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=10)}
        except KafkaException:
            return {}
    finally:
        consumer.close()


def _ends(ep: Endpoint, topic: str) -> dict[int, int]:
    consumer = Consumer({**librdkafka_config(ep), "group.id": f"mirror-ends-{uuid.uuid4()}"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(PARTITIONS)
        }
    finally:
        consumer.close()


async def test_topics_records_and_group_offsets_reach_the_secondary(
    mirror: dev.MirrorInfo, direct: Endpoint, secondary_direct: Endpoint
) -> None:
    tag = uuid.uuid4().hex[:10]
    topic, group = f"mirror-{tag}", f"mirror-group-{tag}"
    await acreate_topic(direct, topic, PARTITIONS, 3)
    await asyncio.to_thread(_produce, direct, topic, tag)
    source = await asyncio.to_thread(_read, direct, topic, 30, 60, group)
    values = sorted(v or b"" for records in source.values() for _, v, _ in records)
    assert values == sorted([b"c%d" % i for i in range(10)] + [b"v%d" % i for i in range(20)])
    committed = await asyncio.to_thread(_synced, direct, topic, group)
    # Partition 0: c0 c2 c4 c6 c8, commit marker, a0 a2 a4, abort marker, ten v: 20
    # offsets; partition 1 has two aborted records: 19.
    assert committed == {0: 20, 1: 19}

    target = await asyncio.to_thread(_read, secondary_direct, topic, 30, MIRROR_WAIT_S)

    # Same partitions, the same committed records in the same order with their keys and
    # headers; nothing of the aborted transaction.
    assert target == source

    deadline = time.monotonic() + MIRROR_WAIT_S
    synced: dict[int, int] = {}
    while time.monotonic() < deadline:
        synced = await asyncio.to_thread(_synced, secondary_direct, topic, group)
        if synced and all(offset > 0 for offset in synced.values()):
            break
        await asyncio.sleep(1)
    ends = await asyncio.to_thread(_ends, secondary_direct, topic)
    # Translated offsets point into the mirrored data and never past it: a consumer
    # that continues there re-reads at most, and skips nothing.
    assert set(synced) == {0, 1}
    assert all(0 < synced[p] <= ends[p] for p in synced), (synced, ends)
    # The mirror writes the 15 committed records of each partition, without markers.
    assert ends == {0: 15, 1: 15}


def test_dev_status_shows_the_mirror_and_nothing_holds_a_password_but_its_0600_config(
    mirror: dev.MirrorInfo,
    clusters: dict[str, dev.ClusterInfo],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert dev.main(["status", "--json"]) == 0
    out = capsys.readouterr().out
    shown = json.loads(out)["mirror"]
    run = dev.default_run_dir()
    recorded = (run / "mirror.json").read_text(encoding="utf-8")
    # The MirrorMaker running now (a test that stops and starts it gives it a new pid).
    assert shown["pid"] is not None and shown["pid"] == json.loads(recorded)["pid"]
    os.kill(shown["pid"], 0)  # alive
    assert (shown["source"], shown["target"]) == ("primary", "secondary")
    assert shown["topics"] == os.environ[dev.MIRROR_TOPICS_ENV]
    log = Path(mirror.log_file).read_text(encoding="utf-8", errors="replace")
    for info in clusters.values():
        password = dev.read_password(info)
        assert password not in out
        assert password not in recorded
        assert password not in log
        assert password in Path(mirror.config_file).read_text(encoding="utf-8")
    assert stat.S_IMODE(os.stat(mirror.config_file).st_mode) == 0o600
