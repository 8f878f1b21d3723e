"""Rewriting the records of Kafka record batches (magic 2) while keeping everything
else of each batch as it was.

A Fetch answer's or Produce request's ``records`` field is a run of batches.
:func:`edit_fields` walks it once, hands each record of each data batch to an ``edit``
callback, and writes again only the records it changed, and only the batches that hold
them; :func:`decode` reads every record, for a caller that only looks. A rewritten
batch keeps its base offset,
partition leader epoch, attributes (compression codec, timestamp type, transactional
and control flags), last offset delta, base and max timestamps, producer id, epoch,
base sequence and record count, and each record keeps its attributes, timestamp delta
and offset delta (and its key and headers unless edit changed them), so offsets,
compaction gaps, transactions and idempotence are as the broker wrote them; the
records are compressed again with the batch's own codec
and the CRC-32C is computed anew. A batch whose records did not change is passed on
as the same bytes. Control batches (transaction markers) hold no data and are never
touched. A partial batch at the end (a broker may cut a Fetch answer inside one) is
dropped, never passed on unread: the client fetches it again from its offset.

The codecs are aiokafka's, the CRC the ``crc32c`` package's (in C; aiokafka's is
several times slower); the layout is Kafka's (``DefaultRecordBatch``):

    baseOffset int64 | batchLength int32 | partitionLeaderEpoch int32 | magic int8 |
    crc uint32 | attributes int16 | lastOffsetDelta int32 | baseTimestamp int64 |
    maxTimestamp int64 | producerId int64 | producerEpoch int16 | baseSequence int32 |
    recordsCount int32 | records...

    record: length varint | attributes int8 | timestampDelta varlong |
    offsetDelta varint | key (varint length, -1 = null) | value (same) |
    headers count varint | each header: key (varint length, UTF-8) and value

Anything that does not parse (an older magic, a bad length, a codec that will not
decode, records that overrun their batch) raises `BatchError`: a caller that masks
must not pass such data on. Decompression is bounded: a batch whose records would
take more than ``max_batch_bytes`` once decompressed (a few kilobytes of zstd can
claim gigabytes) raises `BatchTooLarge` before that memory is taken. The output
buffer starts at a few times the compressed size and grows by four up to the bound,
so an ordinary batch is decompressed once.

No I/O and no asyncio here.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import cramjam
from aiokafka import codec
from aiokafka.record.util import decode_varint, encode_varint
from crc32c import crc32c as calc_crc32c

HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = HEADER.size  # 61
LOG_OVERHEAD = 12  # baseOffset and batchLength: not counted in batchLength
ATTRIBUTES_OFFSET = 21
CRC_OFFSET = 17
MAGIC_OFFSET = 16

CODEC_MASK = 0x07
TRANSACTIONAL_MASK = 0x10
CONTROL_MASK = 0x20

# The most a batch's records may take decompressed (masking.max_batch_bytes).
MAX_BATCH_BYTES = 64 * 1024 * 1024
# The first output buffer: this many times the compressed size, at least 64 KiB.
_FIRST_GUESS_RATIO = 8
_FIRST_GUESS_MIN = 64 * 1024
_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = 16
# What cramjam says when the output buffer is too small (as opposed to corrupt input).
_TOO_SMALL = "failed to write whole buffer"

NONE, GZIP, SNAPPY, LZ4, ZSTD = 0, 1, 2, 3, 4
CODEC_NAMES = {NONE: "none", GZIP: "gzip", SNAPPY: "snappy", LZ4: "lz4", ZSTD: "zstd"}

_DECODE: dict[int, Callable[[bytes], bytes]] = {
    GZIP: codec.gzip_decode,
    SNAPPY: codec.snappy_decode,
    LZ4: codec.lz4_decode,
    ZSTD: codec.zstd_decode,
}
_DECODE_INTO: dict[int, Callable[[bytes, bytearray], int]] = {
    GZIP: cramjam.gzip.decompress_into,
    LZ4: cramjam.lz4.decompress_into,
    ZSTD: cramjam.zstd.decompress_into,
}
_ENCODE: dict[int, Callable[[bytes], bytes]] = {
    GZIP: codec.gzip_encode,
    SNAPPY: codec.snappy_encode,
    LZ4: codec.lz4_encode,
    ZSTD: codec.zstd_encode,
}


class BatchError(Exception):
    """Records that cannot be read or written back as they came."""


class BatchTooLarge(BatchError):
    """Records that would take more than the bound once decompressed."""


@dataclass(slots=True)
class Record:
    """One record of a batch, as :func:`decode` read it."""

    attributes: int
    timestamp_delta: int
    offset_delta: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


@dataclass(frozen=True, slots=True)
class Batch:
    """The header fields of one batch, as read."""

    base_offset: int
    partition_leader_epoch: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    count: int

    @property
    def codec(self) -> int:
        return self.attributes & CODEC_MASK

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_MASK)

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_MASK)


@dataclass
class Rewritten:
    """What :func:`edit_fields` made of a run of batches."""

    records: bytes
    batches: int = 0  # complete batches read
    rewritten: int = 0  # of them, re-encoded because a record changed
    bytes_rewritten: int = 0  # size of the re-encoded batches
    dropped_partial: int = 0  # bytes of a trailing partial batch left out
    codecs: set[str] = field(default_factory=set)


Headers = list[tuple[str, bytes | None]]
# ``edit(key, value, headers)``: the record's new key, value and headers, or None when
# it stays as it is. ``headers`` is None unless asked for; None in the answer keeps the
# headers as read.
FieldEdit = Callable[
    [bytes | None, bytes | None, Headers | None],
    tuple[bytes | None, bytes | None, Headers | None] | None,
]


@dataclass
class Decoded:
    """One complete batch of a run: its bytes as read, its header, and (data batches
    only) its records."""

    whole: memoryview
    batch: Batch
    records: list[Record] | None  # None: a control or empty batch


@dataclass
class Run:
    """A run of batches, decoded; ``dropped_partial`` bytes of a trailing partial batch
    were left out."""

    batches: list[Decoded]
    dropped_partial: int = 0


def _complete_batches(
    data: memoryview, partial: Callable[[int], None]
) -> Iterator[tuple[memoryview, Batch]]:
    """Each complete batch of ``data`` (its bytes and header); ``partial`` is told the
    size of a trailing partial batch, left out."""
    pos = 0
    while pos < len(data):
        if len(data) - pos < LOG_OVERHEAD + 5:
            partial(len(data) - pos)
            return
        length = struct.unpack_from(">i", data, pos + 8)[0]
        if length < HEADER_SIZE - LOG_OVERHEAD:
            raise BatchError(f"a batch at byte {pos} has a bad length {length}")
        size = LOG_OVERHEAD + length
        if pos + size > len(data):
            partial(len(data) - pos)
            return
        magic = data[pos + MAGIC_OFFSET]
        if magic != 2:
            raise BatchError(f"a batch at byte {pos} has magic {magic}; only 2 is rewritten")
        whole = data[pos : pos + size]
        yield whole, read_batch(whole)
        pos += size


def decode(
    records: bytes | bytearray | memoryview | None, max_batch_bytes: int = MAX_BATCH_BYTES
) -> Run:
    """Every complete batch of ``records`` with its records decoded (and decompressed,
    each batch to at most ``max_batch_bytes``)."""
    run = Run([])

    def partial(size: int) -> None:
        run.dropped_partial = size

    for whole, batch in _complete_batches(memoryview(records or b""), partial):
        found: list[Record] | None = None
        if not batch.is_control and batch.count:
            body = _decompress(batch.codec, whole[HEADER_SIZE:], max_batch_bytes)
            found = decode_records(body, batch.count)
        run.batches.append(Decoded(whole, batch, found))
    return run


def edit_fields(
    records: bytes | bytearray | memoryview | None,
    edit: FieldEdit,
    *,
    with_headers: bool = False,
    max_batch_bytes: int = MAX_BATCH_BYTES,
) -> Rewritten:
    """Each data record's key, value and (``with_headers``) headers go to ``edit``; a
    record it changes is written again in place, every other record's bytes are copied
    as they are, and a batch with no record changed is passed on whole (see the module
    docstring for what a rewritten batch keeps)."""
    result = Rewritten(b"")
    out = bytearray()

    def partial(size: int) -> None:
        result.dropped_partial = size

    for whole, batch in _complete_batches(memoryview(records or b""), partial):
        result.batches += 1
        if batch.is_control or not batch.count:
            out += whole
            continue
        result.codecs.add(CODEC_NAMES.get(batch.codec, str(batch.codec)))
        body = _decompress(batch.codec, whole[HEADER_SIZE:], max_batch_bytes)
        edited = _edit_section(body, batch.count, edit, with_headers)
        if edited is None:
            out += whole
            continue
        encoded = edited if batch.codec == NONE else _compress(batch.codec, bytes(edited))
        result.rewritten += 1
        result.bytes_rewritten += append_batch(out, batch, encoded)
    result.records = bytes(out)
    return result


def _edit_section(body: bytes, count: int, edit: FieldEdit, with_headers: bool) -> bytearray | None:
    """The ``count`` records of ``body`` after ``edit``, or None when none changed."""
    out: bytearray | None = None
    copied = pos = 0
    try:
        for _ in range(count):
            start = pos
            length, pos = decode_varint(body, pos)
            end = pos + length
            if length < 0 or end > len(body):
                raise BatchError("a record overruns its batch")
            fields_at = pos
            _, pos = decode_varint(body, pos + 1)  # attributes, then timestamp delta
            _, pos = decode_varint(body, pos)  # offset delta
            key_at = pos
            key, pos = _bytes(body, pos, end)
            value_at = pos
            value, pos = _bytes(body, pos, end)
            value_end = pos
            headers, pos = _headers(body, pos, end, with_headers)
            if pos != end:
                raise BatchError("a record's length does not match its fields")
            new = edit(key, value, headers)
            if new is None:
                continue
            if out is None:
                out = bytearray()
            out += body[copied:start]
            new_key, new_value, new_headers = new
            # Attributes and deltas as read; the key and headers as read unless changed.
            head = (
                body[fields_at:value_at]
                if new_key is key
                else _with_key(body, fields_at, key_at, new_key)
            )
            size = _size_bytes(-1 if new_value is None else len(new_value))
            tail = body[value_end:end] if new_headers is None else _encoded_headers(new_headers)
            length = (
                len(head) + len(size) + len(tail) + (0 if new_value is None else len(new_value))
            )
            out += _size_bytes(length)
            out += head
            out += size
            if new_value is not None:
                out += new_value
            out += tail
            copied = end
    except (IndexError, UnicodeDecodeError) as exc:
        raise BatchError(f"records do not parse: {type(exc).__name__}") from exc
    if pos != len(body):
        raise BatchError(f"{len(body) - pos} bytes follow the batch's {count} records")
    if out is None:
        return None
    out += body[copied:]
    return out


def _with_key(body: bytes, fields_at: int, key_at: int, key: bytes | None) -> bytes:
    head = bytearray(body[fields_at:key_at])
    _put_bytes(head, key)
    return bytes(head)


def _encoded_headers(headers: Headers) -> bytes:
    out = bytearray()
    _put_headers(out, headers)
    return bytes(out)


def _headers(
    buf: bytes | bytearray, pos: int, end: int, parse: bool
) -> tuple[list[tuple[str, bytes | None]] | None, int]:
    """A record's headers (None when not ``parse``: they are only walked over)."""
    count, pos = decode_varint(buf, pos)
    if count < 0:
        raise BatchError("a record has a negative header count")
    headers: list[tuple[str, bytes | None]] | None = [] if parse else None
    for _ in range(count):
        name, pos = _bytes(buf, pos, end)
        if name is None:
            raise BatchError("a record header has a null name")
        value, pos = _bytes(buf, pos, end)
        if headers is not None:
            headers.append((name.decode("utf-8"), value))
    return headers, pos


