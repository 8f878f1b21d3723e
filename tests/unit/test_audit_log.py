"""``AuditLog`` on real files: group commit, durability before return, fail closed and
self-recovery, fail open, restart, the key file's permissions."""

from __future__ import annotations

import asyncio
import errno
import os
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from gateway.audit import keys, read_events, segments
from gateway.audit.log import AuditLog
from gateway.audit.verify import verify
from gateway.config import AuditConfig
from gateway.errors import AuditUnavailable, ConfigError
from tests.unit.audit_helpers import INSTANCE, event


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit.key"
    keys.generate(path)
    return path


def config(tmp_path: Path, key_file: Path, **overrides: Any) -> AuditConfig:
    values: dict[str, Any] = {"dir": tmp_path / "audit", "key_file": key_file}
    values["instance_id"] = INSTANCE
    values.update(overrides)
    return AuditConfig(**values)


def public(key_file: Path) -> Any:
    return keys.load_private(key_file).public_key()


def requests_in(directory: Path) -> list[int]:
    return [line["n"] for line in read_events(directory) if line["type"] == "request"]


async def until(condition: Any) -> None:
    """Wait for the writer thread to reach ``condition`` (bounded by the test timeout)."""
    while not condition():
        await asyncio.sleep(0.01)


async def test_concurrent_appends_share_fsyncs_and_are_durable_when_they_return(
    tmp_path: Path, key_file: Path
) -> None:
    log = AuditLog(config(tmp_path, key_file, group_commit_ms=5))
    await log.start()
    await asyncio.gather(*(log.append(event(n)) for n in range(200)))
    # Every append returned: every event is in the file already, before close.
    assert sorted(requests_in(tmp_path / "audit")) == list(range(200))
    assert log.writer.fsyncs < 200
    await log.close()
    report = verify([tmp_path / "audit"], public(key_file))[0]
    assert report.ok and report.unsealed is None


async def test_close_seals_the_log_and_a_restart_continues_its_chain(
    tmp_path: Path, key_file: Path
) -> None:
    first = AuditLog(config(tmp_path, key_file))
    await first.start()
    for n in range(3):
        await first.append(event(n))
    await first.close()
    second = AuditLog(config(tmp_path, key_file))
    await second.start()
    await second.append(event(3))
    await second.close()
    assert requests_in(tmp_path / "audit") == [0, 1, 2, 3]
    assert len(segments.find([tmp_path / "audit"])) == 2
    assert verify([tmp_path / "audit"], public(key_file))[0].ok


async def test_a_failed_fsync_fails_closed_and_the_log_recovers_by_itself(
    tmp_path: Path, key_file: Path
) -> None:
    log = AuditLog(config(tmp_path, key_file))
    await log.start()
    await log.append(event(0))
    failing = True
    real_fsync = log.writer._os_fsync

    def fsync(fd: int) -> None:
        if failing:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    log.writer._os_fsync = fsync  # type: ignore[method-assign]
    with pytest.raises(AuditUnavailable):
        await log.append(event(1))
    assert not log.healthy
    assert log.unhealthy_reason is not None and "ENOSPC" in log.unhealthy_reason
    with pytest.raises(AuditUnavailable):  # refused at once while unhealthy
        await log.append(event(2))
    with pytest.raises(AuditUnavailable):  # and before a request reaches the cluster
        log.ensure_writable()

    failing = False
    await until(lambda: log.healthy)
    assert log.unhealthy_reason is None
    await log.append(event(3))
    await log.close()
    directory = tmp_path / "audit"
    # The refused events were never acknowledged and are not in the log; the outage is.
    assert requests_in(directory) == [0, 3]
    outage = next(line for line in read_events(directory) if line["type"] == "audit_unavailable")
    assert outage["reason"].startswith("ENOSPC") and outage["fail_open"] is False
    # Two appends and one request refused before it was forwarded.
    assert outage["refused"] == 3
    assert verify([directory], public(key_file))[0].ok


async def test_a_segment_that_cannot_be_created_fails_closed_until_it_can(
    tmp_path: Path, key_file: Path
) -> None:
    # Tests may run as root, which chmod does not stop: a directory where the next
    # segment file must go refuses its creation for everyone.
    log = AuditLog(config(tmp_path, key_file, segment_max_bytes=1))
    await log.start()
    await log.append(event(0))
    # The next write rotates: a checkpoint (seq + 0) ends this segment, the new one
    # starts at seq + 1.
    blocked = tmp_path / "audit" / segments.name(INSTANCE, log.writer.seq + 1)
    blocked.mkdir()
    with pytest.raises(AuditUnavailable):
        await log.append(event(1))
    assert not log.healthy
    assert log.unhealthy_reason is not None and "EISDIR" in log.unhealthy_reason

    blocked.rmdir()
    await until(lambda: log.healthy)
    await log.append(event(2))
    await log.close()
    assert requests_in(tmp_path / "audit") == [0, 2]
    assert verify([tmp_path / "audit"], public(key_file))[0].ok


