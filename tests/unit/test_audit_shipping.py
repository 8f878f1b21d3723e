"""The Kafka sink's position and resume logic, the reader's de-duplication, and the
``audit.kafka`` config (no Kafka: a fake producer stands in for the cluster)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway import metrics
from gateway.audit import shipping, verify
from gateway.audit.kafka_sink import KafkaSink
from gateway.audit.writer import ChainWriter
from gateway.audit_cli import main as audit_main
from gateway.config import AuditKafkaConfig, ClusterConfig, parse_config
from gateway.errors import ConfigError
from tests.unit.audit_helpers import INSTANCE, event, files, read_lines, settings, write_log


def _all_lines(directory: Path) -> list[bytes]:
    return [raw for path in files(directory) for raw in read_lines(path)]


def test_pending_returns_lines_after_the_position_up_to_the_durable_seq(tmp_path: Path) -> None:
    write_log(tmp_path, Ed25519PrivateKey.generate(), events=30)
    everything = _all_lines(tmp_path)
    lines = shipping.pending(tmp_path, INSTANCE, after=6, durable=20, limit=1000)
    assert [line.seq for line in lines] == list(range(7, 20))
    assert [line.data for line in lines] == everything[7:20]  # the exact bytes written
    assert {line.segment for line in lines} <= {p.name for p in files(tmp_path)}


def test_pending_is_bounded_by_the_limit(tmp_path: Path) -> None:
    write_log(tmp_path, Ed25519PrivateKey.generate(), events=30)
    lines = shipping.pending(tmp_path, INSTANCE, after=-1, durable=10**9, limit=4)
    assert [line.seq for line in lines] == [0, 1, 2, 3]


def test_position_round_trips_and_a_damaged_file_means_start(tmp_path: Path) -> None:
    assert shipping.read_position(tmp_path, INSTANCE) == shipping.START
    shipping.write_position(tmp_path, INSTANCE, shipping.Position(12, "ab"))
    assert shipping.read_position(tmp_path, INSTANCE) == shipping.Position(12, "ab")
    shipping.position_path(tmp_path, INSTANCE).write_text("{not json")
    assert shipping.read_position(tmp_path, INSTANCE) == shipping.START


def test_collector_drops_identical_duplicates_and_rebuilds_verifiable_segments(
    tmp_path: Path,
) -> None:
    local = tmp_path / "local"
    write_log(local, Ed25519PrivateKey.generate(), events=30)
    lines = shipping.pending(local, INSTANCE, after=-1, durable=10**9, limit=10**6)
    collector = shipping.Collector()
    for line in lines + lines[10:15]:  # a re-send after a crash
        collector.add(INSTANCE, line.segment, line.data)
    out = tmp_path / "out"
    assert collector.write(out) == {INSTANCE: len(lines)}
    assert collector.duplicates == 5
    assert [p.name for p in files(out)] == [p.name for p in files(local)]
    assert _all_lines(out) == _all_lines(local)
    assert all(report.ok for report in verify.verify([out], None, allow_unsealed=False))


def test_collector_reports_a_conflicting_duplicate_as_tampering(tmp_path: Path) -> None:
    write_log(tmp_path, Ed25519PrivateKey.generate(), events=10)
    lines = shipping.pending(tmp_path, INSTANCE, after=-1, durable=10**9, limit=100)
    collector = shipping.Collector()
    for line in lines:
        collector.add(INSTANCE, line.segment, line.data)
    forged = lines[3].data.replace(b'"alice"', b'"mallory"')
    with pytest.raises(shipping.ConflictingDuplicate, match=f"tampered.*{INSTANCE} seq 3"):
        collector.add(INSTANCE, lines[3].segment, forged)


def test_collector_refuses_a_segment_header_of_another_instance(tmp_path: Path) -> None:
    write_log(tmp_path, Ed25519PrivateKey.generate(), events=3)
    line = shipping.pending(tmp_path, INSTANCE, after=-1, durable=10**9, limit=1)[0]
    with pytest.raises(ValueError, match="not a segment of other"):
        shipping.Collector().add("other", line.segment, line.data)
    with pytest.raises(ValueError, match="not a segment"):
        shipping.Collector().add(INSTANCE, "../" + line.segment, line.data)


class _Producer:
    """Stands in for AIOKafkaProducer: records what was sent, or fails every send."""

    def __init__(self, sent: list[tuple[bytes, bytes, str]], fail: bool = False) -> None:
        self.sent = sent
        self.fail = fail

    async def send(self, topic: str, value: bytes, key: bytes, headers: Any) -> Any:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail:
            from aiokafka.errors import KafkaConnectionError

            future.set_exception(KafkaConnectionError("no broker"))
        else:
            self.sent.append((key, value, dict(headers)["segment"].decode()))
            future.set_result(None)
        return future

    async def stop(self) -> None:
        return None


def _sink(directory: Path, durable: int, producer: _Producer, **config: Any) -> KafkaSink:
    settings = AuditKafkaConfig(cluster="secondary", create_topic=False, **config)
    cluster = ClusterConfig(bootstrap_servers=["127.0.0.1:1"])
    sink = KafkaSink(settings, cluster, directory, INSTANCE, lambda: durable)

    async def ready() -> Any:
        return producer

    sink._ready_producer = ready  # type: ignore[method-assign]
    return sink


async def test_sink_resumes_after_a_restart_without_gaps_or_resends(tmp_path: Path) -> None:
    write_log(tmp_path, Ed25519PrivateKey.generate(), events=30)
    everything = _all_lines(tmp_path)
    sent: list[tuple[bytes, bytes, str]] = []

    async def run(durable: int) -> KafkaSink:
        sink = _sink(tmp_path, durable, _Producer(sent), batch_max_lines=7)
        while await sink._ship_batch():
            pass
        return sink

    first = await run(12)
    assert first.lag == 0 and first.position.seq == 11
    second = await run(len(everything))  # a new sink, as after a restart: position from file
    assert second.lag == 0
    assert [value for _, value, _ in sent] == everything  # each line once, in order
    assert {key for key, _, _ in sent} == {INSTANCE.encode()}


async def test_sink_failure_keeps_the_position_logs_once_and_the_lag_grows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_log(tmp_path, Ed25519PrivateKey.generate(), events=10)
    sink = _sink(tmp_path, 8, _Producer([], fail=True))
    before = metrics.AUDIT_SINK_FAILURES.labels("send")._value.get()

    with caplog.at_level(logging.WARNING, logger="gateway.audit.kafka_sink"):
        for _ in range(3):
            with pytest.raises(Exception, match="no broker") as caught:
                await sink._ship_batch()
            await sink._failed(caught.value)
    assert sink.position == shipping.START
    assert sink.lag == 8
    assert metrics.AUDIT_SINK_FAILURES.labels("send")._value.get() == before + 3
    assert len([r for r in caplog.records if "cannot ship" in r.message]) == 1


def _config(audit_kafka: dict[str, Any], secondary: bool = True) -> dict[str, Any]:
    clusters: dict[str, Any] = {"primary": {"bootstrap_servers": ["127.0.0.1:9092"]}}
    if secondary:
        clusters["secondary"] = {"bootstrap_servers": ["127.0.0.1:9093"]}
    return {
        "listeners": [{"name": "plain", "bind": "127.0.0.1:9000"}],
        "clusters": clusters,
        "audit": {"dir": "/tmp/a", "key_file": "/tmp/k", "kafka": audit_kafka},
    }


def test_audit_kafka_config_defaults() -> None:
    config = parse_config(_config({"cluster": "secondary"}), "test.yaml", {})
    assert config.audit is not None and config.audit.kafka is not None
    assert config.audit.kafka.topic == "_gateway_audit"
    assert config.audit.kafka.create_topic is True


@pytest.mark.parametrize(
    ("name", "secondary"), [("nowhere", True), ("secondary", False), ("", True)]
)
def test_an_unknown_audit_cluster_is_a_config_error_naming_the_field(
    name: str, secondary: bool
) -> None:
    with pytest.raises(ConfigError, match=r"audit\.kafka\.cluster"):
        parse_config(_config({"cluster": name}, secondary), "test.yaml", {})


async def test_an_unreachable_cluster_is_retried_counted_and_stop_still_returns(
    tmp_path: Path,
) -> None:
    write_log(tmp_path, Ed25519PrivateKey.generate(), events=5)
    settings = AuditKafkaConfig(cluster="secondary", create_topic=False, stop_timeout_seconds=1)
    closed_port = ClusterConfig(bootstrap_servers=["127.0.0.1:1"])
    sink = KafkaSink(settings, closed_port, tmp_path, INSTANCE, lambda: 5)
    before = metrics.AUDIT_SINK_FAILURES.labels("connect")._value.get()
    sink.start()
    for _ in range(200):  # until the first failed attempt; bounded
        if metrics.AUDIT_SINK_FAILURES.labels("connect")._value.get() > before:
            break
        await asyncio.sleep(0.05)
    assert metrics.AUDIT_SINK_FAILURES.labels("connect")._value.get() > before
    assert sink._task is not None and not sink._task.done()  # still retrying
    assert sink.lag == 5 and metrics.AUDIT_SINK_LAG._value.get() == 5
    await sink.stop()
    assert sink._task.done()
    assert shipping.read_position(tmp_path, INSTANCE) == shipping.START


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--topic", "t"], "give --bootstrap"),
        (
            ["--bootstrap", "127.0.0.1:1", "--security-protocol", "SASL_PLAINTEXT"],
            "never a password on the command line",
        ),
        (
            [
                "--bootstrap",
                "127.0.0.1:1",
                "--security-protocol",
                "SASL_PLAINTEXT",
                "--sasl-mechanism",
                "PLAIN",
                "--username",
                "u",
                "--password-file",
                "/nonexistent/pw",
            ],
            "cannot read /nonexistent/pw",
        ),
    ],
)
def test_fetch_usage_errors_are_precise(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert audit_main(["fetch", "--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_fetch_with_a_config_names_an_unknown_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gateway.yaml"
    data = _config({"cluster": "primary"})
    del data["audit"]
    config.write_text(json.dumps(data))  # JSON is YAML
    argv = ["fetch", "--out", str(tmp_path), "--config", str(config), "--cluster", "third"]
    assert audit_main(argv) == 2
    assert "--cluster: name one of primary, secondary" in capsys.readouterr().err


def test_a_crash_torn_segment_end_is_shipped_before_its_seal_and_the_copy_verifies(
    tmp_path: Path,
) -> None:
    local, out = tmp_path / "local", tmp_path / "out"
    private = Ed25519PrivateKey.generate()
    crashed = ChainWriter(settings(local, segment_max_bytes=10**6), private)
    crashed.open()
    crashed.write([event(0), event(1)])
    with files(local)[-1].open("ab") as torn:  # a crash in the middle of a write
        torn.write(b'{"api":"Produce","n":2,"princ')
    # The torn end is not final until a later line exists: nothing past seq 1 ships.
    shipped = shipping.pending(local, INSTANCE, after=-1, durable=10**9, limit=100)
    assert [line.torn for line in shipped] == [False, False]
    restarted = ChainWriter(settings(local, segment_max_bytes=10**6), private)
    restarted.open()  # seals the torn end with a recovered line in a new segment
    restarted.write([event(3)])
    restarted.close()
    rest = shipping.pending(local, INSTANCE, after=1, durable=10**9, limit=100)
    assert rest[0].torn and rest[0].data == b'{"api":"Produce","n":2,"princ'
    assert not rest[1].torn and json.loads(rest[1].data)["type"] == "recovered"
    collector = shipping.Collector()
    for line in shipped + rest + rest[:2]:  # the torn end re-sent: an identical duplicate
        collector.add(INSTANCE, line.segment, line.data, torn=line.torn)
    collector.write(out)
    assert [p.read_bytes() for p in files(out)] == [p.read_bytes() for p in files(local)]
    report = verify.verify([out], private.public_key(), allow_unsealed=False)[0]
    assert report.ok, report.problem
    with pytest.raises(shipping.ConflictingDuplicate, match="torn ends"):
        collector.add(INSTANCE, rest[0].segment, b"other bytes", torn=True)
