"""``make bench``: the same workloads directly against the primary dev cluster and through
the gateway, alternating, in one run; prints one table and writes a JSON file.

Workloads (each on a fresh 3-partition topic per round):

* ``produce``  Kafka's ProducerPerformance, 1 KiB records, acks=all, linger.ms=5,
  batch.size=65536, unthrottled;
* ``consume``  Kafka's ConsumerPerformance reading the records ``produce`` wrote;
* ``masked``   ConsumerPerformance reading 1 KiB Avro records of 12 fields (written
  straight to the primary first, not measured), 3 of which the policy and audit paths
  mask for the bench listener: their ``gw/dir`` is masked consume / direct consume;
* ``e2e``      a librdkafka probe: one process produces at a fixed rate (default 5,000
  msg/s of 1 KiB), another consumes and measures send-to-receive latency;
* ``idle``     ``produce`` again while 500 idle client connections (each has done an
  ApiVersions exchange) are held open to the same endpoint.

Direct means the broker's SASL_PLAINTEXT SCRAM-SHA-256 listener with the dev admin user;
gateway means a ``python -m gateway run`` subprocess (plaintext listener, no client
authentication, log level warning) started afresh for each workload run, so that its
CPU seconds and peak RSS (psutil, sampled every 100 ms) belong to that workload alone;
gateway-policy is the same gateway with a policy loaded (the repository's ``policies/``
plus a grant for the bench listener's ``bench-`` topics and groups), so every request
is authorized; a run in which that policy refused anything fails, since refused work
is cheaper. gateway-audit is the policy gateway with the audit log on as a regulated
deployment runs it (metadata events, no payload capture, each response released after
its event is fsynced by group commit, fail closed); a run in which it wrote fewer
events than it answered requests fails. The report shows each gateway path's ratio to
direct, the policy path's ratio to the gateway without policy, and the audit path's
ratio and added latency against the policy path (audit off) in the same run.
``--soak SECONDS`` also repeats the idle workload through one gateway for that long and
samples its RSS every second. Nothing here asserts a timing: it is a report.

    python -m tests.perf.bench [--quick] [--rounds N] [--records N] [--soak 300]
    python -m tests.perf.bench --compare A.json B.json   (a path or workload one file
                                                           lacks is shown as missing)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import confluent_kafka
import psutil
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from gateway import dev
from gateway.dev import mirror as dev_mirror
from tests.perf import e2e, javatools
from tests.perf import masked as masked_data
from tests.perf.idle import IdleConnections
from tests.perf.procmon import (
    MIB,
    ProcessMonitor,
    children_cpu_seconds,
    cpu_seconds,
    system_busy_seconds,
)
from tests.perf.report import (
    WORKLOADS,
    Metrics,
    RunResult,
    compare_table,
    describe,
    median_metrics,
    results_table,
    summarize,
)
from tests.perf.targets import (
    DIRECT,
    GATEWAY,
    GATEWAY_AUDIT,
    PATHS,
    REPO_ROOT,
    BenchError,
    GatewayProcess,
    Target,
    bench_audit_dir,
    bench_policy_dir,
    direct_target,
)

PARTITIONS = 3
DEFAULT_ROUNDS = 3
DEFAULT_RECORDS = 500_000
QUICK_RECORDS = 50_000
DEFAULT_E2E_SECONDS = 20.0
QUICK_E2E_SECONDS = 5.0
E2E_WARMUP_S = 2.0
DEFAULT_E2E_RATE = 5_000.0
DEFAULT_IDLE = 500
GATEWAY_SETTLE_S = 1.0
IDLE_SETTLE_S = 1.0
TOPIC_TIMEOUT_S = 30.0

_T0 = time.monotonic()


def progress(message: str) -> None:
    elapsed = int(time.monotonic() - _T0)
    print(f"[bench {elapsed // 60:3d}:{elapsed % 60:02d}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Settings:
    rounds: int
    records: int
    quick: bool
    workloads: tuple[str, ...]
    partitions: int
    e2e_rate: float
    e2e_seconds: float
    e2e_warmup_s: float
    idle_connections: int
    soak_s: float
    warmup_records: int
    record_size: int = javatools.RECORD_SIZE
    producer_props: tuple[str, ...] = javatools.PRODUCER_PROPS
    e2e_producer: str = " ".join(f"{k}={v}" for k, v in e2e.PRODUCER_CONF.items())
    e2e_consumer: str = " ".join(f"{k}={v}" for k, v in e2e.CONSUMER_CONF.items())

    @property
    def gateway_idle_timeout_s(self) -> float:
        return max(600.0, self.soak_s + 300.0)


# --------------------------------------------------------------------------- the run


class PolicyDenied(BenchError):
    """The policy path refused requests, or decided none: it did not do the others' work."""


