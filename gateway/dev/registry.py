"""A real, independent Confluent-compatible schema registry beside the dev clusters:
Karapace 3.16.0 (Aiven's Apache-2.0 implementation), when its folder is present.

The folder is ``$GATEWAY_KARAPACE_DIR``, else ``shared/tools/karapace`` next to the
repository (``<repo>/../shared/tools/karapace``); its ``run`` script builds Karapace's
own virtualenv once and starts it. `up` starts it after the clusters, logging in to the
primary with the dev admin's SCRAM credentials and keeping its schemas in the
``_schemas`` topic there (replicated to every primary node); it listens on loopback at
the primary's first port + 90 (19182 by default). `down` stops it before the brokers.
What runs is recorded in ``<run>/registry.json`` (pid, URL; no secrets) and its output
goes to ``<run>/registry/karapace.log``. The gateway never imports Karapace; it and the
tests talk to it over HTTP like any registry.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from gateway.dev import processes
from gateway.dev.credentials import redact
from gateway.dev.errors import DevError
from gateway.dev.layout import HOST, PORT_ENV, first_port
from gateway.dev.state import ClusterInfo

KARAPACE_DIR_ENV = "GATEWAY_KARAPACE_DIR"
PORT_OFFSET = 90
TOPIC = "_schemas"
# The first start builds Karapace's virtualenv from PyPI (15-20 s, more on a slow link).
START_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 20.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistryInfo:
    """The dev schema registry: where it answers and what runs it. ``started`` is the
    process's start time (clock ticks since boot, /proc/<pid>/stat), so that a pid the
    system has since given to another process is never taken for it."""

    url: str
    pid: int | None
    log_file: str
    topic: str = TOPIC
    started: int | None = None

    @property
    def running(self) -> bool:
        return self.pid is not None


def karapace_dir() -> Path | None:
    """Karapace's folder, or None where it is absent."""
    env = os.environ.get(KARAPACE_DIR_ENV)
    repo = Path(__file__).resolve().parents[2]
    candidate = Path(env) if env else repo.parent / "shared" / "tools" / "karapace"
    return candidate if (candidate / "run").is_file() else None


def registry_port() -> int:
    return first_port("primary") + PORT_OFFSET


def _state_file(run: Path) -> Path:
    return run / "registry.json"


def _log_file(run: Path) -> Path:
    folder = run / "registry"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder / "karapace.log"


def _start_time(pid: int) -> int | None:
    """The start time of process ``pid`` (field 22 of /proc/<pid>/stat), None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _alive(info: RegistryInfo) -> bool:
    """Whether the process ``up`` started for ``info`` still runs: the same pid with the
    same start time (the run script, while it builds the virtualenv, then Karapace)."""
    if info.pid is None or info.started is None:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(info.pid, os.WNOHANG)
    return _start_time(info.pid) == info.started


def _exited(pid: int) -> bool:
    """Whether our child ``pid`` (the run script, which becomes Karapace) has exited."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return not Path(f"/proc/{pid}").exists()
    return done == pid


def _recorded(run: Path) -> RegistryInfo | None:
    try:
        fields = json.loads(_state_file(run).read_text(encoding="utf-8"))
        return RegistryInfo(
            fields["url"], fields.get("pid"), fields["log_file"], started=fields.get("started")
        )
    except (OSError, ValueError, KeyError):
        return None


def status(run: Path) -> RegistryInfo | None:
    """The registry `up` started here (pid None when it no longer runs), or None when
    none was ever started."""
    info = _recorded(run)
    if info is None:
        return None
    return info if _alive(info) else RegistryInfo(info.url, None, info.log_file)


def _answers(url: str) -> bool:
    try:
        # An http:// URL this module built from loopback and a port, never from input.
        with urllib.request.urlopen(f"{url}/subjects", timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start(run: Path, primary: ClusterInfo, timeout: float = START_TIMEOUT_S) -> RegistryInfo | None:
    """Start Karapace against ``primary`` (no-op when it runs); None without its folder."""
    folder = karapace_dir()
    if folder is None:
        return None
    running = status(run)
    if running is not None and running.running and _answers(running.url):
        return running
    port = registry_port()
    url = f"http://{HOST}:{port}"
    if processes.port_answers(HOST, port):
        raise DevError(
            f"port {port} (the dev schema registry's: {PORT_ENV['primary']} + {PORT_OFFSET}) "
            "is taken by another process"
        )
    log_file = _log_file(run)
    offset = processes.open_log(log_file, "karapace")
    argv = [
        str(folder / "run"),
        "--bootstrap", primary.bootstrap_servers,
        "--port", str(port),
        "--host", HOST,
        "--topic", TOPIC,
        "--replication-factor", str(len(primary.nodes) or 1),
        "--sasl-mechanism", primary.sasl_mechanism,
        "--sasl-username", primary.username,
        "--sasl-password-file", primary.password_file,
        "--ready-timeout", str(int(timeout)),
    ]  # fmt: skip
    pid = processes.spawn(argv, log_file)
    info = RegistryInfo(url, pid, str(log_file), started=_start_time(pid))
    _state_file(run).write_text(json.dumps(asdict(info)), encoding="utf-8")
    log.info("starting the dev schema registry (Karapace) on %s", url)
    deadline = time.monotonic() + timeout
    while not _answers(url):
        if _exited(pid):
            raise DevError(
                "the dev schema registry exited during start-up:\n"
                + _tail(log_file, offset, primary)
            )
        if time.monotonic() > deadline:
            stop(run)
            raise DevError(
                f"the dev schema registry did not answer within {timeout:.0f}s:\n"
                + _tail(log_file, offset, primary)
            )
        time.sleep(0.2)
    return info


def _tail(log_file: Path, offset: int, primary: ClusterInfo) -> str:
    """The log's last lines since ``offset``, never with the admin password in them."""
    try:
        password: str | None = Path(primary.password_file).read_text(encoding="utf-8").strip()
    except OSError:
        password = None
    return redact(processes.log_tail(log_file, offset), password)


def stop(run: Path) -> None:
    """Stop the registry `up` started here (SIGTERM, SIGKILL after a while), whether it
    is Karapace by now or still its run script building the virtualenv."""
    running = _recorded(run)
    if running is None or running.pid is None or not _alive(running):
        return
    pid = running.pid
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _alive(running) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(running):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # Reap it when it is our child (started by this process): it has exited or is
    # exiting, so this returns at once, and its pid is gone when stop returns.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, 0)
    _state_file(run).write_text(
        json.dumps(asdict(RegistryInfo(running.url, None, running.log_file))), encoding="utf-8"
    )
