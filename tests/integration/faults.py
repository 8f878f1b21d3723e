"""Load, faults and a checker for the fault-injection tests.

:class:`PacedProducer` drives an idempotent confluent-kafka producer at a fixed rate
and keeps every delivery report; :func:`check_log` reads the topic back directly from
Kafka and checks what an application is owed: every acknowledged record is there
exactly once, no record is there twice, and each partition holds the producer's
records in the order they were sent. :func:`check_group` checks a consumer group the
same way: it read every record of the log, each partition in order, and committed the
end of every partition. :class:`Progress` samples a count (records acknowledged,
records consumed) to measure how long a fault held it still, and
:func:`restore_primary` puts the primary's nodes back as the session started them.
Timings are measured and returned for the report; the tests assert correctness only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from gateway import dev
from gateway.dev.layout import layouts
from gateway.dev.state import resolve_run_dir
from tests.integration.clients import (
    ClientError,
    Endpoint,
    Record,
    committed_offsets,
    consume,
    librdkafka_config,
    watermarks,
)


@dataclass
class Deliveries:
    """What the producer's delivery reports said, by sequence number."""

    acked: dict[int, tuple[int, int]] = field(default_factory=dict)  # seq -> (partition, offset)
    failed: dict[int, str] = field(default_factory=dict)  # seq -> error

    @property
    def reported(self) -> int:
        return len(self.acked) + len(self.failed)


class PacedProducer:
    """An idempotent producer sending ``count`` records at ``rate`` per second in a
    thread; values are ``seq`` as text, keys spread them over the partitions."""

    def __init__(
        self, endpoint: Endpoint, topic: str, count: int, rate: float, **config: Any
    ) -> None:
        self.endpoint, self.topic, self.count, self.rate = endpoint, topic, count, rate
        self.config = {
            **librdkafka_config(endpoint),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 120_000,
            **config,
        }
        self.deliveries = Deliveries()
        self.sent = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="paced-producer", daemon=True)
        self._thread.start()

    async def finish(self, timeout: float = 240) -> Deliveries:
        assert self._thread is not None
        await asyncio.to_thread(self._thread.join, timeout)
        assert not self._thread.is_alive(), "the producer did not finish in time"
        if self._error is not None:
            raise self._error
        return self.deliveries

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        seq = int(msg.value())
        if err is None:
            self.deliveries.acked[seq] = (msg.partition(), msg.offset())
        else:
            self.deliveries.failed[seq] = err.str()

    def _run(self) -> None:
        try:
            producer = Producer(self.config)
            started = time.monotonic()
            for seq in range(self.count):
                due = started + seq / self.rate
                while (wait := due - time.monotonic()) > 0:
                    producer.poll(min(wait, 0.05))
                self._produce(producer, seq)
            self.sent.set()
            remaining = producer.flush(180)
            assert remaining == 0, f"{remaining} records never got a delivery report"
        except BaseException as exc:  # reported by finish()
            self._error = exc

    def _produce(self, producer: Producer, seq: int) -> None:
        while True:
            try:
                producer.produce(
                    self.topic,
                    key=b"k%d" % (seq % 64),
                    value=b"%d" % seq,
                    on_delivery=self._on_delivery,
                )
                return
            except BufferError:  # the local queue is full while the cluster is away
                producer.poll(0.1)


def check_log(direct: Endpoint, topic: str, partitions: int, deliveries: Deliveries) -> None:
    """The topic, read straight from Kafka, holds what the producer is owed."""
    marks = _settled_watermarks(direct, topic, partitions)
    total = sum(high - low for low, high in marks.values())
    records = consume("confluent", direct, topic, partitions, total, timeout=120)
    assert len(records) == total, f"read {len(records)} of {total} records back"
    seqs = [int(r.value) for r in records]
    duplicates = [s for s, n in Counter(seqs).items() if n > 1]
    assert not duplicates, f"{len(duplicates)} records written twice, e.g. {duplicates[:5]}"
    where = {int(r.value): (r.partition, r.offset) for r in records}
    lost = [s for s in deliveries.acked if s not in where]
    assert not lost, f"{len(lost)} acknowledged records are missing, e.g. {sorted(lost)[:5]}"
    moved = [s for s, at in deliveries.acked.items() if where[s] != at]
    assert not moved, f"{len(moved)} records are not where they were acknowledged"
    for partition, in_order in _by_partition(records):
        assert in_order == sorted(in_order), f"partition {partition} is out of send order"


def check_group(
    direct: Endpoint, topic: str, partitions: int, group: str, consumed: list[Record]
) -> None:
    """``consumed`` (in arrival order) holds every record of the topic, each partition
    in log order (a record read again after a rebalance is allowed, a gap or a step
    back to an unread offset is not), and ``group`` committed the end of every
    partition."""
    marks = _settled_watermarks(direct, topic, partitions)
    for partition, (low, high) in marks.items():
        first_seen = list(dict.fromkeys(r.offset for r in consumed if r.partition == partition))
        assert first_seen == list(range(low, high)), (
            f"partition {partition}: the group read {len(first_seen)} of {high - low} "
            f"records, or out of order"
        )
    committed = committed_offsets(direct, group, topic, partitions)
    ends = {partition: high for partition, (_, high) in marks.items()}
    assert committed == ends, f"committed {committed}, the partitions end at {ends}"