def read_batch(whole: memoryview) -> Batch:
    (
        base_offset,
        _length,
        leader_epoch,
        _magic,
        _crc,
        attributes,
        last_offset_delta,
        base_timestamp,
        max_timestamp,
        producer_id,
        producer_epoch,
        base_sequence,
        count,
    ) = HEADER.unpack_from(whole, 0)
    return Batch(
        base_offset=base_offset,
        partition_leader_epoch=leader_epoch,
        attributes=attributes,
        last_offset_delta=last_offset_delta,
        base_timestamp=base_timestamp,
        max_timestamp=max_timestamp,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        count=count,
    )


def pack_batch(batch: Batch, encoded: bytes | bytearray) -> bytes:
    """A batch of ``batch``'s header fields around ``encoded`` (records, compressed as
    its attributes say), with its length and CRC-32C computed."""
    out = bytearray()
    append_batch(out, batch, encoded)
    return bytes(out)


def append_batch(out: bytearray, batch: Batch, encoded: bytes | bytearray) -> int:
    """:func:`pack_batch` written at the end of ``out`` (no copy of the batch made);
    returns its size."""
    at = len(out)
    out += bytes(HEADER_SIZE)
    HEADER.pack_into(
        out,
        at,
        batch.base_offset,
        HEADER_SIZE - LOG_OVERHEAD + len(encoded),
        batch.partition_leader_epoch,
        2,
        0,
        batch.attributes,
        batch.last_offset_delta,
        batch.base_timestamp,
        batch.max_timestamp,
        batch.producer_id,
        batch.producer_epoch,
        batch.base_sequence,
        batch.count,
    )
    out += encoded
    with memoryview(out) as view:
        crc = calc_crc32c(view[at + ATTRIBUTES_OFFSET :])
    struct.pack_into(">I", out, at + CRC_OFFSET, crc)
    return HEADER_SIZE + len(encoded)


