"""The policy in force: loaded at start, replaced whole and atomically on reload.

A reload reads and validates every file of the directory before anything changes: an
invalid set leaves the policy in force untouched and is reported (log, metric, the
admin API's answer). Requests read :attr:`PolicyStore.current` once, at their start, so
each decision is made under exactly one version, and the next request of every open
connection gets the new one.

Three things ask for a reload: :class:`PolicyWatcher` (every
``policy.reload_interval_seconds``, only when the directory's fingerprint changed),
SIGHUP and ``POST /policy/reload``. They may overlap; one lock makes their reloads
run one after the other, never interleaved. Reloads read files, so callers on the
event loop run them on a worker thread. Nothing here serves requests or speaks HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePath
from typing import Literal

from gateway import metrics
from gateway.errors import PolicyError
from gateway.periodic import PeriodicCheck
from gateway.policy.loader import Policy, load_policy_dir

log = logging.getLogger(__name__)

ReloadResult = Literal["success", "failure", "unchanged"]

# (name, size, mtime_ns, inode) of every *.yaml file, sorted; None when the directory
# is unreadable. Cheap to take every interval; a change is confirmed by the content
# hash. The inode catches editors and deploy tools that replace a file by renaming a
# new one over it within one mtime tick.
Fingerprint = tuple[tuple[str, int, int, int], ...] | None


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    """What the last load or reload did, when (seconds since the epoch), and the
    problems of a refused set (one line each, naming file, line and field)."""

    result: ReloadResult
    at: float
    problems: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class ReloadReport:
    """A reload that applied or refused a set: the versions before and after, what
    triggered it (watcher, signal, admin) and who asked (the admin caller)."""

    outcome: ReloadOutcome
    old_version: str | None
    new_version: str | None
    trigger: str
    by: str | None


def fingerprint(directory: Path) -> Fingerprint:
    try:
        with os.scandir(directory) as entries:
            found = []
            for entry in entries:
                if entry.name.endswith(".yaml") and entry.is_file():
                    stat = entry.stat()
                    found.append((entry.name, stat.st_size, stat.st_mtime_ns, entry.inode()))
    except OSError:
        return None
    return tuple(sorted(found))


class PolicyStore:
    """The policy of ``directory`` (None: no policy configured, nothing is authorized
    and nothing denied)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._current: Policy | None = None
        self.last_error: str | None = None
        self.last_reload: ReloadOutcome | None = None
        self._lock = threading.Lock()
        self._fingerprint: Fingerprint = None
        # Told of every reload that applied or refused a set (the audit log listens);
        # called on the thread that reloaded, under the store's lock.
        self.on_reload: Callable[[ReloadReport], None] | None = None
        if directory is not None:
            # Taken before reading: a change during the read is seen by the next check.
            self._fingerprint = fingerprint(directory)
            # At start an invalid policy stops the gateway: there is no old one to keep.
            self._current = load_policy_dir(directory)
            self.last_reload = ReloadOutcome("success", time.time())
            self._publish(None, self._current)
            log.info(
                "policy %s loaded from %s: %d files",
                self._current.version,
                directory,
                len(self._current.files),
            )

    @property
    def current(self) -> Policy | None:
        return self._current

    @property
    def enforced(self) -> bool:
        return self._current is not None

    @property
    def version(self) -> str | None:
        return self._current.version if self._current is not None else None

    def reload(self) -> bool:
        """Read the directory again; True when a new, valid policy took effect. An invalid
        one keeps the old policy and is kept in :attr:`last_error`."""
        outcome = self.reload_now()
        return outcome is not None and outcome.result == "success"

    def reload_now(self, trigger: str = "admin", by: str | None = None) -> ReloadOutcome | None:
        """Read the directory again, whatever its fingerprint; None when no policy is
        configured. ``trigger`` (admin, signal) and ``by`` (who asked) are reported."""
        if self.directory is None:
            return None
        with self._lock:
            return self._reload_locked(self.directory, fingerprint(self.directory), trigger, by)

    def reload_if_changed(self) -> ReloadOutcome | None:
        """Reload when the directory's fingerprint changed since the last look; None
        when it did not (or no policy is configured)."""
        if self.directory is None:
            return None
        with self._lock:
            seen = fingerprint(self.directory)
            if seen == self._fingerprint:
                return None
            return self._reload_locked(self.directory, seen, "watcher", None)

    def _reload_locked(
        self, directory: Path, seen: Fingerprint, trigger: str, by: str | None
    ) -> ReloadOutcome:
        old_version = self.version
        # Remembered even for a refused set: the same broken files are reported once,
        # not every interval, and the next edit is looked at again.
        self._fingerprint = seen
        try:
            policy = load_policy_dir(directory)
        except PolicyError as exc:
            self.last_error = str(exc)
            outcome = ReloadOutcome("failure", time.time(), exc.problems)
            metrics.POLICY_RELOAD_FAILING.set(1)
            log.error("policy not reloaded, version %s stays: %s", self.version, exc)
        else:
            self.last_error = None
            old = self._current
            if old is not None and policy.version == old.version:
                outcome = ReloadOutcome("unchanged", time.time())
                log.info("policy files touched, contents unchanged: version %s", old.version)
            else:
                self._current = policy
                outcome = ReloadOutcome("success", time.time())
                log.info("policy %s replaced %s", policy.version, _version_of(old))
            self._publish(old, self._current)
        self.last_reload = outcome
        metrics.POLICY_RELOADS.labels(outcome.result).inc()
        if self.on_reload is not None and outcome.result != "unchanged":
            report = ReloadReport(outcome, old_version, self.version, trigger, by)
            try:
                self.on_reload(report)
            except Exception:
                # The reload took effect (or was refused) either way; its report is lost.
                log.exception("policy reload %s could not be reported", outcome.result)
        return outcome

    @staticmethod
    def _publish(old: Policy | None, new: Policy | None) -> None:
        """The metrics of a valid set now in force (the old version's label goes)."""
        if old is not None and new is not None and old.version != new.version:
            with contextlib.suppress(KeyError):
                metrics.POLICY_INFO.remove(old.version)
        if new is not None:
            metrics.POLICY_INFO.labels(new.version).set(1)
            metrics.POLICY_RULES.set(len(new.rules))
        metrics.POLICY_RELOAD_FAILING.set(0)

    def status(self) -> dict[str, object]:
        """The policy in force and the last reload, as the admin API answers them."""
        policy, last = self._current, self.last_reload
        return {
            "enforced": policy is not None,
            "version": _version_of(policy),
            "directory": str(self.directory) if self.directory is not None else None,
            "files": [PurePath(f).name for f in policy.files] if policy is not None else [],
            "rules": len(policy.rules) if policy is not None else 0,
            "last_reload": None
            if last is None
            else {
                "result": last.result,
                "at": _rfc3339(last.at),
                "error": list(last.problems) if last.problems is not None else None,
            },
        }


