"""The audit chain's writer: seals events into lines, appends them to segment files,
fsyncs once per batch, checkpoints, rotates, and continues a chain after a restart.

Synchronous and single-threaded: :class:`gateway.audit.log.AuditLog` calls it from one
thread. A failed write leaves the in-memory chain where it was before the batch, and
:meth:`ChainWriter.recover` cuts the file back to its last durable byte: events of a
failed batch were never acknowledged, so they never appear in the log. Acknowledged
bytes are never changed; a torn line left by a crash is sealed, not removed. This
module touches only the audit directory; it knows nothing of asyncio or requests.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway import metrics
from gateway.audit import chain, segments
from gateway.audit.canonical import encode
from gateway.errors import AuditUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WriterSettings:
    dir: Path
    instance: str
    checkpoint_every_events: int = 1000
    checkpoint_every_seconds: float = 10.0
    segment_max_bytes: int = 64 * 1024 * 1024
    segment_max_seconds: float = 3600.0


@dataclass(frozen=True, slots=True)
class _Tail:
    """Where an existing chain stopped."""

    seq: int  # the next line's seq
    prev: str  # the last line's hash
    first_unsealed: int  # the first seq after the last checkpoint
    tears: list[dict[str, Any]]  # torn last lines to seal (chain.tear)


def _last_line(segment: segments.Segment) -> tuple[dict[str, Any] | None, segments.Split]:
    split = segments.split(segment.path.read_bytes())
    if not split.lines:
        return None, split
    try:
        line = json.loads(split.lines[-1])
    except ValueError as exc:
        raise AuditUnavailable(
            f"cannot continue the audit chain: the last line of {segment.path} is not JSON"
        ) from exc
    if not isinstance(line, dict) or line.get("hash") != chain.line_hash(line):
        raise AuditUnavailable(
            f"cannot continue the audit chain: the last line of {segment.path} is damaged"
        )
    return line, split


def _last_checkpoint(found: Sequence[segments.Segment]) -> int:
    """The seq after the last checkpoint in ``found`` (0 when there is none)."""
    for segment in reversed(found):
        for raw in reversed(segments.split(segment.path.read_bytes()).lines):
            if b'"type":"checkpoint"' in raw:
                line = json.loads(raw)
                if line.get("type") == chain.CHECKPOINT:
                    return int(line["seq"]) + 1
    return 0


def read_tail(directory: Path, instance: str) -> _Tail:
    """Where ``instance``'s chain in ``directory`` stopped (a new chain if none)."""
    found = segments.find([directory], instance)
    tears: list[dict[str, Any]] = []
    for index in range(len(found) - 1, -1, -1):
        line, split = _last_line(found[index])
        if split.torn:
            tears.insert(0, chain.tear(found[index].path.name, split.torn_offset, split.torn))
        if line is not None:
            checkpointed = _last_checkpoint(found[: index + 1])
            return _Tail(int(line["seq"]) + 1, str(line["hash"]), checkpointed, tears)
    return _Tail(0, chain.GENESIS, 0, tears)


