"""The four paths under test: the primary dev cluster directly, a gateway subprocess,
the same gateway deciding every request by the example policies plus
:data:`BENCH_POLICY`, and that policy gateway writing its audit log. Starts and stops
the gateway and reads its ``/metrics``; it never writes to Kafka itself."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway import dev
from gateway.audit import keys
from gateway.config import parse_config
from gateway.masking import keyfile as masking_keyfile

DIRECT = "direct"
GATEWAY = "gateway"
# The same gateway with the repository's example policies plus a grant for the bench's
# listener loaded, so that every request is authorized by the full policy.
GATEWAY_POLICY = "gateway-policy"  # also part of topic names: no "+"
# The policy path with the audit log on as a regulated deployment runs it: metadata
# events (no payload capture), each response released after its event is fsynced
# (group commit), fail closed. Compared with gateway-policy, it shows what audit costs.
GATEWAY_AUDIT = "gateway-audit"
GATEWAYS = (GATEWAY, GATEWAY_POLICY, GATEWAY_AUDIT)
PATHS = (DIRECT, GATEWAY, GATEWAY_POLICY, GATEWAY_AUDIT)
# The key in results of each gateway path's ratio and added latency.
SUFFIXES = {GATEWAY: "", GATEWAY_POLICY: "_policy", GATEWAY_AUDIT: "_audit"}

# What the bench's clients need, granted to its listener: the workloads' topics and
# groups are all named bench-... (an idempotent producer's id is covered by WRITE on
# those topics, KIP-679).
BENCH_POLICY = """\
rules:
  - id: bench-topics
    effect: allow
    subjects: {listeners: [bench]}
    resources: [{type: topic, prefix: bench-}]
    operations: [read, write, create]
  - id: bench-groups
    effect: allow
    subjects: {listeners: [bench]}
    resources: [{type: group, prefix: bench-}]
    operations: [read]
"""


# The masked workload (tests/perf/masked.py): 1 KiB Avro records of 12 fields, 3 of them
# masked for the bench listener on the policy and audit paths.
MASKED_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "BenchCustomer",
    "namespace": "bench",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "name", "type": "string"},
        {"name": "email", "type": "string"},
        {"name": "card_number", "type": "string"},
        {"name": "street", "type": "string"},
        {"name": "city", "type": "string"},
        {"name": "country", "type": "string"},
        {"name": "phone", "type": "string"},
        {"name": "amount", "type": "int"},
        {"name": "created", "type": "long"},
        {"name": "status", "type": "string"},
        {"name": "notes", "type": "string"},
    ],
}
MASKED_SUBJECT = "bench-masked-value"

# Appended to the bench policy: masking for the bench listener's masked topics.
MASKING_POLICY = """\
masking:
  - id: bench-masked
    topics: [{glob: "bench-*-masked-*"}]
    subjects: {listeners: [bench]}
    value:
      format: avro
      fields:
        - {path: email, method: hash}
        - {path: card_number, method: partial, keep_last: 4}
        - {path: street, method: redact}
"""


def bench_schemas_dir(workdir: Path) -> Path:
    """The repository's schemas/ plus this workload's schema, in ``workdir``."""
    directory = workdir / "schemas"
    directory.mkdir(exist_ok=True)
    for source in sorted((REPO_ROOT / "schemas").glob("*.avsc")):
        (directory / source.name).write_bytes(source.read_bytes())
    (directory / f"{MASKED_SUBJECT}.avsc").write_text(json.dumps(MASKED_SCHEMA), encoding="utf-8")
    return directory


def bench_policy_dir(workdir: Path) -> Path:
    """The repository's policies/ plus :data:`BENCH_POLICY`, in ``workdir``."""
    directory = workdir / "policy"
    directory.mkdir(exist_ok=True)
    for source in sorted((REPO_ROOT / "policies").glob("*.yaml")):
        (directory / source.name).write_bytes(source.read_bytes())
    (directory / "zz-bench.yaml").write_text(BENCH_POLICY, encoding="utf-8")
    (directory / "zz-bench-masking.yaml").write_text(MASKING_POLICY, encoding="utf-8")
    bench_schemas_dir(workdir)
    return directory


