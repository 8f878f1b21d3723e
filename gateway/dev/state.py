"""What `up` started, as recorded in the run dir: state.json and the lock around it.

state.json holds pids and addresses, never a secret. Every change to it (and to the
processes it describes) happens under `locked(run_dir)`, so `make run` and a test session
can share one run dir.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway.dev.credentials import (
    ADMIN_USER,
    SASL_MECHANISM,
    SECURITY_PROTOCOL,
    write_private,
)
from gateway.dev.layout import HOST, Layout, default_run_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterInfo:
    """How to reach one dev cluster. Never holds the password itself."""

    name: str
    bootstrap: str
    controller: str
    security_protocol: str
    sasl_mechanism: str
    username: str
    password_file: str
    pid: int | None
    log_file: str
    data_dir: str


def cluster_info(lay: Layout, pid: int | None) -> ClusterInfo:
    return ClusterInfo(
        name=lay.name,
        bootstrap=f"{HOST}:{lay.port}",
        controller=f"{HOST}:{lay.controller_port}",
        security_protocol=SECURITY_PROTOCOL,
        sasl_mechanism=SASL_MECHANISM,
        username=ADMIN_USER,
        password_file=str(lay.password_file),
        pid=pid,
        log_file=str(lay.log_file),
        data_dir=str(lay.data_dir),
    )


def resolve_run_dir(run_dir: Path | None) -> Path:
    """The run dir, created private to the user (it holds passwords)."""
    path = (run_dir or default_run_dir()).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def read_state(run_dir: Path) -> dict[str, ClusterInfo]:
    path = run_dir / "state.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {name: ClusterInfo(**fields) for name, fields in raw["clusters"].items()}
    except FileNotFoundError:
        return {}
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        log.warning("ignoring unreadable %s: %s", path, err)
        return {}


def write_state(run_dir: Path, clusters: dict[str, ClusterInfo]) -> None:
    doc = {"clusters": {name: dataclasses.asdict(info) for name, info in clusters.items()}}
    write_private(run_dir / "state.json", json.dumps(doc, indent=2) + "\n")


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Serialise up/down across processes (e.g. `make run` and a test session)."""
    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