class ChainWriter:
    """Appends sealed lines to ``settings.instance``'s chain in ``settings.dir``."""

    def __init__(
        self,
        settings: WriterSettings,
        private: Ed25519PrivateKey,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._private = private
        self._clock = clock
        self._monotonic = monotonic
        self.seq = 0
        self.prev = chain.GENESIS
        self.first_unsealed = 0
        self.durable_seq = 0  # the first seq not yet known durable
        # Batches fsynced; group commit is measured by it.
        self.fsyncs = 0
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0  # bytes of the open segment known durable
        self._opened_at = 0.0
        self._checkpointed_at = 0.0
        self._dirty = False  # a write failed: the segment may hold bytes past _size

    @property
    def path(self) -> Path | None:
        """The segment being written."""
        return self._path

    def open(self) -> None:
        """Continue the chain on disk (or start one), in a new segment. A torn last
        line is logged and sealed by a ``recovered`` line opening the new segment."""
        self.settings.dir.mkdir(parents=True, exist_ok=True)
        tail = read_tail(self.settings.dir, self.settings.instance)
        self.seq, self.prev, self.first_unsealed = tail.seq, tail.prev, tail.first_unsealed
        self.durable_seq = tail.seq
        self._checkpointed_at = self._monotonic()
        self._open_segment()
        for tear in tail.tears:
            log.warning(
                "audit segment %s ends in a torn line (%d bytes at offset %d, from a crash); "
                "sealing it with a recovered event",
                tear["segment"],
                tear["torn_bytes"],
                tear["offset"],
            )
        if tail.tears:
            self.write([chain.recovered(tail.tears, self._clock())])

    def _open_segment(self) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        part = 0
        path = self.settings.dir / segments.name(self.settings.instance, self.seq)
        # A segment of this first seq exists only when a crash left it empty or with a
        # torn line alone: reuse an empty one, never touch a torn one.
        while path.is_file() and path.stat().st_size > 0:
            part += 1
            path = self.settings.dir / segments.name(self.settings.instance, self.seq, part)
        fd = os.open(path, flags, 0o640)
        self._fd, self._path, self._size = fd, path, 0
        self._opened_at = self._monotonic()
        # The new name must be durable too, or a crash could lose the whole file.
        dir_fd = os.open(self.settings.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _close_segment(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def write(self, events: Sequence[Mapping[str, Any]]) -> list[Exception | None]:
        """Seal ``events`` and make them durable with one fsync (plus a checkpoint when
        one is due). Returns, per event, None or the error that kept it out (an event
        JSON cannot hold). Raises OSError when the batch could not be made durable:
        the chain is then as it was before, and :meth:`recover` must succeed before the
        next write."""
        if self._dirty:
            raise OSError("the audit log is recovering from a failed write")
        self._rotate_if_due(self._monotonic())
        if self._fd is None:
            self._open_segment()
        seq, prev, first_unsealed = self.seq, self.prev, self.first_unsealed
        outcomes: list[Exception | None] = []
        data = bytearray()
        types: list[str] = []
        try:
            for event in events:
                try:
                    line = chain.seal(event, self.seq, self.prev)
                    data += encode(line) + b"\n"
                except (TypeError, ValueError) as exc:
                    outcomes.append(exc)
                    continue
                outcomes.append(None)
                types.append(str(event.get("type", "unknown")))
                self.seq, self.prev = line["seq"] + 1, line["hash"]
                if self.seq - self.first_unsealed >= self.settings.checkpoint_every_events:
                    data += self._checkpoint_bytes()
                    types.append(chain.CHECKPOINT)
            self._append(bytes(data))
        except OSError:
            self.seq, self.prev, self.first_unsealed = seq, prev, first_unsealed
            raise
        self._count(types, len(data))
        return outcomes

    def _checkpoint_bytes(self) -> bytes:
        line = chain.checkpoint(
            self._private,
            instance=self.settings.instance,
            first_seq=self.first_unsealed,
            seq=self.seq,
            prev=self.prev,
            time=self._clock(),
        )
        self.seq, self.prev, self.first_unsealed = self.seq + 1, line["hash"], self.seq + 1
        self._checkpointed_at = self._monotonic()
        return encode(line) + b"\n"

    def _append(self, data: bytes) -> None:
        assert self._fd is not None
        self._dirty = True
        view = memoryview(data)
        while view:
            written = self._os_write(self._fd, view)
            view = view[written:]
        started = time.perf_counter()
        self._os_fsync(self._fd)
        metrics.AUDIT_FSYNC_SECONDS.observe(time.perf_counter() - started)
        self.fsyncs += 1
        self.durable_seq = self.seq  # every line before this seq is on disk (for the sink)
        self._size += len(data)
        self._dirty = False

    # The two system calls that write, as methods so that a test can make them fail.
    def _os_write(self, fd: int, data: memoryview) -> int:
        return os.write(fd, data)

    def _os_fsync(self, fd: int) -> None:
        os.fsync(fd)

    @staticmethod
    def _count(types: list[str], size: int) -> None:
        for kind in types:
            metrics.AUDIT_EVENTS.labels(kind).inc()
            if kind == chain.CHECKPOINT:
                metrics.AUDIT_CHECKPOINTS.inc()
        metrics.AUDIT_BYTES.inc(size)

    def checkpoint(self) -> None:
        """Write a checkpoint now if any line is unsealed."""
        if self.seq == self.first_unsealed or self._dirty:
            return
        if self._fd is None:
            self._open_segment()
        seq, prev, first_unsealed = self.seq, self.prev, self.first_unsealed
        data = self._checkpoint_bytes()
        try:
            self._append(data)
        except OSError:
            self.seq, self.prev, self.first_unsealed = seq, prev, first_unsealed
            raise
        self._count([chain.CHECKPOINT], len(data))

    def seconds_to_checkpoint(self) -> float | None:
        """How long until a timed checkpoint or rotation is due (None: nothing to do)."""
        if self.seq == self.first_unsealed:
            return None
        now = self._monotonic()
        due = min(
            self._checkpointed_at + self.settings.checkpoint_every_seconds,
            self._opened_at + self.settings.segment_max_seconds,
        )
        return max(0.0, due - now)

    def tick(self) -> None:
        """Timed work: rotate an old segment, checkpoint when the interval has passed."""
        now = self._monotonic()
        self._rotate_if_due(now)
        if now - self._checkpointed_at >= self.settings.checkpoint_every_seconds:
            self.checkpoint()

    def _rotate_if_due(self, now: float) -> None:
        if self._fd is None or self._size == 0:
            return
        too_big = self._size >= self.settings.segment_max_bytes
        too_old = now - self._opened_at >= self.settings.segment_max_seconds
        if too_big or too_old:
            # The old segment ends with its checkpoint; the next one opens lazily so
            # that a directory that refuses new files fails only the next write.
            self.checkpoint()
            self._close_segment()

    def recover(self) -> None:
        """After a failed write: cut the segment back to its last durable byte (bytes
        of the failed batch were never acknowledged). Raises OSError while it cannot."""
        if self._fd is not None and self._dirty:
            os.ftruncate(self._fd, self._size)
            os.fsync(self._fd)
        self._dirty = False
        if self._fd is None:
            self._open_segment()

    def close(self) -> None:
        """Seal what is unsealed with a last checkpoint and close the segment."""
        try:
            if not self._dirty:
                self.checkpoint()
        finally:
            self._close_segment()