def consumed_all(direct: Endpoint, topic: str, partitions: int) -> Callable[[list[Record]], bool]:
    """A predicate: the records read so far cover the whole topic as it is now."""
    marks = _settled_watermarks(direct, topic, partitions)
    wanted = sum(high - low for low, high in marks.values())
    return lambda records: len({(r.partition, r.offset) for r in records}) >= wanted


def _settled_watermarks(
    direct: Endpoint, topic: str, partitions: int, limit: float = 60
) -> dict[int, tuple[int, int]]:
    """Watermarks once every partition has a leader again (after a restart it takes
    the cluster a moment to elect them)."""
    deadline = time.monotonic() + limit
    while True:
        try:
            return watermarks(direct, topic, partitions)
        except ClientError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _by_partition(records: list[Record]) -> Iterator[tuple[int, list[int]]]:
    for partition in sorted({r.partition for r in records}):
        yield partition, [int(r.value) for r in records if r.partition == partition]


def readiness(admin_url: str) -> tuple[int, str]:
    """``/readyz``'s status code and the cluster state it reports (up, degraded, down)."""
    try:
        with urllib.request.urlopen(f"{admin_url}/readyz", timeout=10) as response:  # noqa: S310
            status, body = int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    return status, str(json.loads(body)["state"])


async def wait_state(admin_url: str, wanted: str, limit: float = 120) -> float:
    """Seconds until ``/readyz`` reports the cluster ``wanted``; fails after ``limit``."""
    started = time.monotonic()
    while (await asyncio.to_thread(readiness, admin_url))[1] != wanted:
        assert time.monotonic() - started < limit, f"/readyz never reported {wanted}"
        await asyncio.sleep(0.2)
    return time.monotonic() - started


def readyz(admin_url: str) -> tuple[int, float]:
    """``/readyz``'s status code and how long it took to answer."""
    started = time.monotonic()
    try:
        # A /readyz that blocks fails the test; how fast it answers is reported.
        with urllib.request.urlopen(f"{admin_url}/readyz", timeout=10) as response:  # noqa: S310
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    return status, time.monotonic() - started


async def wait_ready(admin_url: str, limit: float = 120) -> float:
    """Seconds until ``/readyz`` answers 200; fails after ``limit`` seconds."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        status, _ = await asyncio.to_thread(readyz, admin_url)
        if status == 200:
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    raise AssertionError(f"the gateway was not ready within {limit}s")


def metric(admin_url: str, name: str, **labels: str) -> float:
    """One sample of the gateway's ``/metrics`` (0 when it has none yet)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{admin_url}/metrics", timeout=10) as response:  # noqa: S310
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def ametric(admin_url: str, name: str, **labels: str) -> float:
    """:func:`metric` from a worker thread (the gateway under test shares the loop)."""
    return await asyncio.to_thread(lambda: metric(admin_url, name, **labels))


def timings(name: str, **figures: float) -> None:
    """Measured times, for the record (printed, and kept in ``$FAULT_TIMINGS`` if set)."""
    line = f"{name}: " + ", ".join(f"{k}={v:.2f}s" for k, v in figures.items())
    print(line)
    target = os.environ.get("FAULT_TIMINGS")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(line + "\n")


class Progress:
    """Samples ``count()`` every ``every`` seconds in the background and keeps the
    times at which it changed, to measure how long a fault held it still."""

    def __init__(self, count: Callable[[], int], every: float = 0.1) -> None:
        self._count, self._every = count, every
        self.changes: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._sample())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _sample(self) -> None:
        last = self._count()
        while True:
            await asyncio.sleep(self._every)
            now = self._count()
            if now != last:
                self.changes.append(time.monotonic())
                last = now

    def longest_stall(self, since: float) -> float:
        """The longest time without a change that ended after ``since``."""
        times = [since, *(t for t in self.changes if t > since)]
        earlier = [t for t in self.changes if t <= since]
        if earlier:
            times[0] = earlier[-1]
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)

    def resumed_after(self, since: float) -> float:
        """Seconds from ``since`` to the first change after it (inf if none yet)."""
        later = [t for t in self.changes if t > since]
        return later[0] - since if later else float("inf")


def restore_primary() -> None:
    """Every primary node running, none paused, each on its home address, whatever a
    test did to them (for fixtures: tests share the cluster)."""
    current = dev.nodes("primary")
    (primary,) = [
        c for c in layouts(resolve_run_dir(None), {"primary": len(current)}) if c.name == "primary"
    ]
    for node in current:
        if node.state == "paused":
            dev.resume_node("primary", node.node_id)
        elif node.pid is None:
            dev.start_node("primary", node.node_id)
    for node in dev.nodes("primary"):
        if node.port != primary.node(node.node_id).port:
            dev.restart_node("primary", node.node_id, new_address=True)
