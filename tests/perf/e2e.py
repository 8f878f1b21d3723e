"""End-to-end latency at a fixed rate, with librdkafka (confluent-kafka).

A producer process sends ``rate`` messages/s (token bucket) whose value starts with a
sequence number and the send time (CLOCK_MONOTONIC, shared by all processes of the
machine); a consumer process (assign mode, fetch.wait.max.ms small) computes receive
time minus send time. The topic is fresh and empty, so assigning offset 0 is the same as
starting at the latest offset, without the race of resolving "latest" after sends begin.
Producer and consumer are separate processes so that neither's GIL delays the other.
Messages sent during the first ``warmup_s`` are not counted.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.process
import multiprocessing.synchronize
import queue
import struct
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from tests.perf.targets import BenchError

MIB = 1024 * 1024
_HEADER = struct.Struct("<QqB")  # sequence, send time ns, warm-up flag
PRODUCER_CONF = {"acks": "all", "linger.ms": "1", "enable.idempotence": "false"}
CONSUMER_CONF = {"fetch.wait.max.ms": "5", "fetch.min.bytes": "1", "enable.auto.commit": "false"}
READY_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 15.0


def _now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (``fraction`` in 0..1)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(fraction * len(sorted_values) + 0.999999)))
    return sorted_values[rank - 1]


@dataclass(frozen=True)
class ProbeSpec:
    topic: str
    partitions: int
    rate: float
    duration_s: float
    warmup_s: float
    record_size: int


def _consumer_main(
    conf: dict[str, str],
    spec: ProbeSpec,
    ready: multiprocessing.synchronize.Event,
    producer_done: multiprocessing.synchronize.Event,
    expected: Any,  # multiprocessing.Value('q'): messages sent, known once producer_done
    results: multiprocessing.Queue[dict[str, float]],
) -> None:
    consumer = Consumer({**conf, **CONSUMER_CONF, "group.id": f"bench-e2e-{spec.topic}"})
    consumer.assign([TopicPartition(spec.topic, p, 0) for p in range(spec.partitions)])
    # Connect and start fetching before the producer starts, so that the measured
    # messages do not pay for connection setup (the warm-up period covers the rest).
    consumer.list_topics(spec.topic, timeout=READY_TIMEOUT_S)
    settle_until = time.monotonic() + 1.0
    while time.monotonic() < settle_until:
        consumer.poll(0.05)
    ready.set()
    latencies: list[float] = []
    received = errors = 0
    drain_deadline: float | None = None
    while True:
        # poll, not consume(n, timeout): a batch call waits for n messages or the timeout,
        # which would add up to that timeout to every measured latency.
        msg = consumer.poll(0.05)
        now = _now_ns()
        if msg is not None and msg.error() is not None:
            errors += 1
        elif msg is not None and (value := msg.value()) is not None:
            received += 1
            _, sent_ns, warm = _HEADER.unpack_from(value)
            if not warm:
                latencies.append((now - sent_ns) / 1e6)
        if producer_done.is_set():
            if drain_deadline is None:
                drain_deadline = time.monotonic() + DRAIN_TIMEOUT_S
            if received >= expected.value or time.monotonic() > drain_deadline:
                break
    consumer.close()
    latencies.sort()
    results.put(
        {
            "received": float(received),
            "measured": float(len(latencies)),
            "consume_errors": float(errors),
            "lat_p50_ms": percentile(latencies, 0.50),
            "lat_p99_ms": percentile(latencies, 0.99),
            "lat_p999_ms": percentile(latencies, 0.999),
            "lat_max_ms": latencies[-1] if latencies else float("nan"),
            "lat_avg_ms": sum(latencies) / len(latencies) if latencies else float("nan"),
        }
    )


def _producer_main(
    conf: dict[str, str],
    spec: ProbeSpec,
    ready: multiprocessing.synchronize.Event,
    producer_done: multiprocessing.synchronize.Event,
    expected: Any,
    results: multiprocessing.Queue[dict[str, float]],
) -> None:
    producer = Producer({**conf, **PRODUCER_CONF})
    producer.list_topics(spec.topic, timeout=10)  # connect and learn leaders before timing
    failed = 0

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        nonlocal failed
        if err is not None:
            failed += 1

    padding = b"x" * (spec.record_size - _HEADER.size)
    ready.wait(READY_TIMEOUT_S + 5)
    start = _now_ns()
    total_ns = int((spec.warmup_s + spec.duration_s) * 1e9)
    warm_ns = int(spec.warmup_s * 1e9)
    period_ns = 1e9 / spec.rate
    sent = 0
    while True:
        now = _now_ns()
        elapsed = now - start
        if elapsed >= total_ns:
            break
        due = int(elapsed / period_ns) + 1  # token bucket, burst of one period
        while sent < due:
            now = _now_ns()
            value = _HEADER.pack(sent, now, now - start < warm_ns) + padding
            try:
                producer.produce(spec.topic, value, on_delivery=on_delivery)
            except BufferError:
                producer.poll(0.001)
                continue
            sent += 1
        producer.poll(0)
        wait_ns = sent * period_ns - (_now_ns() - start)
        if wait_ns > 0:
            time.sleep(wait_ns / 1e9)
    send_s = (_now_ns() - start) / 1e9
    remaining = producer.flush(30)
    expected.value = sent
    producer_done.set()
    measured_s = send_s - spec.warmup_s
    sent_measured = sent - int(spec.warmup_s * spec.rate)
    results.put(
        {
            "sent": float(sent),
            "delivery_failed": float(failed + remaining),
            "records_per_s": sent_measured / measured_s if measured_s > 0 else float("nan"),
        }
    )


def _wait_report(
    results: multiprocessing.Queue[dict[str, float]],
    proc: multiprocessing.process.BaseProcess,
    name: str,
    timeout: float,
) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return results.get(timeout=0.5)
        except queue.Empty:
            if proc.exitcode is not None:
                raise BenchError(f"latency probe {name} exited ({proc.exitcode})") from None
    raise BenchError(f"latency probe {name} did not report within {timeout:.0f}s")


def run_probe(conf: dict[str, str], spec: ProbeSpec) -> dict[str, float]:
    """Run producer and consumer processes; returns latency percentiles and rates."""
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    producer_done = ctx.Event()
    expected = ctx.Value("q", 1 << 62)
    consumer_q: multiprocessing.Queue[dict[str, float]] = ctx.Queue()
    producer_q: multiprocessing.Queue[dict[str, float]] = ctx.Queue()
    common = (spec, ready, producer_done, expected)
    consumer = ctx.Process(target=_consumer_main, args=(conf, *common, consumer_q))
    producer = ctx.Process(target=_producer_main, args=(conf, *common, producer_q))
    consumer.start()
    producer.start()
    budget = READY_TIMEOUT_S + spec.warmup_s + spec.duration_s + DRAIN_TIMEOUT_S + 60
    try:
        prod = _wait_report(producer_q, producer, "producer", budget)
        cons = _wait_report(consumer_q, consumer, "consumer", DRAIN_TIMEOUT_S + 30)
    finally:
        for proc in (producer, consumer):
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
    result = {**prod, **cons}
    result["mb_per_s"] = result["records_per_s"] * spec.record_size / MIB
    result["lost"] = max(0.0, result["sent"] - result["received"])
    if result["measured"] == 0:
        raise BenchError(f"latency probe measured nothing: {result}")
    return result
