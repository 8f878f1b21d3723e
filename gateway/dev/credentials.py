"""The admin SCRAM credential of each dev cluster and the files that carry it.

The password is generated once per cluster and lives only in 0600 files of the run dir
(`admin.password`, `server.properties`, `client.properties`); nothing else in this
package may print, log or record it (`redact` scrubs it from tool output).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

ADMIN_USER = "gateway-admin"
SECURITY_PROTOCOL = "SASL_PLAINTEXT"
SASL_MECHANISM = "SCRAM-SHA-256"
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")


class _HasPasswordFile(Protocol):
    @property
    def password_file(self) -> str: ...


def write_private(path: Path, text: str) -> None:
    """Atomically write a file only the owner can read (it may hold a password)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def ensure_password(password_file: Path, data_dirs: Iterable[Path]) -> str:
    """Return the cluster's admin password, creating it (and wiping old data) if new."""
    if password_file.is_file():
        password = password_file.read_text(encoding="utf-8").strip()
        if password:
            return password
    # Data formatted with a lost password is unusable: start that cluster afresh.
    for data_dir in data_dirs:
        if data_dir.exists():
            shutil.rmtree(data_dir)
    password = secrets.token_urlsafe(24)
    write_private(password_file, password)
    return password


def jaas(password: str) -> str:
    return (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{ADMIN_USER}" password="{password}";'
    )


def client_properties(password: str) -> str:
    return (
        f"security.protocol={SECURITY_PROTOCOL}\n"
        f"sasl.mechanism={SASL_MECHANISM}\n"
        f"sasl.jaas.config={jaas(password)}\n"
    )


def read_password(info: _HasPasswordFile) -> str:
    """The admin password of a dev cluster (from its 0600 password file)."""
    return Path(info.password_file).read_text(encoding="utf-8").strip()


def client_config_file(info: _HasPasswordFile) -> str:
    """Path of a 0600 client.properties for Kafka's Java tools (`--command-config`)."""
    return str(Path(info.password_file).with_name("client.properties"))


def redact(text: str, password: str | None) -> str:
    return text.replace(password, "***") if password else text