async def test_fail_open_never_raises_and_records_the_outage_when_writing_works_again(
    tmp_path: Path, key_file: Path
) -> None:
    log = AuditLog(config(tmp_path, key_file, fail_open=True))
    await log.start()
    failing = True
    real_write = log.writer._os_write

    def write(fd: int, data: memoryview) -> int:
        if failing:
            raise OSError(errno.EIO, "Input/output error")
        return real_write(fd, data)

    log.writer._os_write = write  # type: ignore[method-assign]
    await log.append(event(0))  # no error: served unrecorded
    assert not log.healthy
    await log.append(event(1))
    failing = False
    await until(lambda: log.healthy)
    await log.close()
    outage = next(
        line for line in read_events(tmp_path / "audit") if line["type"] == "audit_unavailable"
    )
    assert outage["fail_open"] is True and outage["unrecorded"] == 2
    assert outage["reason"].startswith("EIO")


async def test_an_event_json_cannot_hold_is_refused_alone(tmp_path: Path, key_file: Path) -> None:
    log = AuditLog(config(tmp_path, key_file))
    await log.start()
    with pytest.raises(AuditUnavailable):
        await log.append({"type": "request", "latency_ms": float("nan")})
    assert log.healthy
    await log.append(event(1))
    await log.close()
    assert requests_in(tmp_path / "audit") == [1]


async def test_a_key_file_others_can_read_is_refused_at_start(
    tmp_path: Path, key_file: Path
) -> None:
    os.chmod(key_file, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        await AuditLog(config(tmp_path, key_file)).start()


def _sample(name: str, labels: dict[str, str] | None = None) -> float:
    value = REGISTRY.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


async def test_metrics_count_events_bytes_checkpoints_fsyncs_failures_and_health(
    tmp_path: Path, key_file: Path
) -> None:
    before = {
        "events": _sample("gateway_audit_events_total", {"type": "request"}),
        "checkpoints": _sample("gateway_audit_checkpoints_total"),
        "bytes": _sample("gateway_audit_bytes_total"),
        "fsyncs": _sample("gateway_audit_fsync_seconds_count"),
        "failures": _sample("gateway_audit_failures_total", {"reason": "EIO"}),
    }
    log = AuditLog(config(tmp_path, key_file))
    await log.start()
    await log.append(event(0))
    failing = True
    real_fsync = log.writer._os_fsync

    def fsync(fd: int) -> None:
        if failing:
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    log.writer._os_fsync = fsync  # type: ignore[method-assign]
    with pytest.raises(AuditUnavailable):
        await log.append(event(1))
    assert _sample("gateway_audit_healthy") == 0
    failing = False
    await until(lambda: log.healthy)
    assert _sample("gateway_audit_healthy") == 1
    await log.close()
    assert _sample("gateway_audit_events_total", {"type": "request"}) == before["events"] + 1
    assert _sample("gateway_audit_checkpoints_total") == before["checkpoints"] + 1
    assert _sample("gateway_audit_bytes_total") > before["bytes"]
    assert _sample("gateway_audit_fsync_seconds_count") > before["fsyncs"]
    assert _sample("gateway_audit_failures_total", {"reason": "EIO"}) > before["failures"]


async def test_a_log_whose_last_whole_line_was_altered_is_not_continued(
    tmp_path: Path, key_file: Path
) -> None:
    first = AuditLog(config(tmp_path, key_file))
    await first.start()
    await first.append(event(0))
    await first.close()
    segment = segments.find([tmp_path / "audit"])[-1].path
    segment.write_bytes(segment.read_bytes().replace(b'"time":', b'"tyme":'))
    with pytest.raises(AuditUnavailable, match="damaged"):
        await AuditLog(config(tmp_path, key_file)).start()


async def test_timed_checkpoints_are_written_while_events_keep_arriving(
    tmp_path: Path, key_file: Path
) -> None:
    log = AuditLog(config(tmp_path, key_file, segment_max_seconds=10**9))
    await log.start()
    # A minute passes at every look at the clock: a checkpoint is due after each commit.
    minutes = iter(range(1, 10**9))
    log.writer._monotonic = lambda: time.monotonic() + 60.0 * next(minutes)
    for n in range(3):
        await log.append(event(n))
    types = [line["type"] for line in read_events(tmp_path / "audit")]
    # The third one's checkpoint may still be on its way: the append returned first.
    assert types[:5] == ["request", "checkpoint", "request", "checkpoint", "request"]
    await log.close()
