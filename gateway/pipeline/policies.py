"""The policy in force: loaded at start, replaced whole and atomically on reload.

A reload reads and validates every file of the directory before anything changes: an
invalid set leaves the policy in force untouched and is reported (log, metric, the
admin API's answer). Requests read :attr:`PolicyStore.current` once, at their start, so
each decision is made under exactly one version, and the next request of every open
connection gets the new one.
"""

from __future__ import annotations

import logging
from pathlib import Path

from gateway.errors import PolicyError
from gateway.policy.loader import Policy, load_policy_dir

log = logging.getLogger(__name__)


class PolicyStore:
    """The policy of ``directory`` (None: no policy configured, nothing is authorized
    and nothing denied)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._current: Policy | None = None
        self.last_error: str | None = None
        if directory is not None:
            # At start an invalid policy stops the gateway: there is no old one to keep.
            self._current = load_policy_dir(directory)
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

    def reload(self) -> bool:
        """Read the directory again; True when a new, valid policy took effect. An invalid
        one keeps the old policy and is kept in :attr:`last_error`."""
        if self.directory is None:
            return False
        try:
            policy = load_policy_dir(self.directory)
        except PolicyError as exc:
            self.last_error = str(exc)
            log.error("policy not reloaded, version %s stays: %s", self.version, exc)
            return False
        self.last_error = None
        if self._current is not None and policy.version == self._current.version:
            return False
        old, self._current = self.version, policy
        log.info("policy %s replaced %s", policy.version, old)
        return True

    @property
    def version(self) -> str | None:
        return self._current.version if self._current is not None else None
