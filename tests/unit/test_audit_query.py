"""Reading the audit log back through the CLI: export with filters (JSON lines and
CSV) and its verification summary, sessions, and one session replayed; on a real log
written by the chain writer."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway import audit_cli
from gateway.audit import keys, query
from gateway.audit.writer import ChainWriter
from tests.unit.audit_helpers import files, read_lines, settings, write_lines

ALICE = "a" * 32
BOB = "b" * 32
T0 = 1_795_000_000.0  # 2026-11-18T...Z


def _request(connection: str, at: float, principal: str, api: str, topic: str, **extra: Any):
    event: dict[str, Any] = {
        "v": 1,
        "type": "request",
        "time": at,
        "connection": connection,
        "api": api,
        "version": 9,
        "correlation_id": int(at - T0),
        "principal": principal,
        "resources": [{"kind": "topic", "name": topic}],
        "decisions": [
            {"stage": "policy", "kind": "topic", "name": topic, "allowed": True, "rule": "apps"}
        ],
        "results": [{"item": f"{topic}/0", "error": "none"}],
        "latency_ms": 1.5,
    }
    event.update(extra)
    return event


def _session_events(connection: str, start: float, principal: str, topic: str) -> list[Any]:
    return [
        {
            "v": 1,
            "type": "connection_opened",
            "time": start,
            "connection": connection,
            "listener": "sasl",
            "peer": "127.0.0.1:5000",
            "tls": None,
        },
        {
            "v": 1,
            "type": "authentication",
            "time": start + 1,
            "connection": connection,
            "mechanism": "PLAIN",
            "principal": principal,
            "result": "success",
            "reason": None,
        },
        _request(connection, start + 2, principal, "Metadata", topic),
        _request(
            connection,
            start + 3,
            principal,
            "Produce",
            topic,
            produce=[{"topic": topic, "partition": 0, "records": 3, "bytes": 90, "base_offset": 7}],
        ),
        {
            "v": 1,
            "type": "connection_closed",
            "time": start + 4,
            "connection": connection,
            "reason": "client closed",
            "bytes_in": 100,
            "bytes_out": 200,
            "requests": 2,
        },
    ]


@pytest.fixture
def private() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def log_dir(tmp_path: Path, private: Ed25519PrivateKey) -> Path:
    directory = tmp_path / "audit"
    writer = ChainWriter(settings(directory, checkpoint_every_events=4), private)
    writer.open()
    writer.write(_session_events(ALICE, T0, "alice", "orders"))
    writer.write(_session_events(BOB, T0 + 100, "bob", "payments"))
    writer.close()
    return directory


@pytest.fixture
def public_pem(tmp_path: Path, private: Ed25519PrivateKey) -> Path:
    path = tmp_path / "audit.pub"
    path.write_text(keys.public_pem(private.public_key()), encoding="utf-8")
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = audit_cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_export_filters_by_principal_and_topic_with_a_verification_summary(
    log_dir: Path, public_pem: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        ["export", str(log_dir), "--principal", "bob", "--public-key", str(public_pem)], capsys
    )
    assert code == 0, err
    exported = [json.loads(line) for line in out.splitlines()]
    # bob's login and his two requests (the connection's open and close name no one)
    assert [(e["type"], e.get("api")) for e in exported] == [
        ("authentication", None),
        ("request", "Metadata"),
        ("request", "Produce"),
    ]
    assert all(e["instance"] == "gw1" and isinstance(e["seq"], int) for e in exported)
    assert err.startswith("OK gw1:") and "exported 3 events" in err

    code, out, _ = run(["export", str(log_dir), "--topic", "orders"], capsys)
    assert code == 0
    assert {json.loads(line)["connection"] for line in out.splitlines()} == {ALICE}


def test_export_by_time_range_and_type_leaves_checkpoints_out_unless_asked(
    log_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["export", str(log_dir), "--from", str(T0 + 2), "--to", str(T0 + 4)], capsys)
    assert code == 0
    assert [json.loads(line)["api"] for line in out.splitlines()] == ["Metadata", "Produce"]
    _, out, _ = run(["export", str(log_dir), "--type", "authentication"], capsys)
    assert [json.loads(line)["principal"] for line in out.splitlines()] == ["alice", "bob"]
    _, out, _ = run(["export", str(log_dir), "--checkpoints", "--type", "checkpoint"], capsys)
    assert len(out.splitlines()) >= 2
    _, out, _ = run(["export", str(log_dir)], capsys)
    assert all(json.loads(line)["type"] != "checkpoint" for line in out.splitlines())


def test_export_as_csv_has_the_documented_columns(
    log_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["export", str(log_dir), "--format", "csv", "--type", "request"], capsys)
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert tuple(rows[0]) == query.CSV_COLUMNS
    produce = next(r for r in rows[1:] if r[6] == "Produce" and r[5] == "alice")
    assert produce[3] == "request" and produce[4] == ALICE
    assert produce[7] == "topic:orders" and produce[8] == "topic:orders=allow(apps)"
    assert produce[0].endswith("Z") and produce[10] == "1.500"


def test_export_of_a_log_that_does_not_verify_exports_nothing_unless_told(
    log_dir: Path, public_pem: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = files(log_dir)[0]
    lines = read_lines(target)
    lines[2] = lines[2].replace(b'"alice"', b'"mallory"')
    write_lines(target, lines)
    code, out, err = run(["export", str(log_dir), "--public-key", str(public_pem)], capsys)
    assert code == 1 and out == ""
    assert "FAIL gw1:" in err and "does not verify" in err
    code, out, _ = run(["export", str(log_dir), "--no-verify"], capsys)
    assert code == 1 and out != ""


def test_sessions_lists_connections_with_their_principal_and_requests(
    log_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["sessions", str(log_dir), "--json"], capsys)
    assert code == 0
    found = [json.loads(line) for line in out.splitlines()]
    assert [(s["connection"], s["principal"], s["requests"]) for s in found] == [
        (ALICE, "alice", 2),
        (BOB, "bob", 2),
    ]
    assert found[0]["reason"] == "client closed" and found[0]["open"] is False
    _, out, _ = run(["sessions", str(log_dir), "--principal", "bob"], capsys)
    assert BOB in out and ALICE not in out
    _, out, _ = run(["sessions", str(log_dir), "--from", str(T0 + 50)], capsys)
    assert BOB in out and ALICE not in out


def test_a_session_replays_its_events_in_order_readably(
    log_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["session", BOB, str(log_dir)], capsys)
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[1] for line in lines] == [
        "opened",
        "login",
        "Metadata",
        "Produce",
        "closed",
    ]
    assert "PLAIN bob: success" in lines[1]
    assert "allow(apps)" in lines[3] and "wrote payments/0 3 at 7" in lines[3]


def test_bad_arguments_get_a_message_and_exit_2(
    log_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["export", str(log_dir), "--from", "yesterday"], capsys)
    assert code == 2 and "--from 'yesterday'" in err
    code, _, err = run(["session", "not-an-id", str(log_dir)], capsys)
    assert code == 2 and "not a connection id" in err
    code, _, err = run(["sessions", str(tmp_path / "nowhere")], capsys)
    assert code == 2 and "no such file or directory" in err
    code, _, err = run(["session", "c" * 32, str(log_dir)], capsys)
    assert code == 1 and "no events of connection" in err


def test_times_are_read_as_rfc_3339_or_epoch_seconds() -> None:
    assert query.parse_time("2026-11-28T00:00:00Z") == query.parse_time("1795824000")
    assert query.parse_time("2026-11-28") == 1795824000.0
    assert query.format_time(1795824000.25) == "2026-11-28T00:00:00.250Z"