def crc_ok(whole: bytes | memoryview) -> bool:
    """Whether a whole batch's CRC-32C matches its bytes."""
    view = memoryview(whole)
    (stored,) = struct.unpack_from(">I", view, CRC_OFFSET)
    return bool(stored == calc_crc32c(bytes(view[ATTRIBUTES_OFFSET:])))


def _decompress(codec_id: int, data: memoryview, limit: int) -> bytes:
    if codec_id == NONE:
        return bytes(data)
    decode = _DECODE.get(codec_id)
    if decode is None:
        raise BatchError(f"unknown compression codec {codec_id}")
    name = CODEC_NAMES[codec_id]
    try:
        if codec_id == SNAPPY:
            # Snappy states each block's decompressed size up front.
            claimed = _snappy_size(data)
            if claimed > limit:
                raise BatchTooLarge(f"{name} records claim {claimed} bytes, over {limit}")
            return decode(bytes(data))
        return _decompress_into(_DECODE_INTO[codec_id], bytes(data), limit, name)
    except BatchError:
        raise
    except Exception as exc:  # noqa: BLE001 - every codec library raises its own types
        raise BatchError(f"{name} records do not decompress: {type(exc).__name__}") from exc


def _decompress_into(
    into: Callable[[bytes, bytearray], int], data: bytes, limit: int, name: str
) -> bytes:
    """Decompress into a buffer that grows by four up to ``limit`` bytes."""
    size = min(limit, max(_FIRST_GUESS_MIN, _FIRST_GUESS_RATIO * len(data)))
    while True:
        out = bytearray(size)
        try:
            written = into(data, out)
        except cramjam.DecompressionError as exc:
            if _TOO_SMALL not in str(exc):
                raise BatchError(f"{name} records do not decompress: {exc}") from None
            if size >= limit:
                raise BatchTooLarge(
                    f"{name} records take more than {limit} bytes decompressed"
                ) from None
            size = min(limit, size * 4)
            continue
        return bytes(memoryview(out)[:written])


