"""The benchmark's audit path: a valid config with the audit log on, its ratio and added
latency against the same policy gateway with audit off, and a run whose requests lack
events fails."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from gateway import dev
from gateway.config import parse_config
from tests.perf.bench import check_audit_path
from tests.perf.report import RunResult, results_table, summarize
from tests.perf.targets import (
    DIRECT,
    GATEWAY,
    GATEWAY_AUDIT,
    GATEWAY_POLICY,
    BenchError,
    bench_audit_dir,
    bench_policy_dir,
    gateway_config,
)

RATES = {DIRECT: 100.0, GATEWAY: 90.0, GATEWAY_POLICY: 80.0, GATEWAY_AUDIT: 76.0}
P99 = {DIRECT: 10.0, GATEWAY: 11.0, GATEWAY_POLICY: 11.5, GATEWAY_AUDIT: 13.0}


def runs() -> list[RunResult]:
    return [
        RunResult(
            "produce",
            path,
            1,
            metrics={"records_per_s": RATES[path], "lat_p99_ms": P99[path], "gw_audit_events": 9},
        )
        for path in RATES
    ]


def test_audit_path_is_compared_with_the_policy_path_in_the_same_run() -> None:
    entry = summarize(runs())["produce"]
    assert entry["ratio_audit"] == pytest.approx(0.76)
    assert entry["audit_vs_policy"] == pytest.approx(0.95)
    assert entry["audit_added_latency_ms"]["lat_p99_ms"] == pytest.approx(1.5)
    assert entry["added_latency_ms_audit"]["lat_p99_ms"] == pytest.approx(3.0)


def test_results_table_shows_the_audit_cost_on_the_audit_row() -> None:
    table = results_table({"summary": summarize(runs()), "settings": {}})
    row = next(line for line in table.splitlines() if GATEWAY_AUDIT in line)
    assert "0.76" in row
    assert "x0.950, +1.50 ms p99 vs audit off (gateway-policy)" in row
    assert "9 events" in row


def test_fewer_events_than_requests_fails_the_run() -> None:
    check_audit_path(requests=10, events=14)
    with pytest.raises(BenchError, match="wrote 9 events for 10 requests"):
        check_audit_path(requests=10, events=9)


def test_audit_path_config_is_valid_and_its_key_is_private(tmp_path: Path) -> None:
    primary = dev.ClusterInfo(
        name="primary",
        bootstrap="127.0.0.1:19092",
        controller="127.0.0.1:19093",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        username="gateway-admin",
        password_file=str(tmp_path / "admin.password"),
        pid=None,
        log_file=str(tmp_path / "kafka.log"),
        data_dir=str(tmp_path / "data"),
        bootstrap_servers="127.0.0.1:19092",
        nodes=(),
    )
    audit_dir = bench_audit_dir(tmp_path)
    key = tmp_path / "audit.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    before = key.read_bytes()
    assert bench_audit_dir(tmp_path) == audit_dir and key.read_bytes() == before
    data = gateway_config(primary, 9092, 9093, 600.0, bench_policy_dir(tmp_path), audit_dir)
    config = parse_config(data, "bench", environ={})
    assert config.audit is not None and not config.audit.fail_open
    assert config.audit.payloads == []  # metadata events: no payload capture


def test_the_masked_workloads_records_are_1_kib_avro_the_policy_path_masks(tmp_path: Path) -> None:
    import dataclasses
    import io

    from fastavro import parse_schema, schemaless_reader

    from gateway.identity import ANONYMOUS
    from gateway.masking.embedded import EmbeddedRegistry
    from gateway.policy.loader import load_policy_dir
    from gateway.policy.masking import masking_for
    from tests.perf import masked
    from tests.perf.targets import MASKED_SCHEMA, MASKED_SUBJECT

    policy = load_policy_dir(bench_policy_dir(tmp_path))
    bench = dataclasses.replace(ANONYMOUS, listener="bench")
    topic = "bench-1a2b3c-masked-gateway-policy-r1"
    assert [r.id for r in masking_for(policy.masking, bench, topic, "fetch")] == ["bench-masked"]
    assert masking_for(policy.masking, bench, "bench-1a2b3c-consume-gateway-r1", "fetch") == ()
    registry = EmbeddedRegistry.load(tmp_path / "schemas")
    wire_id = registry.subject(MASKED_SUBJECT).id
    value = masked._values()[7]
    assert 1000 <= len(value) <= 1024
    assert value[0] == 0 and int.from_bytes(value[1:5], "big") == wire_id
    record = schemaless_reader(io.BytesIO(value[5:]), parse_schema(MASKED_SCHEMA), None)
    assert record["email"] == "customer7@example.com" and len(MASKED_SCHEMA["fields"]) == 12
