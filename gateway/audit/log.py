"""``AuditLog``: the durable audit log as the event loop sees it, with group commit.

``await append(event)`` returns once the event's line is fsynced. Appends queue up; one
writer thread (:class:`~gateway.audit.writer.ChainWriter`) takes what queued while it
was busy and what arrives within ``group_commit_ms`` (less once arrivals pause),
writes it and fsyncs once, then releases every waiting append. When a write fails
(disk full, permission, I/O error) the batch's appends raise
:class:`~gateway.errors.AuditUnavailable`, ``healthy`` turns False with the reason, and
further appends fail at once while the thread retries (backoff up to 1 s); the first
write that works again records an ``audit_unavailable`` event (since when, why, how
many events were refused or, with ``fail_open``, served unrecorded) and the log is
healthy again. With ``fail_open`` append never raises. This module owns the thread;
it knows nothing of requests or sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway import metrics
from gateway.audit import keys
from gateway.audit.writer import ChainWriter, WriterSettings
from gateway.config import AuditConfig
from gateway.errors import AuditUnavailable

log = logging.getLogger(__name__)

_MAX_BACKOFF = 1.0
# A batch closes once no append came for this fraction of group_commit_ms.
_QUIET_PARTS = 8


@dataclass(slots=True)
class _Pending:
    event: Mapping[str, Any]
    future: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop


_STOP = object()


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # the append was cancelled; its event may still be written
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _release(pending: _Pending, error: BaseException | None) -> None:
    """Settle ``pending`` on its own loop (called from the writer thread)."""
    _release_all([(pending, error)])


def _settle_all(settled: list[tuple[asyncio.Future[None], BaseException | None]]) -> None:
    for future, error in settled:
        _settle(future, error)


def _release_all(outcomes: list[tuple[_Pending, BaseException | None]]) -> None:
    """Settle a whole batch with one call into each loop: one wake-up of the loop per
    group commit, not one per event."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[None], Any]]] = {}
    for pending, error in outcomes:
        by_loop.setdefault(pending.loop, []).append((pending.future, error))
    for loop, settled in by_loop.items():
        # A loop already closed has no one left waiting; the writer thread must go on.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle_all, settled)


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return errno.errorcode.get(exc.errno or 0, "OSError")
    return type(exc).__name__