def check_policy_path(gateway: GatewayProcess) -> None:
    """Fail a run on the policy path whose policy refused anything (refused work is
    cheaper, so its figures would flatter it) or decided nothing (no policy in force)."""
    # Metadata's denials count the topics an all-topics answer hid, which is no refusal.
    refused = {api: n for api, n in gateway.denials().items() if api != "Metadata" and n}
    if refused:
        detail = ", ".join(f"{api} {n:.0f}" for api, n in sorted(refused.items()))
        # A topic id the gateway cannot name yet (a Fetch right after the topic was
        # created) is refused UNKNOWN_TOPIC_ID and counted as a deny as well.
        raise PolicyDenied(
            f"the policy refused bench requests ({detail}): a grant BENCH_POLICY lacks, "
            "or a topic id the gateway could not yet name"
        )
    if not sum(gateway.allowed().values()):
        raise PolicyDenied("the policy path decided nothing: no policy in force")


def check_audit_path(requests: float, events: float) -> None:
    """Fail a run on the audit path whose requests did not all get their event (each
    answered request has one; connections and logins add more)."""
    if events < requests:
        raise BenchError(f"the audit path wrote {events:.0f} events for {requests:.0f} requests")


class Bench:
    """Runs every workload on every path, round after round, and keeps the results."""

    def __init__(self, settings: Settings, primary: dev.ClusterInfo, workdir: Path) -> None:
        assert primary.pid is not None
        self.settings = settings
        self.primary = primary
        self.workdir = workdir
        self.direct = direct_target(primary)
        # log_level 4: no notice per deleted topic ("partition count changed from 3 to 0").
        self.admin = AdminClient({**self.direct.rdkafka_conf(), "log_level": 4})
        self.broker = psutil.Process(primary.pid)
        self.me = psutil.Process()
        self.run_id = uuid.uuid4().hex[:6]
        self.results: list[RunResult] = []
        self.soak: dict[str, Any] | None = None
        self._topics: set[str] = set()
        self._produced: dict[tuple[str, int], str] = {}
        self._round = 0

    # ---- topics

    def new_topic(self, workload: str, path: str, rnd: int) -> str:
        name = f"bench-{self.run_id}-{workload}-{path}-r{rnd}"
        futures = self.admin.create_topics([NewTopic(name, self.settings.partitions, 1)])
        futures[name].result(TOPIC_TIMEOUT_S)
        self._topics.add(name)
        deadline = time.monotonic() + TOPIC_TIMEOUT_S
        while time.monotonic() < deadline:
            meta = self.admin.list_topics(name, timeout=10).topics.get(name)
            partitions = meta.partitions if meta is not None and meta.error is None else {}
            if len(partitions) == PARTITIONS and all(p.leader >= 0 for p in partitions.values()):
                return name
            time.sleep(0.1)
        raise BenchError(f"topic {name} has no leaders after {TOPIC_TIMEOUT_S:.0f}s")

    def delete_topics(self, *names: str) -> None:
        names = tuple(n for n in names if n in self._topics)
        if not names:
            return
        for name, future in self.admin.delete_topics(list(names)).items():
            try:
                future.result(TOPIC_TIMEOUT_S)
            except KafkaException as err:
                progress(f"could not delete topic {name}: {err}")
            self._topics.discard(name)

    def cleanup(self) -> None:
        self.delete_topics(*sorted(self._topics))

    # ---- paths and measurement

    @contextlib.contextmanager
    def on_path(self, path: str) -> Iterator[tuple[Target, GatewayProcess | None]]:
        if path == DIRECT:
            yield self.direct, None
            return
        policy = bench_policy_dir(self.workdir) if path != GATEWAY else None
        audit = bench_audit_dir(self.workdir) if path == GATEWAY_AUDIT else None
        gateway = GatewayProcess(
            self.primary, self.workdir, self.settings.gateway_idle_timeout_s, policy, audit
        )
        gateway.start()
        try:
            time.sleep(GATEWAY_SETTLE_S)
            yield gateway.target, gateway
            gateway.check_alive()
            if policy is not None:
                check_policy_path(gateway)
        finally:
            gateway.stop()

    def measure(self, gateway: GatewayProcess | None, action: Callable[[], Metrics]) -> Metrics:
        """Run ``action`` and add wall time, CPU seconds and the gateway's RSS to its metrics."""
        monitor = ProcessMonitor(gateway.pid) if gateway is not None else None
        requests0 = gateway.request_counts() if gateway is not None else {}
        allowed0 = sum(gateway.allowed().values()) if gateway is not None else 0.0
        warnings0 = gateway.warnings_logged() if gateway is not None else 0
        audited = gateway is not None and gateway.audit_dir is not None
        events0 = gateway.audit_events() if gateway is not None and audited else 0.0
        policed = gateway is not None and gateway.policy_dir is not None
        masked0 = gateway.masked_records() if gateway is not None and policed else 0.0
        refused0 = gateway.masking_failures() if gateway is not None and policed else 0.0
        broker0, children0 = cpu_seconds(self.broker), children_cpu_seconds()
        self0, system0 = cpu_seconds(self.me), system_busy_seconds()
        if monitor is not None:
            monitor.start()
        started = time.monotonic()
        try:
            metrics = dict(action())
        finally:
            sample = monitor.stop() if monitor is not None else None
        metrics["wall_s"] = time.monotonic() - started
        metrics["system_cpu_s"] = system_busy_seconds() - system0
        metrics["broker_cpu_s"] = cpu_seconds(self.broker) - broker0
        metrics["client_cpu_s"] = children_cpu_seconds() - children0
        metrics["bench_cpu_s"] = cpu_seconds(self.me) - self0
        ours = metrics["broker_cpu_s"] + metrics["client_cpu_s"] + metrics["bench_cpu_s"]
        if gateway is not None and sample is not None:
            gateway.check_alive()
            ours += sample.cpu_s
            metrics["gw_cpu_s"] = sample.cpu_s
            metrics["gw_rss_start_mb"] = sample.rss_start_mb
            metrics["gw_rss_peak_mb"] = sample.rss_peak_mb
            metrics["gw_rss_end_mb"] = sample.rss_end_mb
            # Every gateway of the run appends to one log file: count this one's lines.
            metrics["gw_warnings"] = float(gateway.warnings_logged() - warnings0)
            if gateway.policy_dir is not None:
                metrics["gw_policy_allowed"] = sum(gateway.allowed().values()) - allowed0
            requests = gateway.request_counts()
            handled = {api: n - requests0.get(api, 0.0) for api, n in requests.items()}
            metrics["gw_requests"] = sum(handled.values())
            for api in ("Produce", "Fetch"):
                metrics[f"gw_requests_{api.lower()}"] = handled.get(api, 0.0)
            if metrics["gw_requests"]:
                metrics["gw_cpu_us_per_request"] = sample.cpu_s / metrics["gw_requests"] * 1e6
            if audited:
                metrics["gw_audit_events"] = gateway.audit_events() - events0
                check_audit_path(metrics["gw_requests"], metrics["gw_audit_events"])
            if policed:
                metrics["gw_masked_records"] = gateway.masked_records() - masked0
                if gateway.masking_failures() > refused0:
                    raise BenchError("the gateway refused partitions it could not mask")
        # CPU that neither the broker, the load tools, this harness nor the gateway used
        # (other processes on the machine; the secondary dev broker): noise if large.
        metrics["other_cpu_s"] = max(0.0, metrics["system_cpu_s"] - ours)
        return metrics

    def run(
        self,
        workload: str,
        path: str,
        body: Callable[[RunResult, Target, GatewayProcess | None], Metrics],
    ) -> RunResult:
        rnd = self._round
        result = RunResult(workload, path, rnd)
        where = f"round {rnd}/{self.settings.rounds} {workload:7} {path:7}"
        progress(f"{where} running")
        try:
            with self.on_path(path) as (target, gateway):
                result.metrics = body(result, target, gateway)
        except (BenchError, KafkaException, OSError, psutil.Error) as err:
            result.ok, result.error = False, f"{type(err).__name__}: {err}"
        self.results.append(result)
        progress(f"{where} {_progress_numbers(result)}")
        return result

    # ---- workloads

    def produce(self, result: RunResult, target: Target, gw: GatewayProcess | None) -> Metrics:
        topic = result.topic = self.new_topic("produce", target.path, result.round)
        self._produced[(target.path, result.round)] = topic
        records = self.settings.records
        metrics = self.measure(gw, lambda: javatools.run_producer(target, topic, records))
        if "consume" not in self.settings.workloads:
            self.delete_topics(topic)
        return metrics

    def consume(self, result: RunResult, target: Target, gw: GatewayProcess | None) -> Metrics:
        topic = self._produced.pop((target.path, result.round), None)
        if topic is None:
            raise BenchError("the produce run of this round failed: nothing to consume")
        result.topic = topic
        try:
            records = self.settings.records
            return self.measure(gw, lambda: javatools.run_consumer(target, topic, records))
        finally:
            self.delete_topics(topic)

    def masked(self, result: RunResult, target: Target, gw: GatewayProcess | None) -> Metrics:
        topic = result.topic = self.new_topic("masked", target.path, result.round)
        records = self.settings.records
        try:
            # Written straight to the primary, not measured; then read on this path.
            masked_data.produce(
                self.direct.rdkafka_conf(), topic, records, self.settings.partitions
            )
            return self.measure(gw, lambda: javatools.run_consumer(target, topic, records))
        finally:
            self.delete_topics(topic)

    def e2e(self, result: RunResult, target: Target, gw: GatewayProcess | None) -> Metrics:
        topic = result.topic = self.new_topic("e2e", target.path, result.round)
        s = self.settings
        spec = e2e.ProbeSpec(
            topic, s.partitions, s.e2e_rate, s.e2e_seconds, s.e2e_warmup_s, s.record_size
        )
        try:
            return self.measure(gw, lambda: e2e.run_probe(target.rdkafka_conf(), spec))
        finally:
            self.delete_topics(topic)

    def idle(self, result: RunResult, target: Target, gw: GatewayProcess | None) -> Metrics:
        topic = result.topic = self.new_topic("idle", target.path, result.round)
        peer = psutil.Process(gw.pid) if gw is not None else self.broker
        host, port = target.host_port
        count = self.settings.idle_connections
        try:
            before = _rss_and_fds(peer)
            with IdleConnections(host, port, count) as conns:
                time.sleep(IDLE_SETTLE_S)
                after = _rss_and_fds(peer)
                records = self.settings.records
                metrics = self.measure(gw, lambda: javatools.run_producer(target, topic, records))
                metrics["idle_still_open"] = float(conns.still_open())
        finally:
            self.delete_topics(topic)
        metrics["idle_connections"] = float(count)
        metrics["idle_rss_before_mb"], metrics["idle_fds_before"] = before
        metrics["idle_rss_after_mb"], metrics["idle_fds_after"] = after
        metrics["idle_kb_per_conn"] = (after[0] - before[0]) * 1024 / count
        if metrics["idle_still_open"] < count:
            raise BenchError(f"only {metrics['idle_still_open']:.0f} of {count} idle conns open")
        return metrics

    # ---- the whole run

    def warm_up(self) -> None:
        """A short unrecorded produce on each path (JIT, page cache, connections)."""
        for path in PATHS:
            progress(f"warm-up produce {self.settings.warmup_records:,} records {path}")
            try:
                with self.on_path(path) as (target, _):
                    topic = self.new_topic("warmup", path, 0)
                    try:
                        javatools.run_producer(target, topic, self.settings.warmup_records)
                    finally:
                        self.delete_topics(topic)
            except (BenchError, KafkaException, OSError) as err:
                progress(f"warm-up on {path} failed: {err}")

    def run_rounds(self) -> None:
        bodies = {"produce": self.produce, "consume": self.consume, "e2e": self.e2e}
        bodies["masked"] = self.masked
        bodies["idle"] = self.idle
        for rnd in range(1, self.settings.rounds + 1):
            self._round = rnd
            # Alternate which path goes first, so slow drift does not favour one path.
            order = PATHS if rnd % 2 == 1 else tuple(reversed(PATHS))
            for workload in self.settings.workloads:
                for path in order:
                    self.run(workload, path, bodies[workload])

    def run_soak(self) -> None:
        s = self.settings
        progress(f"soak: produce {s.records:,} records repeatedly for {s.soak_s:.0f}s")
        runs: list[RunResult] = []
        errors: list[str] = []
        rss_after_first: float | None = None
        with self.on_path(GATEWAY) as (target, gw):
            assert gw is not None
            peer = psutil.Process(gw.pid)
            before = _rss_and_fds(peer)
            host, port = target.host_port
            with IdleConnections(host, port, s.idle_connections) as conns:
                time.sleep(IDLE_SETTLE_S)
                monitor = ProcessMonitor(gw.pid, interval=1.0, keep_series=True)
                broker0 = cpu_seconds(self.broker)
                monitor.start()
                started = time.monotonic()
                while time.monotonic() - started < s.soak_s:
                    run = RunResult("soak", GATEWAY, len(runs) + len(errors) + 1)
                    try:
                        run.topic = self.new_topic("soak", GATEWAY, run.round)
                        try:
                            run.metrics = javatools.run_producer(target, run.topic, s.records)
                        finally:
                            self.delete_topics(run.topic)
                        runs.append(run)
                    except (BenchError, KafkaException) as err:
                        errors.append(f"{type(err).__name__}: {err}")
                        run.ok, run.error = False, errors[-1]
                    gw.check_alive()
                    rss = float(peer.memory_info().rss) / MIB
                    rss_after_first = rss if rss_after_first is None else rss_after_first
                    progress(
                        f"soak run {run.round} at {time.monotonic() - started:.0f}s: "
                        f"{_progress_numbers(run)}; gateway RSS {rss:.1f} MiB"
                    )
                elapsed = time.monotonic() - started
                sample = monitor.stop()
                still_open = conns.still_open()
        series = sample.series
        self.soak = {
            "seconds": s.soak_s,
            "elapsed_s": elapsed,
            "iterations": len(runs) + len(errors),
            "rss_before_idle_mb": before[0],
            "rss_first_mb": series[0][1],
            "rss_after_first_run_mb": rss_after_first,
            "rss_last_mb": series[-1][1],
            "rss_max_mb": max(rss for _, rss in series),
            "rss_series": series,
            "gw_cpu_s": sample.cpu_s,
            "broker_cpu_s": cpu_seconds(self.broker) - broker0,
            "idle_still_open": still_open,
            "medians": median_metrics(runs),
            "runs": [run.to_json() for run in runs],
            "errors": errors,
        }


