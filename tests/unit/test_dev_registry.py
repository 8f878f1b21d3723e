"""The dev schema registry's process handling, with a stand-in ``run`` script (the real
Karapace runs in the integration tests): start waits until it answers, status knows it
by pid and start time, stop ends it, and a registry that fails to start is reported
with its log, never with the admin password."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from gateway.dev import registry
from gateway.dev.errors import DevError
from gateway.dev.state import ClusterInfo

PASSWORD = "s3cret-admin-password"  # noqa: S105 - a stand-in cluster's password


def primary(tmp_path: Path) -> ClusterInfo:
    password_file = tmp_path / "admin.password"
    password_file.write_text(PASSWORD)
    return ClusterInfo(
        name="primary",
        bootstrap="127.0.0.1:1",
        controller="127.0.0.1:2",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        username="gateway-admin",
        password_file=str(password_file),
        pid=None,
        log_file=str(tmp_path / "kafka.log"),
        data_dir=str(tmp_path / "data"),
        bootstrap_servers="127.0.0.1:1",
        nodes=(),
    )


def stand_in(tmp_path: Path, body: str) -> Path:
    folder = tmp_path / "karapace"
    folder.mkdir()
    script = folder / "run"
    script.write_text("#!/usr/bin/env bash\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return folder


@pytest.fixture
def port(monkeypatch: pytest.MonkeyPatch) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = int(sock.getsockname()[1])
    monkeypatch.setenv("GATEWAY_DEV_PRIMARY_PORT", str(free - registry.PORT_OFFSET))
    return free


def test_start_waits_until_it_answers_and_stop_ends_it(
    tmp_path: Path, port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "subjects").write_text("[]")
    folder = stand_in(
        tmp_path,
        f'while [ "$1" != "--port" ]; do shift; done\n'
        f'exec {sys.executable} -m http.server "$2" --bind 127.0.0.1 --directory {site}\n',
    )
    monkeypatch.setenv(registry.KARAPACE_DIR_ENV, str(folder))
    run = tmp_path / "run"
    run.mkdir()
    info = registry.start(run, primary(tmp_path), timeout=30)
    assert info is not None and info.url == f"http://127.0.0.1:{port}"
    seen = registry.status(run)
    assert seen is not None and seen.running and seen.pid == info.pid
    registry.stop(run)
    after = registry.status(run)
    assert after is not None and not after.running
    assert info.pid is not None and not Path(f"/proc/{info.pid}").exists()


def test_a_registry_that_exits_is_reported_with_its_log_and_no_password(
    tmp_path: Path, port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = stand_in(tmp_path, f'echo "login failed for gateway-admin/{PASSWORD}" >&2\nexit 3\n')
    monkeypatch.setenv(registry.KARAPACE_DIR_ENV, str(folder))
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(DevError) as failed:
        registry.start(run, primary(tmp_path), timeout=30)
    assert "exited during start-up" in str(failed.value)
    assert "login failed for gateway-admin/***" in str(failed.value)
    assert PASSWORD not in str(failed.value)


def test_without_its_folder_nothing_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(registry.KARAPACE_DIR_ENV, str(tmp_path / "absent"))
    assert registry.karapace_dir() is None
    assert registry.start(tmp_path, primary(tmp_path)) is None
    assert not os.path.exists(tmp_path / "registry.json")
