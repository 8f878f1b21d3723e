"""Offline verification of audit logs: ``python -m gateway audit verify``.

For each instance's chain it checks, line by line and across segments: the canonical
encoding, every hash, the ``prev`` links, the sequence (no gap, no reordering, starting
at 0), every checkpoint (its range, its ``last_hash``, its signature with the auditor's
public key or, failing that, the key embedded in it) and every torn line (sealed by a
``recovered`` line opening the next segment). It stops at the first bad line and names
it (file:line, seq) and what is wrong. Lines after the last checkpoint are unsealed: a
truncation there cannot be told from a log still being written, so they are reported,
and refused unless ``allow_unsealed``. Dropping whole segments at the end of a log
leaves a shorter, valid log; the covered seq range and the last checkpoint are printed
so that they can be compared with the published ones.

This module reads segment files only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.audit import chain, keys, segments
from gateway.audit.canonical import encode


@dataclass(frozen=True, slots=True)
class Problem:
    path: Path
    line: int  # 1-based
    seq: int | None
    what: str

    def __str__(self) -> str:
        at = f"{self.path}:{self.line}"
        return (
            f"{at} (seq {self.seq}): {self.what}" if self.seq is not None else f"{at}: {self.what}"
        )


@dataclass
class ChainReport:
    """What was found in one instance's chain."""

    instance: str
    segments: int = 0
    lines: int = 0
    checkpoints: int = 0
    next_seq: int = 0  # one past the last line read
    last_checkpoint: dict[str, Any] | None = None
    unsealed: tuple[int, Path, int] | None = None  # first unsealed seq, where it is
    key_ids: set[str] = field(default_factory=set)
    tears: list[str] = field(default_factory=list)  # sealed torn lines, described
    problem: Problem | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


