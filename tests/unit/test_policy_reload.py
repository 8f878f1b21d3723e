"""Hot reload of the policy: the store swaps whole, valid sets only; the watcher and
SIGHUP reload without stopping anything; metrics say what is in force."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from gateway.errors import PolicyError
from gateway.pipeline import policies
from gateway.pipeline.policies import PolicyStore, PolicyWatcher, reload_on_signal
from gateway.policy.loader import Policy

READ_ORDERS = b"""\
rules:
  - id: read-orders
    effect: allow
    subjects: {principals: [alice]}
    resources:
      - {type: topic, literal: orders}
    operations: [read]
"""
WRITE_ORDERS = READ_ORDERS.replace(b"read-orders", b"write-orders").replace(
    b"[read]", b"[read, write]"
)
BROKEN = b"rules:\n  - id: bad\n    effect: perhaps\n"


def _metric(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def _reloads(result: str) -> float:
    return _metric("gateway_policy_reloads_total", result=result) or 0.0


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    # A rewrite within the file system's timestamp granularity and of the same size
    # would look unchanged to the fingerprint; tests move mtime on explicitly.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "apps.yaml").write_bytes(READ_ORDERS)
    return directory


def test_a_valid_change_takes_effect_whole_and_bumps_the_version(policy_dir: Path) -> None:
    store = PolicyStore(policy_dir)
    before: Policy | None = store.current
    successes = _reloads("success")

    _write(policy_dir / "apps.yaml", WRITE_ORDERS)
    took_effect = store.reload()

    assert took_effect
    assert before is not None and store.current is not None
    assert store.version != before.version
    assert [r.id for r in store.current.rules] == ["write-orders"]
    # The old policy object is untouched: a request that read it keeps one version.
    assert [r.id for r in before.rules] == ["read-orders"]
    assert _reloads("success") == successes + 1
    assert _metric("gateway_policy_info", version=store.version) == 1
    assert _metric("gateway_policy_info", version=before.version) is None
    assert _metric("gateway_policy_rules") == 1
    assert store.last_reload is not None and store.last_reload.result == "success"


def test_an_invalid_file_keeps_the_old_policy_and_reports_the_failure(policy_dir: Path) -> None:
    store = PolicyStore(policy_dir)
    version = store.version
    failures = _reloads("failure")

    (policy_dir / "broken.yaml").write_bytes(BROKEN)
    took_effect = store.reload()

    assert not took_effect
    assert store.version == version
    assert store.last_error is not None and "broken.yaml:3" in store.last_error
    assert store.last_reload is not None and store.last_reload.result == "failure"
    assert store.last_reload.problems is not None
    assert any("rules[0].effect" in p for p in store.last_reload.problems)
    assert _metric("gateway_policy_reload_failing") == 1
    assert _reloads("failure") == failures + 1
    assert _metric("gateway_policy_info", version=str(version)) == 1

    (policy_dir / "broken.yaml").unlink()
    store.reload()

    assert _metric("gateway_policy_reload_failing") == 0
    assert store.last_error is None


def test_removing_every_file_is_refused(policy_dir: Path) -> None:
    store = PolicyStore(policy_dir)
    version = store.version

    (policy_dir / "apps.yaml").unlink()
    outcome = store.reload_now()

    assert outcome is not None and outcome.result == "failure"
    assert outcome.problems is not None and "no *.yaml policy files" in outcome.problems[0]
    assert store.version == version and store.enforced


def test_touched_files_with_the_same_contents_count_as_unchanged(policy_dir: Path) -> None:
    store = PolicyStore(policy_dir)
    policy = store.current
    unchanged = _reloads("unchanged")

    _write(policy_dir / "apps.yaml", READ_ORDERS)
    outcome = store.reload_if_changed()

    assert outcome is not None and outcome.result == "unchanged"
    assert store.current is policy
    assert _reloads("unchanged") == unchanged + 1


def test_the_watcher_check_does_nothing_while_the_fingerprint_is_the_same(
    policy_dir: Path,
) -> None:
    store = PolicyStore(policy_dir)
    counts = [_reloads(r) for r in ("success", "failure", "unchanged")]

    assert store.reload_if_changed() is None
    assert [_reloads(r) for r in ("success", "failure", "unchanged")] == counts


def test_a_refused_set_is_reported_once_until_it_changes_again(policy_dir: Path) -> None:
    store = PolicyStore(policy_dir)
    (policy_dir / "broken.yaml").write_bytes(BROKEN)

    first = store.reload_if_changed()
    again = store.reload_if_changed()
    _write(policy_dir / "broken.yaml", READ_ORDERS.replace(b"read-orders", b"more"))
    fixed = store.reload_if_changed()

    assert first is not None and first.result == "failure"
    assert again is None
    assert fixed is not None and fixed.result == "success"
    assert store.current is not None and len(store.current.rules) == 2


def test_concurrent_reloads_do_not_interleave(
    policy_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PolicyStore(policy_dir)
    inside, most = 0, 0
    counting = threading.Lock()
    real_load = policies.load_policy_dir

    def slow_load(directory: Path) -> Policy:
        nonlocal inside, most
        with counting:
            inside += 1
            most = max(most, inside)
        time.sleep(0.005)  # widens the window in which an unlocked reload would overlap
        try:
            return real_load(directory)
        finally:
            with counting:
                inside -= 1

    monkeypatch.setattr(policies, "load_policy_dir", slow_load)
    threads = [threading.Thread(target=store.reload_now) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert most == 1


def test_no_directory_means_nothing_enforced_and_nothing_to_reload() -> None:
    store = PolicyStore(None)

    assert not store.enforced
    assert store.reload_now() is None
    assert not store.reload()
    assert store.status()["last_reload"] is None


def test_status_names_files_rules_and_the_last_reload(policy_dir: Path) -> None:
    store = PolicyStore(policy_dir)

    status = store.status()

    assert status["enforced"] is True
    assert status["version"] == store.version
    assert status["directory"] == str(policy_dir)
    assert status["files"] == ["apps.yaml"]
    assert status["rules"] == 1
    last = status["last_reload"]
    assert isinstance(last, dict)
    assert last["result"] == "success" and last["error"] is None
    at = datetime.fromisoformat(str(last["at"]))
    assert str(last["at"]).endswith("Z") and at.utcoffset() == timedelta(0)


def test_an_invalid_policy_at_start_still_stops_the_gateway(policy_dir: Path) -> None:
    (policy_dir / "broken.yaml").write_bytes(BROKEN)

    with pytest.raises(PolicyError):
        PolicyStore(policy_dir)


async def _until(condition: object, what: str) -> None:
    for _ in range(500):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def test_the_watcher_picks_up_a_change_and_stops(policy_dir: Path) -> None:
    store = PolicyStore(policy_dir)
    version = store.version
    watcher = PolicyWatcher(store, interval=0.01)

    watcher.start()
    _write(policy_dir / "apps.yaml", WRITE_ORDERS)
    await _until(lambda: store.version != version, "the new version in force")
    await watcher.stop()

    assert not watcher.running
    assert store.current is not None and store.current.rules[0].id == "write-orders"


async def test_the_watcher_survives_an_error_and_tries_again(
    policy_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PolicyStore(policy_dir)
    version = store.version
    real = store.reload_if_changed
    calls = 0

    def failing_once() -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("the disk went away for a moment")
        return real()

    monkeypatch.setattr(store, "reload_if_changed", failing_once)
    watcher = PolicyWatcher(store, interval=0.01)
    _write(policy_dir / "apps.yaml", WRITE_ORDERS)
    watcher.start()
    await _until(lambda: store.version != version, "the new version after an error")
    await watcher.stop()

    assert calls >= 2


async def test_the_watcher_does_not_start_without_a_directory() -> None:
    watcher = PolicyWatcher(PolicyStore(None), interval=0.01)

    watcher.start()

    assert not watcher.running
    await watcher.stop()


async def test_sighup_reloads_and_logs_the_outcome(
    policy_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = PolicyStore(policy_dir)
    _write(policy_dir / "apps.yaml", WRITE_ORDERS)

    with caplog.at_level(logging.INFO, logger="gateway.pipeline.policies"):
        outcome = await reload_on_signal(store)

    assert outcome is not None and outcome.result == "success"
    assert f"SIGHUP: policy reload success, version {store.version}" in caplog.text


async def test_sighup_without_a_policy_only_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.pipeline.policies"):
        outcome = await reload_on_signal(PolicyStore(None))

    assert outcome is None
    assert "no policy.dir configured" in caplog.text


def test_a_file_renamed_over_with_the_same_size_and_mtime_is_still_seen(
    policy_dir: Path,
) -> None:
    store = PolicyStore(policy_dir)
    target = policy_dir / "apps.yaml"
    replacement = policy_dir / "apps.yaml.new"
    replacement.write_bytes(READ_ORDERS.replace(b"alice", b"bobby"))
    stat = target.stat()
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    os.replace(replacement, target)
    outcome = store.reload_if_changed()

    assert outcome is not None and outcome.result == "success"
    assert store.current is not None and "bobby" in store.current.rules[0].subjects.principals