def _rss_and_fds(proc: psutil.Process) -> tuple[float, float]:
    return float(proc.memory_info().rss) / MIB, float(proc.num_fds())


def _progress_numbers(result: RunResult) -> str:
    if not result.ok:
        return f"FAILED: {result.error}"
    m = result.metrics
    parts = [f"{m.get('records_per_s', 0):,.0f} rec/s", f"{m.get('mb_per_s', 0):.1f} MiB/s"]
    if "lat_p99_ms" in m:
        parts.append(f"p50 {m['lat_p50_ms']:.1f} p99 {m['lat_p99_ms']:.1f} ms")
    if "gw_cpu_s" in m:
        parts.append(f"gw CPU {m['gw_cpu_s']:.1f}s peak {m['gw_rss_peak_mb']:.0f} MiB")
    if "wall_s" in m:
        parts.append(f"({m['wall_s']:.1f}s)")
    return ", ".join(parts)


# --------------------------------------------------------------------------- environment


def _git(*args: str) -> str:
    try:
        result = subprocess.run(
            ["git", *args],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def git_info() -> dict[str, Any]:
    return {
        "sha": _git("rev-parse", "--short", "HEAD") or "nogit",
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "java": javatools.java_version(),
        "kafka": dev.KAFKA_VERSION,
        "librdkafka": confluent_kafka.libversion()[0],
        "uvloop": _version("uvloop"),
        "loadavg_start": os.getloadavg(),
    }


def _primary() -> dev.ClusterInfo:
    progress("starting the dev clusters (no-op if they run)")
    infos = {info.name: info for info in dev.up()}
    # MirrorMaker 2 would copy every bench record to the secondary, taking a core's
    # worth of CPU from both paths at random moments.
    mirroring = dev_mirror.status(dev.default_run_dir())
    if mirroring is not None and mirroring.running:
        progress("stopping MirrorMaker 2 for the run (`gateway dev up` starts it again)")
        dev_mirror.stop(dev.default_run_dir())
    return infos["primary"]


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.perf.bench",
        description="Throughput and latency directly against the primary dev cluster and "
        "through the gateway, alternating, in one run.",
    )
    parser.add_argument("--rounds", type=int, help=f"rounds per path (default {DEFAULT_ROUNDS})")
    parser.add_argument(
        "--records", type=int, help=f"records for produce/consume (default {DEFAULT_RECORDS:,})"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run of about a minute: 1 round, {QUICK_RECORDS:,} records, "
        f"{QUICK_E2E_SECONDS:.0f}s latency probe",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated subset of {','.join(WORKLOADS)} (consume needs produce)",
    )
    parser.add_argument("--e2e-rate", type=float, default=DEFAULT_E2E_RATE, help="msg/s")
    parser.add_argument("--e2e-seconds", type=float, help="measured seconds of the probe")
    parser.add_argument("--idle-connections", type=int, default=DEFAULT_IDLE)
    parser.add_argument(
        "--soak",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="also run produce + idle connections through one gateway this long (e.g. 300)",
    )
    parser.add_argument("--no-warmup", action="store_true", help="skip the unrecorded warm-up")
    parser.add_argument("--json", type=Path, help="results file (default bench-results/...)")
    parser.add_argument(
        "--compare", nargs=2, type=Path, metavar=("A.json", "B.json"), help="compare two runs"
    )
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    workloads = tuple(w.strip() for w in args.workloads.split(",") if w.strip())
    unknown = sorted(set(workloads) - set(WORKLOADS))
    if unknown:
        raise SystemExit(f"unknown workloads: {', '.join(unknown)}")
    if "consume" in workloads and "produce" not in workloads:
        workloads = ("produce", *workloads)
    workloads = tuple(w for w in WORKLOADS if w in workloads)
    records = args.records or (QUICK_RECORDS if args.quick else DEFAULT_RECORDS)
    return Settings(
        rounds=args.rounds or (1 if args.quick else DEFAULT_ROUNDS),
        records=records,
        quick=args.quick,
        workloads=workloads,
        partitions=PARTITIONS,
        e2e_rate=args.e2e_rate,
        e2e_seconds=args.e2e_seconds or (QUICK_E2E_SECONDS if args.quick else DEFAULT_E2E_SECONDS),
        e2e_warmup_s=E2E_WARMUP_S,
        idle_connections=args.idle_connections,
        soak_s=args.soak,
        warmup_records=0 if args.no_warmup else min(records, 20_000),
    )


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _header(doc: dict[str, Any]) -> str:
    s, m = doc["settings"], doc["machine"]
    producer = " ".join(s["producer_props"])
    e2e_clients = f"producer {s['e2e_producer']}, consumer {s['e2e_consumer']}"
    return "\n".join(
        [
            f"gateway bench {describe(doc)}, {m['memory_gib']} GiB, Kafka {m['kafka']}, "
            f"Python {m['python']}, {m['java']}, librdkafka {m['librdkafka']}",
            f"{s['rounds']} round(s), alternating {'/'.join(PATHS)}; {s['records']:,} records x "
            f"{s['record_size']} B per produce/consume, producer {producer}; "
            f"{s['idle_connections']} idle conns; {s['partitions']} partitions",
            f"e2e {s['e2e_rate']:,.0f} msg/s for {s['e2e_seconds']:.0f}s "
            f"(+{s['e2e_warmup_s']:.0f}s warm-up), {e2e_clients}",
        ]
    )


