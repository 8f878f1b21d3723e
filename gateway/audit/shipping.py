"""What the Kafka sink ships and what ``audit fetch`` rebuilds, without any I/O but
files: the sink's position, the durable lines after it, and the reader's
de-duplication of lines read back from the topic.

The position (``.sink-<instance>.pos`` in the audit directory: the last seq the
cluster acknowledged and its hash) is written, atomically, after every acknowledged
batch. A local file rather than reading the topic back at start: it needs no consumer
and no partition lookup, works while the cluster is unreachable, and a stale one only
re-sends lines, which the reader drops as identical duplicates. This module touches
only the audit directory (reads segments, writes the position) and the fetch output
directory; it knows nothing of Kafka or asyncio.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from gateway.audit import segments


@dataclass(frozen=True, slots=True)
class Position:
    seq: int  # the last seq acknowledged by the cluster; -1: nothing yet
    hash: str = ""


START = Position(-1)


def position_path(directory: Path, instance: str) -> Path:
    return directory / f".sink-{instance}.pos"


def read_position(directory: Path, instance: str) -> Position:
    """The saved position, or START when there is none. A damaged file counts as none:
    everything is re-sent, and the reader drops the duplicates."""
    try:
        data = json.loads(position_path(directory, instance).read_bytes())
        seq, digest = data["seq"], data["hash"]
    except (OSError, ValueError, KeyError, TypeError):
        return START
    if not isinstance(seq, int) or not isinstance(digest, str):
        return START
    return Position(seq, digest)


def write_position(directory: Path, instance: str, position: Position) -> None:
    path = position_path(directory, instance)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps({"seq": position.seq, "hash": position.hash}))
    os.replace(temporary, path)  # never a half-written position


@dataclass(frozen=True, slots=True)
class Line:
    segment: str  # the segment file's name: verify checks lines against it
    seq: int
    hash: str
    data: bytes  # the exact canonical bytes, without the newline
    torn: bool = False  # the torn bytes ending ``segment`` (a crash), shipped as they are


def pending(directory: Path, instance: str, after: int, durable: int, limit: int) -> list[Line]:
    """At most ``limit`` lines of ``instance``'s chain with ``after`` < seq < ``durable``
    (``durable``: the first seq not yet known durable), in chain order. Read from the
    segment files each time, so a sink that fell behind holds no more than ``limit``
    lines in memory. Torn bytes ending a segment (a crash) come just before the next
    line, whose ``recovered`` event seals them: verify needs them to check that seal,
    and only a later line proves they are final."""
    found: list[Line] = []
    torn: list[Line] = []
    chain = segments.find([directory], instance)
    for index, segment in enumerate(chain):
        following = chain[index + 1].first_seq if index + 1 < len(chain) else None
        if following is not None and following <= after:
            continue  # every line of this segment, and its torn end, was shipped already
        if segment.first_seq >= durable:
            break
        split = segments.split(segment.path.read_bytes())
        for raw in split.lines:
            try:
                line = json.loads(raw)
                seq, digest = line["seq"], line["hash"]
            except (ValueError, KeyError, TypeError):
                continue  # verify reports a bad line; the sink ships what it can parse
            if not isinstance(seq, int) or seq <= after:
                torn.clear()  # torn bytes before a shipped line were shipped with it
                continue
            if seq >= durable:
                return found
            found.extend(torn)
            torn.clear()
            found.append(Line(segment.path.name, seq, str(digest), raw))
            if len(found) >= limit:
                return found
        if split.torn:
            torn.append(Line(segment.path.name, -1, "", split.torn, torn=True))
    return found


class ConflictingDuplicate(Exception):
    """Two different lines with one instance and seq: the topic was tampered with."""


@dataclass(slots=True)
class Collector:
    """Lines read back from the topic, per instance, de-duplicated: a line sent twice
    (a re-send after a crash) is kept once; the same (instance, seq) with another hash
    or other bytes raises :class:`ConflictingDuplicate`."""

    lines: dict[str, dict[int, Line]] = field(default_factory=dict)
    torn: dict[str, dict[str, bytes]] = field(default_factory=dict)  # instance, segment
    duplicates: int = 0

    def add(self, instance: str, segment: str, raw: bytes, torn: bool = False) -> None:
        named = segments.parse(Path(segment))
        if named is None or named.instance != instance or Path(segment).name != segment:
            raise ValueError(f"record header segment {segment!r} is not a segment of {instance}")
        if torn:
            known_torn = self.torn.setdefault(instance, {}).setdefault(segment, raw)
            if known_torn != raw:
                raise ConflictingDuplicate(
                    f"tampered: two different torn ends for {instance} segment {segment}"
                )
            return
        try:
            line = json.loads(raw)
            seq, digest = line["seq"], str(line["hash"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"record of {instance} is not an audit line: {exc}") from None
        if not isinstance(seq, int):
            raise ValueError(f"record of {instance} has no integer seq")
        item = Line(segment, seq, digest, raw)
        known = self.lines.setdefault(instance, {}).get(seq)
        if known is None:
            self.lines[instance][seq] = item
        elif known == item:
            self.duplicates += 1
        else:
            raise ConflictingDuplicate(
                f"tampered: two different lines for {instance} seq {seq} "
                f"(hashes {known.hash[:16]}… in {known.segment} and {digest[:16]}… in {segment})"
            )

    def write(self, out: Path) -> dict[str, int]:
        """Each instance's lines as segment files in ``out``; lines per instance."""
        out.mkdir(parents=True, exist_ok=True)
        counts: dict[str, int] = {}
        for instance in sorted(set(self.lines) | set(self.torn)):
            by_seq = self.lines.get(instance, {})
            files: dict[str, list[Line]] = {name: [] for name in self.torn.get(instance, {})}
            for seq in sorted(by_seq):
                files.setdefault(by_seq[seq].segment, []).append(by_seq[seq])
            for name, lines in files.items():
                tail = self.torn.get(instance, {}).get(name, b"")
                (out / name).write_bytes(b"".join(line.data + b"\n" for line in lines) + tail)
            counts[instance] = len(by_seq)
        return counts
