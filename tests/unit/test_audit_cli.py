"""``python -m gateway audit keygen|verify`` and the ``audit:`` config section."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.__main__ import main
from gateway.audit import keys
from gateway.config import AuditConfig, parse_config
from gateway.errors import ConfigError
from tests.unit.audit_helpers import files, read_lines, write_lines, write_log

MINIMAL = {
    "listeners": [{"name": "plain", "bind": "127.0.0.1:0"}],
    "clusters": {"primary": {"bootstrap_servers": ["127.0.0.1:9092"]}},
}


def test_keygen_writes_a_0600_key_and_prints_its_public_key_and_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "audit.key"
    assert main(["audit", "keygen", "--out", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    printed = capsys.readouterr().out
    public = keys.load_private(out).public_key()
    assert keys.public_pem(public) in printed
    assert f"key_id: {keys.key_id(public)}" in printed
    assert "PRIVATE" not in printed


def test_keygen_refuses_to_overwrite_a_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "audit.key"
    out.write_bytes(b"the key in use")
    assert main(["audit", "keygen", "--out", str(out)]) == 1
    assert out.read_bytes() == b"the key in use"
    assert "not replacing" in capsys.readouterr().err


def test_a_key_file_group_or_others_can_read_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "audit.key"
    keys.generate(out)
    out.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        keys.load_private(out)


def _published(tmp_path: Path, private: Ed25519PrivateKey) -> Path:
    pem = tmp_path / "audit.pub"
    pem.write_text(keys.public_pem(private.public_key()))
    return pem


def test_verify_reports_ok_with_counts_and_the_last_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    private = Ed25519PrivateKey.generate()
    log = tmp_path / "log"
    write_log(log, private, events=20)
    code = main(["audit", "verify", str(log), "--public-key", str(_published(tmp_path, private))])
    out = capsys.readouterr()
    assert code == 0
    assert out.out.startswith("OK gw1: ")
    assert "last checkpoint: seq" in out.out
    assert "warning" not in out.err


def test_verify_without_a_public_key_warns_that_it_proves_only_consistency(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_log(tmp_path / "log", Ed25519PrivateKey.generate(), events=5)
    assert main(["audit", "verify", str(tmp_path / "log")]) == 0
    assert "consistent with itself" in capsys.readouterr().err


def test_verify_exits_1_naming_the_first_bad_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    private = Ed25519PrivateKey.generate()
    log = tmp_path / "log"
    write_log(log, private, events=20)
    target = files(log)[0]
    lines = read_lines(target)
    del lines[2]
    write_lines(target, lines)
    code = main(["audit", "verify", str(log), "--public-key", str(_published(tmp_path, private))])
    assert code == 1
    assert f"FAIL gw1: {target}:3 (seq 3): missing: seq 2..2" in capsys.readouterr().out


def test_verify_with_another_instances_key_says_wrong_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_log(tmp_path / "log", Ed25519PrivateKey.generate(), events=5)
    other = _published(tmp_path, Ed25519PrivateKey.generate())
    assert main(["audit", "verify", str(tmp_path / "log"), "--public-key", str(other)]) == 1
    assert "wrong key" in capsys.readouterr().out


def test_audit_is_off_unless_configured() -> None:
    assert parse_config(MINIMAL).audit is None


def test_the_audit_section_has_its_defaults_and_per_topic_payload_capture(tmp_path: Path) -> None:
    config = parse_config(
        {
            **MINIMAL,
            "audit": {
                "dir": str(tmp_path),
                "key_file": str(tmp_path / "k"),
                "payloads": [
                    {"topics": "payments", "capture": "full"},
                    {"topics": "orders.*", "capture": "sha256"},
                ],
            },
        }
    )
    audit = config.audit
    assert isinstance(audit, AuditConfig)
    assert (audit.checkpoint_every_events, audit.group_commit_ms, audit.fail_open) == (
        1000,
        2.0,
        False,
    )
    assert audit.segment_max_bytes == 64 * 1024 * 1024
    assert audit.instance  # the host name, made safe for file names
    assert audit.capture_for("payments") == "full"
    assert audit.capture_for("orders.eu") == "sha256"
    assert audit.capture_for("payments-archive") == "none"
