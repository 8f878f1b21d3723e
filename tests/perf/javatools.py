"""Kafka's own load tools (``org.apache.kafka.tools``) and parsers for their summaries."""

from __future__ import annotations

import re
import subprocess
import uuid

from gateway import dev
from tests.perf.targets import BenchError, Target

PRODUCER_PERF = "org.apache.kafka.tools.ProducerPerformance"
CONSUMER_PERF = "org.apache.kafka.tools.ConsumerPerformance"

RECORD_SIZE = 1024
PRODUCER_PROPS = ("acks=all", "linger.ms=5", "batch.size=65536")
TOOL_TIMEOUT_S = 1800.0

# "500000 records sent, 61050.1 records/sec (59.62 MB/sec), 390.21 ms avg latency,
#  702.00 ms max latency, 397 ms 50th, 535 ms 95th, 577 ms 99th, 672 ms 99.9th."
_PRODUCER_SUMMARY = re.compile(
    r"(?P<records>\d+) records sent, (?P<rps>[\d.]+) records/sec \((?P<mbps>[\d.]+) MB/sec\), "
    r"(?P<avg>[\d.]+) ms avg latency, (?P<max>[\d.]+) ms max latency, (?P<p50>\d+) ms 50th, "
    r"(?P<p95>\d+) ms 95th, (?P<p99>\d+) ms 99th, (?P<p999>\d+) ms 99.9th"
)
_CONSUMER_HEADER = "start.time, end.time, data.consumed.in.MB"


def _run(cmd: list[str], what: str, timeout: float) -> str:
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what} did not finish within {timeout:.0f}s") from None
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-12:])
        raise BenchError(f"{what} exited with {result.returncode}: {tail}")
    return result.stdout


def parse_producer_summary(stdout: str) -> dict[str, float]:
    """Numbers of ProducerPerformance's final line (MB are MiB, as the tool counts)."""
    matches = list(_PRODUCER_SUMMARY.finditer(stdout))
    if not matches:
        raise BenchError(f"no ProducerPerformance summary in: {stdout.strip()[-500:]!r}")
    m = matches[-1]
    return {
        "records": float(m["records"]),
        "records_per_s": float(m["rps"]),
        "mb_per_s": float(m["mbps"]),
        "lat_avg_ms": float(m["avg"]),
        "lat_max_ms": float(m["max"]),
        "lat_p50_ms": float(m["p50"]),
        "lat_p95_ms": float(m["p95"]),
        "lat_p99_ms": float(m["p99"]),
        "lat_p999_ms": float(m["p999"]),
    }


def parse_consumer_summary(stdout: str) -> dict[str, float]:
    """ConsumerPerformance's CSV summary (header line, then one line of values)."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    for i, line in enumerate(lines[:-1]):
        if line.startswith(_CONSUMER_HEADER):
            names = [name.strip() for name in line.split(",")]
            values = [value.strip() for value in lines[i + 1].split(",")]
            row = dict(zip(names, values, strict=False))
            try:
                return {
                    "mb": float(row["data.consumed.in.MB"]),
                    "mb_per_s": float(row["MB.sec"]),
                    "records": float(row["data.consumed.in.nMsg"]),
                    "records_per_s": float(row["nMsg.sec"]),
                    "rebalance_ms": float(row["rebalance.time.ms"]),
                    "fetch_ms": float(row["fetch.time.ms"]),
                    "fetch_mb_per_s": float(row["fetch.MB.sec"]),
                    "fetch_records_per_s": float(row["fetch.nMsg.sec"]),
                }
            except (KeyError, ValueError) as err:
                raise BenchError(f"unreadable ConsumerPerformance summary {row}: {err}") from None
    raise BenchError(f"no ConsumerPerformance summary in: {stdout.strip()[-500:]!r}")


def producer_command(target: Target, topic: str, records: int) -> list[str]:
    args = ["--topic", topic, "--num-records", str(records), "--record-size", str(RECORD_SIZE)]
    args += ["--throughput", "-1"]
    if target.client_config is not None:
        args += ["--producer.config", target.client_config]
    args += ["--producer-props", *PRODUCER_PROPS, f"bootstrap.servers={target.bootstrap}"]
    return dev.java_tool_command(PRODUCER_PERF, *args)


def consumer_command(target: Target, topic: str, records: int) -> list[str]:
    args = ["--bootstrap-server", target.bootstrap, "--topic", topic]
    args += ["--messages", str(records), "--group", f"bench-{uuid.uuid4().hex[:12]}"]
    if target.client_config is not None:
        args += ["--consumer.config", target.client_config]
    return dev.java_tool_command(CONSUMER_PERF, *args)


def run_producer(target: Target, topic: str, records: int) -> dict[str, float]:
    out = _run(producer_command(target, topic, records), "ProducerPerformance", TOOL_TIMEOUT_S)
    summary = parse_producer_summary(out)
    if summary["records"] < records:
        raise BenchError(f"only {summary['records']:.0f} of {records} records acknowledged")
    return summary


def run_consumer(target: Target, topic: str, records: int) -> dict[str, float]:
    out = _run(consumer_command(target, topic, records), "ConsumerPerformance", TOOL_TIMEOUT_S)
    summary = parse_consumer_summary(out)
    if summary["records"] < records:
        raise BenchError(f"consumed only {summary['records']:.0f} of {records} records")
    return summary


def java_version() -> str:
    result = subprocess.run(
        [dev.java_executable(), "-version"], capture_output=True, text=True, check=False
    )
    lines = (result.stderr or result.stdout).strip().splitlines()
    return lines[0] if lines else "unknown"