LEGEND = (
    "Medians over the rounds. ±% = half the range of rec/s across rounds. gw/dir = gateway "
    "rec/s / direct rec/s.\n"
    "Latency: produce rows are ProducerPerformance's send->ack at full speed (mostly time "
    "queued in the producer, so it grows as throughput falls); e2e is send->receive at a "
    "fixed rate. +pNN = gateway - direct, ms.\n"
    "CPU s = CPU seconds used during the workload by the gateway process, the primary broker "
    "JVM, the load tools; other = the rest of the machine (noise when large). "
    "MiB = 2^20 bytes, as Kafka's tools count."
)


def _write_json(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, allow_nan=False, default=str) + "\n", "utf-8")
    tmp.replace(path)


def _finite(value: Any) -> Any:
    """JSON has no NaN: replace it (and infinities) with null, recursively."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _noise_line(results: list[RunResult]) -> str:
    """How much of the machine other processes used while workloads were measured."""
    ok = [r.metrics for r in results if r.ok and "other_cpu_s" in r.metrics]
    capacity = sum(m["wall_s"] for m in ok) * (os.cpu_count() or 1)
    if not capacity:
        return ""
    other = sum(m["other_cpu_s"] for m in ok)
    busy = sum(m["system_cpu_s"] for m in ok)
    return (
        f"Machine during measured windows: {busy / capacity:.0%} of all CPUs busy; "
        f"{other / capacity:.0%} used by processes outside this benchmark."
    )


def compare(a_path: Path, b_path: Path) -> int:
    a = json.loads(a_path.read_text(encoding="utf-8"))
    b = json.loads(b_path.read_text(encoding="utf-8"))
    print(f"A: {a_path}  {describe(a)}")
    print(f"B: {b_path}  {describe(b)}")
    print()
    print(compare_table(a, b))
    return 0


def run(settings: Settings, json_path: Path | None) -> int:
    started_utc = _utc_now()
    started = time.monotonic()
    git = git_info()
    doc: dict[str, Any] = {
        "schema": 1,
        "started_utc": started_utc.isoformat(timespec="seconds"),
        "git": git,
        "machine": machine_info(),
        "settings": asdict(settings),
    }
    stamp = started_utc.strftime("%Y%m%dT%H%M%SZ")
    path = json_path or REPO_ROOT / "bench-results" / f"{stamp}-{git['sha']}.json"
    primary = _primary()
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as workdir:
        bench = Bench(settings, primary, Path(workdir))
        try:
            if settings.warmup_records:
                bench.warm_up()
            bench.run_rounds()
            if settings.soak_s > 0:
                bench.run_soak()
        except KeyboardInterrupt:
            interrupted = True
            progress("interrupted: writing what was measured")
        finally:
            with contextlib.suppress(KafkaException):
                bench.cleanup()
    doc["runs"] = [run.to_json() for run in bench.results]
    doc["summary"] = summarize(bench.results)
    doc["soak"] = bench.soak
    doc["interrupted"] = interrupted
    doc["runtime_s"] = round(time.monotonic() - started, 1)
    doc["finished_utc"] = _utc_now().isoformat(timespec="seconds")
    doc["machine"]["loadavg_end"] = os.getloadavg()
    doc = _finite(doc)
    table = results_table(doc)
    doc["table"] = table
    _write_json(doc, path)
    print(_header(doc))
    print()
    print(table)
    print()
    print(LEGEND)
    print(_noise_line(bench.results))
    failed = [r for r in bench.results if not r.ok]
    for r in failed:
        print(f"FAILED round {r.round} {r.workload} {r.path}: {r.error}")
    if any((r.error or "").startswith(PolicyDenied.__name__) for r in failed):
        print("\nTHE POLICY PATH DID NOT DO THE SAME WORK: its figures compare with nothing.")
    minutes, seconds = divmod(int(doc["runtime_s"]), 60)
    print(f"\nruntime {minutes}m{seconds:02d}s; results in {path}")
    return 1 if failed or interrupted else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    try:
        return run(_settings(args), args.json)
    except dev.DevError as err:
        print(f"bench: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
