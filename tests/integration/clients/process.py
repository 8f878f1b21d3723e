"""A subprocess whose output is collected by reader threads (for java and kcat)."""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from tests.integration.clients.common import ClientError, Endpoint, fail

_STDERR_TAIL = 4000


def _tail(text: str, limit: int = _STDERR_TAIL) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


class Proc:
    """A subprocess whose stdout lines and stderr are collected by reader threads."""

    def __init__(
        self,
        cmd: list[str],
        ep: Endpoint,
        on_line: Callable[[str], bool] | None = None,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.cmd = cmd
        self.ep = ep
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.stopped_by_us = False
        self._on_line = on_line
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=env,
        )
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        if stdin is not None:
            self._threads.append(threading.Thread(target=self._write, args=(stdin,), daemon=True))
        for t in self._threads:
            t.start()

    def _write(self, data: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ValueError), self.proc.stdin:
            self.proc.stdin.write(data)

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                line = line.rstrip("\n")
                if self._on_line is None or not self._on_line(line):
                    self.stdout.append(line)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        with self.proc.stderr:
            for line in self.proc.stderr:
                self.stderr.append(line.rstrip("\n"))

    def running(self) -> bool:
        return self.proc.poll() is None

    def terminate(self) -> None:
        """Ask the process to exit, if it still runs (``stop`` then waits for it)."""
        if self.running():
            self.stopped_by_us = True
            self.proc.terminate()

    def stop(self) -> None:
        """Terminate (then kill) the process if it still runs."""
        if self.running():
            self.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait()
        for t in self._threads:
            t.join(10)

    def wait(self, timeout: float) -> bool:
        """Wait for exit; False if the process outlived ``timeout`` and had to be stopped."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            return False
        for t in self._threads:
            t.join(10)
        return True

    def run(self, timeout: float) -> None:
        """Wait for a successful exit within ``timeout``; raise otherwise."""
        if not self.wait(timeout):
            raise self.error(f"timed out after {timeout:.0f}s")
        self.check()

    def diagnostics(self) -> str:
        return "\n".join(self.stderr + self.stdout)

    def error(self, what: str) -> ClientError:
        args = self.cmd[1:]
        if "-cp" in args:  # java: show the main class and its arguments, not the classpath
            args = args[args.index("-cp") + 2 :]
        cmd = " ".join([Path(self.cmd[0]).name, *args])
        return fail(
            self.ep,
            f"{cmd!r} {what} (exit {self.proc.returncode}); output tail:\n"
            + _tail(self.diagnostics()),
        )

    def check(self) -> None:
        if self.proc.returncode != 0:
            raise self.error("failed")
