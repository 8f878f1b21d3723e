"""Processes this package starts: spawn detached, find by pid, signal, stop, log files.

A pid is only ever trusted together with the config file it was started with: a pid is
"ours" while /proc shows a live process whose command line names that file, so a pid
recycled by the system is never signalled. Linux only (reads /proc).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 30.0
LOG_ROTATE_BYTES = 20 * 1024 * 1024
LOG_TAIL_LINES = 40


# The kernel's PF_EXITING process flag (field 9 of /proc/<pid>/stat).
_PF_EXITING = 0x4


def _reap(pid: int) -> None:
    # A process started by this one turns into a zombie when it exits; reap it so that
    # liveness checks see it gone.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _threads_left(proc: Path) -> bool:
    # A multi-threaded process (a JVM) whose main thread has exited shows "Z" while its
    # other threads still run and hold its sockets open; it is gone when they are.
    try:
        return len(os.listdir(proc / "task")) > 1
    except OSError:
        return False


def process_state(pid: int | None, main_class: str, config: Path) -> str | None:
    """The /proc state letter ('R', 'S', 'T' if stopped, 'Z' while exiting) of our live
    process, else None.

    Ours means: pid runs `main_class` with `config` on its command line and has not exited.
    """
    if pid is None or pid <= 0:
        return None
    _reap(pid)
    proc = Path("/proc") / str(pid)
    try:
        fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        state, flags = fields[0], int(fields[6])
        argv = (proc / "cmdline").read_bytes().split(b"\0")
    except (OSError, IndexError, ValueError):
        return None
    if state in ("Z", "X"):
        # The pid cannot be reused before it is reaped, and a zombie's cmdline is empty.
        return state if _threads_left(proc) else None
    if flags & _PF_EXITING:
        # Exiting: its memory (and so its command line) may already be released, but
        # it is not a zombie yet, so the pid is still the one recorded.
        return state
    if main_class.encode() in argv and str(config).encode() in argv:
        return state
    return None


def is_ours(pid: int | None, main_class: str, config: Path) -> bool:
    """True if pid is a live `main_class` process started with this config file."""
    return process_state(pid, main_class, config) is not None


def port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def wait_exit(
    procs: Sequence[tuple[int, Path]], main_class: str, timeout: float = STOP_TIMEOUT_S
) -> None:
    """Wait for our processes (pid, config) to exit; SIGKILL those left after `timeout`."""
    deadline = time.monotonic() + timeout
    left = list(procs)
    while left and time.monotonic() < deadline:
        left = [(pid, config) for pid, config in left if is_ours(pid, main_class, config)]
        if left:
            time.sleep(0.2)
    for pid, config in left:
        if is_ours(pid, main_class, config):
            log.warning("pid %d did not exit within %.0fs; sending SIGKILL", pid, timeout)
            kill(pid, main_class, config, signal.SIGKILL)
    for pid, config in left:
        while is_ours(pid, main_class, config):
            time.sleep(0.1)


def kill(pid: int, main_class: str, config: Path, signum: signal.Signals) -> bool:
    """Send signum to pid if it is still ours; False if it was not (nothing sent)."""
    if not is_ours(pid, main_class, config):
        return False
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def spawn(argv: list[str], log_file: Path) -> int:
    """Start argv detached (own session), stdout and stderr appended to log_file."""
    # posix_spawn instead of subprocess.Popen: the child must outlive this process, and a
    # Popen object dropped while its child runs emits a ResourceWarning (an error under
    # pytest's filterwarnings=error). setsid detaches it from our terminal's signals.
    file_actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log_file), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    return os.posix_spawn(argv[0], argv, dict(os.environ), file_actions=file_actions, setsid=True)


def open_log(log_file: Path, what: str) -> int:
    """Rotate an oversized log, write a start marker and return the offset of this run."""
    if log_file.exists() and log_file.stat().st_size > LOG_ROTATE_BYTES:
        os.replace(log_file, log_file.with_name(log_file.name + ".1"))
    fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(f"===== gateway dev up: starting {what} at {time.ctime()} =====\n")
        handle.flush()
        return handle.tell()


def log_tail(log_file: Path, offset: int) -> str:
    """The last lines written to log_file since offset (unredacted: callers redact)."""
    try:
        with log_file.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except OSError as err:
        return f"(cannot read {log_file}: {err})"
    lines = data.decode("utf-8", errors="replace").splitlines()[-LOG_TAIL_LINES:]
    return "\n".join(lines) or "(log is empty)"
