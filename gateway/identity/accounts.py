"""The configured identities: ``users`` from the config file plus the service accounts
file, which is re-read when it changes.

An invalid new version of the file is logged (naming the file and the field) and the
last good version stays in force, so a typo never locks every machine out. Names must
be unique across both sources. :class:`AccountsWatcher` checks the file periodically
while the gateway runs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway import metrics
from gateway.config import UserConfig
from gateway.errors import ConfigError
from gateway.periodic import PeriodicCheck

log = logging.getLogger(__name__)

_SOURCE = "service_accounts"  # the source label of gateway_identity_reloads_total


class _AccountsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    accounts: list[UserConfig] = Field(default_factory=list)


def load_accounts_file(path: Path) -> list[UserConfig]:
    """Read and validate a service accounts file; ConfigError names file and field."""
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read service accounts {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"service accounts {path} is not valid YAML: {exc}") from exc
    try:
        parsed = _AccountsFile.model_validate(data or {})
    except ValidationError as exc:
        lines = [f"invalid service accounts {path}:"]
        for item in exc.errors():
            where = ".".join(str(p) for p in item["loc"]) or "(top level)"
            lines.append(f"  {where}: {item['msg']}")
        raise ConfigError("\n".join(lines)) from None
    return parsed.accounts


class AccountStore:
    """Looks identities up by name or by client certificate subject."""

    def __init__(self, users: Iterable[UserConfig], file: Path | None = None) -> None:
        self._static = list(users)
        self._file = file
        self._stamp: tuple[int, int] | None = None
        self._by_name: dict[str, UserConfig] = {}
        self._by_subject: dict[str, UserConfig] = {}
        self._install(self._static)
        if file is not None:
            # At start an unreadable or invalid file is a config error, as the config is.
            self._stamp = self._file_stamp()
            self._install([*self._static, *load_accounts_file(file)])

    def _file_stamp(self) -> tuple[int, int] | None:
        assert self._file is not None
        try:
            stat = os.stat(self._file)
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def _install(self, users: list[UserConfig]) -> None:
        names = [u.name for u in users]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"duplicate identity names: {', '.join(duplicates)}")
        self._by_name = {u.name: u for u in users}
        self._by_subject = {u.tls_subject: u for u in users if u.tls_subject is not None}

    def reload_if_changed(self) -> bool:
        """Re-read the service accounts file if it changed; True when a new version
        took effect. A bad version is logged and the last good one kept."""
        if self._file is None:
            return False
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            self._install([*self._static, *load_accounts_file(self._file)])
        except ConfigError as exc:
            metrics.IDENTITY_RELOADS.labels(_SOURCE, "failure").inc()
            log.error("service accounts not reloaded, the last good version stays: %s", exc)
            return False
        metrics.IDENTITY_RELOADS.labels(_SOURCE, "success").inc()
        log.info("service accounts reloaded from %s: %d identities", self._file, len(self))
        return True

    @property
    def watches_file(self) -> bool:
        return self._file is not None

    def __len__(self) -> int:
        return len(self._by_name)

    def get(self, name: str) -> UserConfig | None:
        return self._by_name.get(name)

    def by_tls_subject(self, subject: str) -> UserConfig | None:
        return self._by_subject.get(subject)


class AccountsWatcher(PeriodicCheck[bool]):
    """Re-reads the service accounts file every ``interval`` seconds while running
    (``check()`` is True when a new version took effect).

    ``start()`` from the gateway's start, ``await stop()`` from its stop. The file is
    read on a worker thread so that a large file never stalls client traffic.
    """

    def __init__(self, accounts: AccountStore, interval: float) -> None:
        super().__init__("checking the service accounts file", interval, accounts.reload_if_changed)
        self._accounts = accounts

    def start(self) -> None:
        if self._accounts.watches_file:
            super().start()