class _Bad(Exception):
    def __init__(self, what: str, seq: int | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.seq = seq


@dataclass
class _Torn:
    segment: segments.Segment
    offset: int
    data: bytes


class _ChainVerifier:
    def __init__(self, instance: str, public_key: Ed25519PublicKey | None) -> None:
        self.report = ChainReport(instance)
        self._public_key = public_key
        self._expected_key_id = keys.key_id(public_key) if public_key else None
        self._prev = chain.GENESIS
        self._first_unsealed = 0
        self._torn: list[_Torn] = []  # torn lines not yet sealed

    def run(self, found: Sequence[segments.Segment], allow_unsealed: bool) -> ChainReport:
        for segment in found:
            if not self._segment(segment):
                return self.report
        report = self.report
        if self._torn:
            torn = self._torn[0]
            line = len(segments.split(torn.segment.path.read_bytes()).lines) + 1
            report.problem = Problem(
                torn.segment.path,
                line,
                None,
                f"truncated: torn last line ({len(torn.data)} bytes at offset {torn.offset}) "
                "not sealed by a recovered line",
            )
        elif report.unsealed is not None and not allow_unsealed:
            seq, path, line = report.unsealed
            report.problem = Problem(
                path,
                line,
                seq,
                f"unsealed: lines {seq}..{report.next_seq - 1} come after the last "
                "checkpoint (truncated after it, or not yet sealed)",
            )
        return report

    def _segment(self, segment: segments.Segment) -> bool:
        self.report.segments += 1
        split = segments.split(segment.path.read_bytes())
        parsed = [_parse(raw) for raw in split.lines]
        for index, raw in enumerate(split.lines):
            try:
                self._line(segment, index, raw, parsed)
            except _Bad as bad:
                self.report.problem = Problem(segment.path, index + 1, bad.seq, bad.what)
                return False
        if split.torn:
            self._torn.append(_Torn(segment, split.torn_offset, split.torn))
        return True

    def _line(self, segment: segments.Segment, index: int, raw: bytes, parsed: list[Any]) -> None:
        line = parsed[index]
        if not isinstance(line, dict):
            raise _Bad("changed: not a JSON object")
        seq = line.get("seq")
        if not isinstance(seq, int):
            raise _Bad("changed: no seq")
        if encode(line) != raw:
            raise _Bad("changed: not in canonical form", seq)
        if line.get("hash") != chain.line_hash(line):
            raise _Bad("changed: the hash does not match the line", seq)
        self._sequence(seq, parsed, index)
        if index == 0 and seq != segment.first_seq:
            raise _Bad(f"changed: the file name says seq {segment.first_seq}", seq)
        if line.get("prev") != self._prev:
            raise _Bad("chain broken: prev is not the previous line's hash", seq)
        self._torn_sealed(line, index, seq)
        if line.get("type") == chain.CHECKPOINT:
            self._checkpoint(line, segment, seq)
        elif self.report.unsealed is None:
            self.report.unsealed = (seq, segment.path, index + 1)
        self._prev = line["hash"]
        self.report.lines += 1
        self.report.next_seq = seq + 1

    def _sequence(self, seq: int, parsed: list[Any], index: int) -> None:
        expected = self.report.next_seq
        if seq == expected:
            return
        later = {p.get("seq") for p in parsed[index + 1 :] if isinstance(p, dict)}
        if seq < expected or expected in later:
            raise _Bad(f"reordered: seq {seq} where seq {expected} was expected", seq)
        raise _Bad(f"missing: seq {expected}..{seq - 1} are not in the log", seq)

    def _torn_sealed(self, line: dict[str, Any], index: int, seq: int) -> None:
        torn, self._torn = self._torn, []
        if line.get("type") != chain.RECOVERED:
            if torn:
                raise _Bad(
                    f"truncated: the torn line at the end of {torn[0].segment.path.name} is "
                    "not sealed",
                    seq,
                )
            return
        if not torn or index != 0:
            raise _Bad("changed: a recovered line that seals no torn line", seq)
        expected = [chain.tear(t.segment.path.name, t.offset, t.data) for t in torn]
        if line.get("tears") != expected:
            raise _Bad("changed: the torn lines are not the ones its recovered line sealed", seq)
        self.report.tears += [
            f"{t.segment.path.name}: torn line of {len(t.data)} bytes at offset "
            f"{t.offset}, sealed at seq {seq}"
            for t in torn
        ]

    def _checkpoint(self, line: dict[str, Any], segment: segments.Segment, seq: int) -> None:
        expected = (segment.instance, self._first_unsealed, seq - 1, self._prev)
        found = (line.get("instance"), line.get("first_seq"), line.get("last_seq"))
        if found + (line.get("last_hash"),) != expected:
            raise _Bad("changed: the checkpoint's range or last hash is not the chain's", seq)
        self._signature(line, seq)
        self._first_unsealed = seq + 1
        self.report.checkpoints += 1
        self.report.last_checkpoint = line
        self.report.unsealed = None

    def _signature(self, line: dict[str, Any], seq: int) -> None:
        key_id = str(line.get("key_id"))
        if self._public_key is not None:
            if key_id != self._expected_key_id:
                raise _Bad(f"wrong key: signed by key id {key_id}", seq)
            public = self._public_key
        else:
            try:
                public = keys.public_from_raw_b64(str(line.get("public_key")))
            except ValueError as exc:
                raise _Bad("bad signature: no valid public key in the checkpoint", seq) from exc
            if keys.key_id(public) != key_id:
                raise _Bad("bad signature: key_id is not the embedded key's", seq)
        if not keys.signature_ok(public, str(line.get("signature")), chain.signed_part(line)):
            raise _Bad("bad signature", seq)
        self.report.key_ids.add(key_id)


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def verify(
    paths: Iterable[Path],
    public_key: Ed25519PublicKey | None = None,
    *,
    allow_unsealed: bool = False,
) -> list[ChainReport]:
    """One report per instance found among ``paths`` (directories or segment files)."""
    found = segments.find(paths)
    instances = sorted({s.instance for s in found})
    return [
        _ChainVerifier(instance, public_key).run(
            [s for s in found if s.instance == instance], allow_unsealed
        )
        for instance in instances
    ]


def describe(report: ChainReport) -> list[str]:
    """Lines for a person: the verdict first."""
    if report.problem is not None:
        return [f"FAIL {report.instance}: {report.problem}"]
    out = [
        f"OK {report.instance}: {report.lines} lines in {report.segments} segments "
        f"(seq 0..{report.next_seq - 1}), {report.checkpoints} checkpoints, key ids "
        f"{', '.join(sorted(report.key_ids)) or 'none'}"
    ]
    last = report.last_checkpoint
    if last is not None:
        out.append(
            f"  last checkpoint: seq {last['seq']} sealing up to seq {last['last_seq']} "
            f"(hash {last['last_hash']}) at time {last['time']}"
        )
    if report.unsealed is not None:
        seq, path, line = report.unsealed
        out.append(
            f"  unsealed: seq {seq}..{report.next_seq - 1} from {path}:{line} come after "
            "the last checkpoint; a truncation there would not be detected"
        )
    out += [f"  recovered: {tear}" for tear in report.tears]
    return out
