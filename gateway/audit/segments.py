"""Segment files: their names, their order, and splitting one into lines.

A segment is ``audit-<instance>-<first seq, 20 digits>.jsonl``; an instance's chain is
its segments in order of first seq. When a segment holding no whole line (only a torn
one, from a crash) already has that name, the next is ``...-<first seq>.<n>.jsonl``,
ordered after it. The bytes after a segment's last newline, if any,
are a torn line. This module reads files (never writes them).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_NAME = re.compile(
    r"^audit-(?P<instance>[A-Za-z0-9._-]+)-(?P<seq>[0-9]{1,20})(?:\.(?P<part>[0-9]{1,9}))?\.jsonl$"
)


@dataclass(frozen=True, slots=True)
class Segment:
    path: Path
    instance: str
    first_seq: int
    part: int = 0


def name(instance: str, first_seq: int, part: int = 0) -> str:
    suffix = f".{part}" if part else ""
    return f"audit-{instance}-{first_seq:020d}{suffix}.jsonl"


def parse(path: Path) -> Segment | None:
    """The segment ``path`` names, or None when its name is not a segment's."""
    found = _NAME.match(path.name)
    if found is None:
        return None
    return Segment(path, found["instance"], int(found["seq"]), int(found["part"] or 0))


def find(paths: Iterable[Path], instance: str | None = None) -> list[Segment]:
    """Segments among ``paths`` (directories are searched, files taken as given), of
    ``instance`` if given, ordered by instance then first seq."""
    found: list[Segment] = []
    for path in paths:
        candidates = sorted(path.iterdir()) if path.is_dir() else [path]
        for candidate in candidates:
            segment = parse(candidate)
            if segment is not None and (instance is None or segment.instance == instance):
                found.append(segment)
    return sorted(found, key=lambda s: (s.instance, s.first_seq, s.part))


@dataclass(frozen=True, slots=True)
class Split:
    lines: list[bytes]  # whole lines, without their newline
    torn: bytes  # bytes after the last newline (b"" when the file ends cleanly)
    torn_offset: int  # where the torn bytes start


def split(data: bytes) -> Split:
    end = data.rfind(b"\n") + 1
    body = data[:end]
    lines = body.split(b"\n")[:-1] if body else []
    return Split(lines, data[end:], end)


def read_events(path: Path) -> Iterator[dict[str, Any]]:
    """Every whole line of the segments at ``path`` (a directory or a segment file), in
    chain order, as dicts with their ``seq``, ``prev`` and ``hash`` (checkpoints
    included; a torn last line is left out). Reads only: ``verify`` is what checks."""
    for segment in find([path]):
        for raw in split(segment.path.read_bytes()).lines:
            line = json.loads(raw)
            if isinstance(line, dict):
                yield line