def _version_of(policy: Policy | None) -> str | None:
    return policy.version if policy is not None else None


def _rfc3339(at: float) -> str:
    moment = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")


class PolicyWatcher(PeriodicCheck[ReloadOutcome | None]):
    """Checks the policy directory every ``interval`` seconds while running.

    ``start()`` from the gateway's start, ``await stop()`` from its stop; nothing runs
    when no directory is configured. Each check runs on a worker thread, so reading
    and validating the files never stalls client traffic.
    """

    def __init__(self, store: PolicyStore, interval: float) -> None:
        super().__init__("checking the policy directory", interval, store.reload_if_changed)
        self._store = store

    def start(self) -> None:
        if self._store.directory is not None:
            super().start()


async def reload_on_signal(store: PolicyStore) -> ReloadOutcome | None:
    """SIGHUP's reload: on a worker thread, its outcome logged; without a configured
    policy directory only a warning (the signal must never stop the gateway)."""
    if store.directory is None:
        log.warning("SIGHUP: no policy.dir configured, nothing to reload")
        return None
    try:
        outcome = await asyncio.to_thread(store.reload_now, "signal")
    except Exception:
        log.exception("SIGHUP: reloading the policy failed")
        return None
    if outcome is not None:
        log.info("SIGHUP: policy reload %s, version %s in force", outcome.result, store.version)
    return outcome
