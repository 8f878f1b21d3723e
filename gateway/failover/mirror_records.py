"""MirrorMaker 2's own records, decoded: offset syncs and checkpoints (no I/O).

Both use Kafka's fixed protocol types, big-endian: a string is a 2-byte length and
UTF-8 bytes, then INT32 and INT64 as they are.

- An **offset sync** (topic ``mm2-offset-syncs.<target>.internal``, on the source by
  default): key (topic, partition), value (upstream offset, downstream offset): the
  source record at the upstream offset was written to the target at the downstream one.
- A **checkpoint** (topic ``<source>.checkpoints.internal`` on the target): key (group,
  topic, partition), value (version INT16 = 0, upstream offset, downstream offset,
  metadata): the group's committed offset on the source, and where it translates to on
  the target.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

CHECKPOINT_VERSION = 0


class MirrorRecordError(ValueError):
    """A record that is not what MirrorMaker 2 writes."""


@dataclass(frozen=True, slots=True)
class OffsetSync:
    topic: str
    partition: int
    upstream: int
    downstream: int


@dataclass(frozen=True, slots=True)
class Checkpoint:
    group: str
    topic: str
    partition: int
    upstream: int
    downstream: int
    metadata: str


def offset_syncs_topic(target: str) -> str:
    return f"mm2-offset-syncs.{target}.internal"


def checkpoints_topic(source: str) -> str:
    return f"{source}.checkpoints.internal"


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.at, self.what = data, 0, what

    def take(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        if self.at + size > len(self.data):
            raise MirrorRecordError(f"{self.what}: ends after {len(self.data)} bytes")
        (value,) = struct.unpack_from(fmt, self.data, self.at)
        self.at += size
        return int(value)

    def string(self) -> str:
        size = self.take(">h")
        if size < 0 or self.at + size > len(self.data):
            raise MirrorRecordError(f"{self.what}: a string of {size} bytes does not fit")
        raw = self.data[self.at : self.at + size]
        self.at += size
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MirrorRecordError(f"{self.what}: a string is not UTF-8") from None

    def done(self) -> None:
        if self.at != len(self.data):
            raise MirrorRecordError(f"{self.what}: {len(self.data) - self.at} bytes left over")


def decode_offset_sync(key: bytes | None, value: bytes | None) -> OffsetSync:
    if key is None or value is None:
        raise MirrorRecordError("offset sync: no key or no value")
    k, v = _Reader(key, "offset sync key"), _Reader(value, "offset sync value")
    topic, partition = k.string(), k.take(">i")
    k.done()
    upstream, downstream = v.take(">q"), v.take(">q")
    v.done()
    return OffsetSync(topic, partition, upstream, downstream)


def decode_checkpoint(key: bytes | None, value: bytes | None) -> Checkpoint:
    if key is None or value is None:
        raise MirrorRecordError("checkpoint: no key or no value")
    k, v = _Reader(key, "checkpoint key"), _Reader(value, "checkpoint value")
    group, topic, partition = k.string(), k.string(), k.take(">i")
    k.done()
    version = v.take(">h")
    if version != CHECKPOINT_VERSION:
        raise MirrorRecordError(f"checkpoint: version {version}, not {CHECKPOINT_VERSION}")
    upstream, downstream, metadata = v.take(">q"), v.take(">q"), v.string()
    v.done()
    return Checkpoint(group, topic, partition, upstream, downstream, metadata)
