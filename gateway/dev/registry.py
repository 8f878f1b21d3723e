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
from gateway.dev.errors import DevError
from gateway.dev.layout import HOST, PORT_ENV, first_port
from gateway.dev.state import ClusterInfo

KARAPACE_DIR_ENV = "GATEWAY_KARAPACE_DIR"
PORT_OFFSET = 90
TOPIC = "_schemas"
# The first start builds Karapace's virtualenv from PyPI (15-20 s, more on a slow link).
START_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 20.0
MAIN_MODULE = b"karapace.karapace_all"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistryInfo:
    """The dev schema registry: where it answers and what runs it."""

    url: str
    pid: int | None
    log_file: str
    topic: str = TOPIC

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


def _alive(pid: int | None) -> bool:
    """Whether ``pid`` is a live Karapace process (its command line says so)."""
    if pid is None:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X") and MAIN_MODULE in argv


def _exited(pid: int) -> bool:
    """Whether our child ``pid`` (the run script, which becomes Karapace) has exited."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return not Path(f"/proc/{pid}").exists()
    return done == pid


def status(run: Path) -> RegistryInfo | None:
    """The registry `up` started here, or None when none was ever started."""
    try:
        fields = json.loads(_state_file(run).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    info = RegistryInfo(fields["url"], fields.get("pid"), fields["log_file"])
    return info if _alive(info.pid) else RegistryInfo(info.url, None, info.log_file)


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
    info = RegistryInfo(url, pid, str(log_file))
    _state_file(run).write_text(json.dumps(asdict(info)), encoding="utf-8")
    log.info("starting the dev schema registry (Karapace) on %s", url)
    deadline = time.monotonic() + timeout
    while not _answers(url):
        if _exited(pid):
            raise DevError(
                "the dev schema registry exited during start-up:\n"
                + processes.log_tail(log_file, offset)
            )
        if time.monotonic() > deadline:
            stop(run)
            raise DevError(
                f"the dev schema registry did not answer within {timeout:.0f}s:\n"
                + processes.log_tail(log_file, offset)
            )
        time.sleep(0.2)
    return info


def stop(run: Path) -> None:
    """Stop the registry `up` started here (SIGTERM, SIGKILL after a while)."""
    info = status(run)
    if info is None or info.pid is None:
        return
    pid = info.pid
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _state_file(run).write_text(
        json.dumps(asdict(RegistryInfo(info.url, None, info.log_file))), encoding="utf-8"
    )
