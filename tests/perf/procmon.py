"""Measuring a process while a workload runs: CPU seconds, peak RSS, RSS time series."""

from __future__ import annotations

import resource
import threading
import time
from dataclasses import dataclass, field

import psutil

MIB = 1024 * 1024


def cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU seconds the process has used so far (its own threads)."""
    times = proc.cpu_times()
    return float(times.user + times.system)


def system_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (everything but idle and iowait)."""
    t = psutil.cpu_times()
    busy = t.user + t.nice + t.system
    # Linux-only fields (guest time is already part of user).
    for name in ("irq", "softirq", "steal"):
        busy += getattr(t, name, 0.0)
    return float(busy)


def children_cpu_seconds() -> float:
    """CPU seconds of this process's reaped children (the load tools once they exit)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Sample:
    """What a :class:`ProcessMonitor` measured between start and stop."""

    cpu_s: float = 0.0
    rss_start_mb: float = 0.0
    rss_peak_mb: float = 0.0
    rss_end_mb: float = 0.0
    series: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MiB)
    alive: bool = True


class ProcessMonitor:
    """Samples one process's RSS every ``interval`` seconds in a thread; CPU as a delta.

    ``keep_series`` keeps every (elapsed seconds, RSS MiB) sample, for soak runs.
    """

    def __init__(self, pid: int, interval: float = 0.1, *, keep_series: bool = False) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.keep_series = keep_series
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sample = Sample()
        self._cpu0 = 0.0
        self._t0 = 0.0

    def rss_mb(self) -> float:
        return float(self.proc.memory_info().rss) / MIB

    def start(self) -> None:
        self._cpu0 = cpu_seconds(self.proc)
        self._t0 = time.monotonic()
        rss = self.rss_mb()
        self._sample = Sample(rss_start_mb=rss, rss_peak_mb=rss, rss_end_mb=rss)
        if self.keep_series:
            self._sample.series.append((0.0, rss))
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="procmon", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                rss = self.rss_mb()
            except psutil.Error:
                self._sample.alive = False
                return
            self._sample.rss_peak_mb = max(self._sample.rss_peak_mb, rss)
            self._sample.rss_end_mb = rss
            if self.keep_series:
                self._sample.series.append((round(time.monotonic() - self._t0, 3), rss))

    def stop(self) -> Sample:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            rss = self.rss_mb()
            self._sample.rss_peak_mb = max(self._sample.rss_peak_mb, rss)
            self._sample.rss_end_mb = rss
            self._sample.cpu_s = cpu_seconds(self.proc) - self._cpu0
        except psutil.Error:
            self._sample.alive = False
        return self._sample