def _snappy_size(data: memoryview) -> int:
    """The decompressed size snappy data declares: raw snappy starts with it as a
    varint; the xerial framing Kafka clients use is a header, then blocks of a 4-byte
    length and raw snappy each."""
    raw = bytes(data)
    if not raw.startswith(_XERIAL_MAGIC):
        return _uvarint(raw, 0)
    total, pos = 0, _XERIAL_HEADER
    while pos + 4 <= len(raw):
        (block,) = struct.unpack_from(">i", raw, pos)
        if block <= 0 or pos + 4 + block > len(raw):
            raise BatchError("snappy records have a bad block length")
        total += _uvarint(raw, pos + 4)
        pos += 4 + block
    return total


def _uvarint(data: bytes, pos: int) -> int:
    """An unsigned little-endian base-128 varint (snappy's length; not zigzag)."""
    value = shift = 0
    while pos < len(data) and shift <= 35:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value
        pos, shift = pos + 1, shift + 7
    raise BatchError("snappy records have a bad length")


def _compress(codec_id: int, data: bytes) -> bytes:
    encode = _ENCODE.get(codec_id)
    if encode is None:
        raise BatchError(f"unknown compression codec {codec_id}")
    return encode(data)


def decode_records(body: bytes, count: int) -> list[Record]:
    """The ``count`` records of an uncompressed records section."""
    buf = bytearray(body)
    records: list[Record] = []
    pos = 0
    try:
        for _ in range(count):
            length, pos = decode_varint(buf, pos)
            end = pos + length
            if length < 0 or end > len(buf):
                raise BatchError("a record overruns its batch")
            attributes = buf[pos]
            pos += 1
            timestamp_delta, pos = decode_varint(buf, pos)
            offset_delta, pos = decode_varint(buf, pos)
            key, pos = _bytes(buf, pos, end)
            value, pos = _bytes(buf, pos, end)
            headers, pos = _headers(buf, pos, end, True)
            assert headers is not None  # asked for
            if pos != end:
                raise BatchError("a record's length does not match its fields")
            records.append(Record(attributes, timestamp_delta, offset_delta, key, value, headers))
    except (IndexError, UnicodeDecodeError) as exc:
        raise BatchError(f"records do not parse: {type(exc).__name__}") from exc
    if pos != len(buf):
        raise BatchError(f"{len(buf) - pos} bytes follow the batch's {count} records")
    return records


def _bytes(buf: bytes | bytearray, pos: int, end: int) -> tuple[bytes | None, int]:
    length, pos = decode_varint(buf, pos)
    if length < 0:
        return None, pos
    if pos + length > end:
        raise BatchError("a record field overruns its record")
    return bytes(buf[pos : pos + length]), pos + length


# The varints of -1 to 63 (one byte each), looked up instead of encoded.
_SHORT_SIZES = {n: bytes([((n << 1) ^ (n >> 63)) & 0xFF]) for n in range(-1, 64)}


def _size_bytes(n: int) -> bytes:
    found = _SHORT_SIZES.get(n)
    if found is not None:
        return found
    out = bytearray()
    encode_varint(n, out.append)
    return bytes(out)


def _put_headers(out: bytearray, headers: list[tuple[str, bytes | None]]) -> None:
    encode_varint(len(headers), out.append)
    for name, value in headers:
        _put_bytes(out, name.encode("utf-8"))
        _put_bytes(out, value)


def _put_bytes(out: bytearray, data: bytes | None) -> None:
    if data is None:
        encode_varint(-1, out.append)
        return
    encode_varint(len(data), out.append)
    out += data