GATEWAY_START_TIMEOUT_S = 60.0
GATEWAY_STOP_TIMEOUT_S = 20.0
REPO_ROOT = Path(__file__).resolve().parents[2]


class BenchError(RuntimeError):
    """A workload could not run (tool failed, gateway died, ...)."""


@dataclass(frozen=True)
class Target:
    """Where a workload's clients connect.

    ``client_config`` is the 0600 SCRAM properties file for Kafka's Java tools (direct
    only); the librdkafka settings read the password file only when asked for them.
    """

    path: str
    bootstrap: str
    client_config: str | None = None
    sasl_mechanism: str | None = None
    username: str | None = None
    password_file: str | None = None

    def rdkafka_conf(self) -> dict[str, str]:
        conf = {"bootstrap.servers": self.bootstrap}
        if self.password_file is not None:
            assert self.sasl_mechanism is not None and self.username is not None
            password = Path(self.password_file).read_text(encoding="utf-8").strip()
            conf.update(
                {
                    "security.protocol": "SASL_PLAINTEXT",
                    "sasl.mechanism": self.sasl_mechanism,
                    "sasl.username": self.username,
                    "sasl.password": password,
                }
            )
        return conf

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.bootstrap.rpartition(":")
        return host, int(port)


def direct_target(primary: dev.ClusterInfo) -> Target:
    return Target(
        path=DIRECT,
        bootstrap=primary.bootstrap,
        client_config=dev.client_config_file(primary),
        sasl_mechanism=primary.sasl_mechanism,
        username=primary.username,
        password_file=primary.password_file,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gateway_config(
    primary: dev.ClusterInfo,
    port: int,
    admin_port: int,
    idle_timeout_s: float,
    policy_dir: Path | None = None,
    audit_dir: Path | None = None,
) -> dict[str, Any]:
    """A gateway config: one plaintext listener without authentication, the dev primary,
    the policy of ``policy_dir`` when given, and with ``audit_dir`` the audit log there
    (signing key ``audit.key`` beside it, made by :func:`bench_audit_dir`)."""
    data: dict[str, Any] = {
        "gateway": {"node_id": 0, "cluster_id": "bench-gateway"},
        "listeners": [
            {"name": "bench", "bind": f"127.0.0.1:{port}", "security_protocol": "PLAINTEXT"},
        ],
        "clusters": {
            "primary": {
                "bootstrap_servers": primary.bootstrap_servers.split(","),
                "security_protocol": primary.security_protocol,
                "sasl": {
                    "mechanism": primary.sasl_mechanism,
                    "username": primary.username,
                    "password": {"file": primary.password_file},
                },
            }
        },
        "admin": {"bind": f"127.0.0.1:{admin_port}"},
        "limits": {"idle_timeout_seconds": idle_timeout_s, "shutdown_grace_seconds": 2},
    }
    if policy_dir is not None:
        data["policy"] = {"dir": str(policy_dir)}
        # The example policies have masking rules (not for bench- topics): a gateway
        # with them needs its masking key and schemas.
        data["masking"] = {
            "key_file": str(bench_masking_key(policy_dir.parent)),
            "schemas_dir": str(policy_dir.parent / "schemas"),
        }
    if audit_dir is not None:
        data["audit"] = {
            "dir": str(audit_dir),
            "key_file": str(audit_dir.parent / "audit.key"),
            "instance_id": "bench-gateway",
        }
    return data


def bench_masking_key(workdir: Path) -> Path:
    """The masking key of the run's policy gateways (made once per run)."""
    key_file = workdir / "masking.key"
    if not key_file.exists():
        masking_keyfile.generate(key_file)
    return key_file


def bench_audit_dir(workdir: Path) -> Path:
    """The audit directory of the audit path, with its signing key beside it (made once
    per run; every gateway of the run continues the same chain)."""
    key_file = workdir / "audit.key"
    if not key_file.exists():
        keys.generate(key_file)
    return workdir / "audit"


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class GatewayProcess:
    """``python -m gateway run`` as a subprocess (log level warning), stopped with SIGTERM."""

    def __init__(
        self,
        primary: dev.ClusterInfo,
        workdir: Path,
        idle_timeout_s: float,
        policy_dir: Path | None = None,
        audit_dir: Path | None = None,
    ) -> None:
        self.primary = primary
        self.policy_dir = policy_dir
        self.audit_dir = audit_dir
        if audit_dir is not None:
            self.path = GATEWAY_AUDIT
        else:
            self.path = GATEWAY if policy_dir is None else GATEWAY_POLICY
        self.workdir = workdir
        self.idle_timeout_s = idle_timeout_s
        self.port = 0
        self.admin_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_file = workdir / "gateway.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def target(self) -> Target:
        return Target(path=self.path, bootstrap=f"127.0.0.1:{self.port}")

    def start(self) -> None:
        self.port, self.admin_port = free_port(), free_port()
        data = gateway_config(
            self.primary,
            self.port,
            self.admin_port,
            self.idle_timeout_s,
            self.policy_dir,
            self.audit_dir,
        )
        parse_config(dict(data), "bench", environ={})  # refuse a bad config here, clearly
        config_path = self.workdir / "gateway.yaml"
        config_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        cmd = [sys.executable, "-m", "gateway", "--log-level", "warning", "run"]
        cmd += ["--config", str(config_path)]
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        deadline = time.monotonic() + GATEWAY_START_TIMEOUT_S
        while not _port_open("127.0.0.1", self.port):
            if self.proc.poll() is not None:
                raise BenchError(f"gateway exited ({self.proc.returncode}): {self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"gateway did not listen within {GATEWAY_START_TIMEOUT_S}s")
            time.sleep(0.05)

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise BenchError(f"gateway died ({code}): {self.log_tail()}")

    def stop(self) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(GATEWAY_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def _counts(self, family_name: str, sample_name: str, **wanted: str) -> dict[str, float]:
        """A counter from the gateway's /metrics, summed by API, over the samples whose
        labels have the ``wanted`` values."""
        url = f"http://127.0.0.1:{self.admin_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode("utf-8")
        except OSError as err:
            raise BenchError(f"cannot read the gateway's {url}: {err}") from err
        counts: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            if family.name != family_name:
                continue
            for sample in family.samples:
                labels = sample.labels
                if sample.name == sample_name and all(
                    labels.get(k) == v for k, v in wanted.items()
                ):
                    api = labels.get("api", "?")
                    counts[api] = counts.get(api, 0.0) + sample.value
        return counts

    def request_counts(self) -> dict[str, float]:
        """Requests the gateway handled so far, by API."""
        return self._counts("gateway_requests", "gateway_requests_total")

    def allowed(self) -> dict[str, float]:
        """Policy decisions that allowed something so far, by API."""
        return self._counts(
            "gateway_policy_decisions", "gateway_policy_decisions_total", decision="allow"
        )

    def masked_records(self) -> float:
        """Records delivered masked so far (all topics and rules)."""
        return sum(
            self._counts("gateway_masking_records", "gateway_masking_records_total").values()
        )

    def masking_failures(self) -> float:
        """Partitions refused because they could not be masked, so far."""
        return sum(
            self._counts("gateway_masking_failures", "gateway_masking_failures_total").values()
        )

    def audit_events(self) -> float:
        """Audit events written so far (all types)."""
        return sum(self._counts("gateway_audit_events", "gateway_audit_events_total").values())

    def denials(self) -> dict[str, float]:
        """Policy denials so far, by API (Metadata's count the topics an all-topics
        answer hid, which is no refusal)."""
        return self._counts(
            "gateway_policy_decisions", "gateway_policy_decisions_total", decision="deny"
        )

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no gateway log)"
        return "\n".join(text.strip().splitlines()[-lines:]) or "(gateway log is empty)"

    def warnings_logged(self) -> int:
        """How many WARNING/ERROR lines the gateway wrote so far (shown in the report)."""
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return 0
        return sum(1 for line in text.splitlines() if " WARNING " in line or " ERROR " in line)