class AuditLog:
    """The audit log of one gateway instance (see the module docstring)."""

    def __init__(self, config: AuditConfig) -> None:
        self.config = config
        self.healthy = True
        self.unhealthy_reason: str | None = None
        self.key_id: str | None = None  # of the signing key, once started
        self._queue: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._writer: ChainWriter | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._outage_since: float | None = None
        self._refused = 0  # appends refused during the outage
        self._unrecorded = 0  # appends acknowledged without a record (fail_open)

    @property
    def writer(self) -> ChainWriter:
        """The chain writer (for tests and tools that inspect seq and fsyncs)."""
        assert self._writer is not None, "AuditLog.start() first"
        return self._writer

    async def start(self) -> None:
        """Load the key (refusing a loose key file), continue the chain on disk and
        start the writer thread. Raises ConfigError or AuditUnavailable."""
        private = keys.load_private(self.config.key_file)
        self.key_id = keys.key_id(private.public_key())
        settings = WriterSettings(
            dir=self.config.dir,
            instance=self.config.instance,
            checkpoint_every_events=self.config.checkpoint_every_events,
            checkpoint_every_seconds=self.config.checkpoint_every_seconds,
            segment_max_bytes=self.config.segment_max_bytes,
            segment_max_seconds=self.config.segment_max_seconds,
        )
        writer = ChainWriter(settings, private)
        try:
            await asyncio.to_thread(writer.open)
        except OSError as exc:
            raise AuditUnavailable(f"audit log {self.config.dir}: {exc}") from exc
        self._writer = writer
        metrics.AUDIT_HEALTHY.set(1)
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    async def append(self, event: Mapping[str, Any]) -> None:
        """Return once ``event`` is durable. Raises AuditUnavailable when it cannot be
        written (never with ``fail_open``: the event is then counted as unrecorded)."""
        if self._thread is None or self._stopping.is_set():
            raise AuditUnavailable("the audit log is not running")
        try:
            if not self.healthy:
                raise AuditUnavailable(f"audit log unavailable: {self.unhealthy_reason}")
            loop = asyncio.get_running_loop()
            future: asyncio.Future[None] = loop.create_future()
            self._queue.put(_Pending(event, future, loop))
            await future
        except AuditUnavailable:
            with self._lock:
                if self.config.fail_open:
                    self._unrecorded += 1
                else:
                    self._refused += 1
            if not self.config.fail_open:
                raise

    def ensure_writable(self) -> None:
        """Raise AuditUnavailable, counted as refused, while the log is known not to
        write (never with ``fail_open``: the request goes on, and its event's append
        counts it if it cannot be written)."""
        if self.config.fail_open:
            return
        if self._thread is None or self._stopping.is_set():
            raise AuditUnavailable("the audit log is not running")
        if not self.healthy:
            with self._lock:
                self._refused += 1
            raise AuditUnavailable(f"audit log unavailable: {self.unhealthy_reason}")

    async def close(self) -> None:
        """Write what is queued, seal it with a last checkpoint, stop the thread."""
        if self._thread is None:
            return
        self._stopping.set()
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    # The writer thread.

    def _run(self) -> None:
        writer = self.writer
        stop = False
        while not stop:
            if not self.healthy:
                self._retry()
                if self._stopping.is_set() and not self.healthy:
                    break
                continue
            try:
                first = self._queue.get(timeout=writer.seconds_to_checkpoint())
            except queue.Empty:
                self._guard(writer.tick)
                continue
            if first is _STOP:
                break
            assert isinstance(first, _Pending)
            batch, stop = self._gather(first)
            self._commit(batch)
            if self.healthy and writer.seconds_to_checkpoint() == 0:
                # A steady stream never lets the queue time out: timed work runs here.
                self._guard(writer.tick)
        self._fail_queued(AuditUnavailable("the audit log is closed"))
        try:
            writer.close()
        except OSError as exc:
            log.error("audit log: the final checkpoint could not be written: %s", exc)

    def _gather(self, first: _Pending) -> tuple[list[_Pending], bool]:
        """``first`` and what arrives after it, for at most ``group_commit_ms``. The wait
        ends sooner once no event came for an eighth of the window: appends that come in
        a burst share the fsync, and a lone append is not held for the whole window
        (what queued during the previous fsync is taken at once either way)."""
        batch = [first]
        window = self.config.group_commit_ms / 1000
        deadline = time.monotonic() + window
        while True:
            remaining = min(deadline - time.monotonic(), window / _QUIET_PARTS)
            try:
                if remaining > 0:
                    item = self._queue.get(timeout=remaining)
                else:
                    item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False
            if item is _STOP:
                return batch, True
            assert isinstance(item, _Pending)
            batch.append(item)

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            outcomes = self.writer.write([p.event for p in batch])
        except Exception as exc:
            # OSError is the disk; anything else is a fault of ours, and is treated the
            # same way (refuse, retry) rather than let the writer thread die with
            # appends waiting on it forever.
            if not isinstance(exc, OSError):
                log.exception("audit log: unexpected error writing a batch")
            self._failed(exc)
            error = AuditUnavailable(f"audit log unavailable: {self.unhealthy_reason}")
            _release_all([(pending, error) for pending in batch])
            self._fail_queued(error)
            return
        _release_all(
            [
                (pending, None if found is None else AuditUnavailable(f"event refused: {found}"))
                for pending, found in zip(batch, outcomes, strict=True)
            ]
        )

    def _guard(self, work: Any) -> None:
        try:
            work()
        except Exception as exc:  # as in _commit: refuse and retry, never end the thread
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        reason = _reason(exc)
        metrics.AUDIT_FAILURES.labels(reason).inc()
        if not self.healthy:
            return
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        self.unhealthy_reason = f"{reason}: {detail}"
        self.healthy = False
        self._outage_since = time.time()
        metrics.AUDIT_HEALTHY.set(0)
        log.error(
            "audit log cannot write to %s (%s); %s until it can",
            self.config.dir,
            self.unhealthy_reason,
            "serving requests unrecorded" if self.config.fail_open else "refusing requests",
        )

    def _fail_queued(self, error: AuditUnavailable) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Pending):
                _release(item, error)

    def _retry(self) -> None:
        """Try to recover, with backoff, until it works or the log is closing."""
        delay = 0.01
        while not self._stopping.is_set():
            self._fail_queued(AuditUnavailable(f"audit log unavailable: {self.unhealthy_reason}"))
            try:
                self.writer.recover()
                self.writer.write([self._outage_event()])
            except OSError as exc:
                metrics.AUDIT_FAILURES.labels(_reason(exc)).inc()
                self._stopping.wait(delay)
                delay = min(delay * 2, _MAX_BACKOFF)
                continue
            with self._lock:
                self._refused = self._unrecorded = 0
            log.warning("audit log writes again after: %s", self.unhealthy_reason)
            self.unhealthy_reason = None
            self.healthy = True
            metrics.AUDIT_HEALTHY.set(1)
            return

    def _outage_event(self) -> dict[str, Any]:
        with self._lock:
            refused, unrecorded = self._refused, self._unrecorded
        return {
            "v": 1,
            "type": "audit_unavailable",
            "time": time.time(),
            "since": self._outage_since,
            "reason": self.unhealthy_reason,
            "fail_open": self.config.fail_open,
            "refused": refused,
            "unrecorded": unrecorded,
        }
