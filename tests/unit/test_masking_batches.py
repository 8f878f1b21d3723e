"""Record batch rewriting (`edit_fields`, what masking runs): only changed batches are
re-encoded, and a re-encoded batch keeps every header field, each record's offset and
timestamp deltas, its codec, and a valid CRC, read back by aiokafka's own batch reader
(an independent implementation)."""

from __future__ import annotations

import struct

import pytest
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.masking import batches
from gateway.masking.batches import Batch, BatchError, Headers, edit_fields

Edited = tuple[bytes | None, bytes | None, Headers | None] | None

CODECS = [batches.NONE, batches.GZIP, batches.SNAPPY, batches.LZ4, batches.ZSTD]


def build(
    rows: list[tuple[int, bytes | None, bytes | None, list[tuple[str, bytes | None]]]],
    *,
    codec: int = batches.NONE,
    base_offset: int = 100,
    transactional: bool = False,
    producer_id: int = -1,
    base_timestamp: int = 1_700_000_000_000,
) -> bytes:
    """A batch made by aiokafka's builder: rows of (offset delta, key, value, headers),
    at ``base_offset`` (as a broker sets it) and with a leader epoch of 7."""
    builder = DefaultRecordBatchBuilder(
        2, codec, int(transactional), producer_id, 3 if producer_id >= 0 else -1, 11, 1 << 20
    )
    for i, (delta, key, value, headers) in enumerate(rows):
        builder.append(delta, base_timestamp + 10 * i, key, value, headers)
    raw = bytearray(builder.build())
    struct.pack_into(">q", raw, 0, base_offset)
    struct.pack_into(">i", raw, 12, 7)
    # The CRC does not cover base offset and leader epoch: it stays valid.
    return bytes(raw)


def read(data: bytes) -> list[DefaultRecordBatch]:
    out, pos = [], 0
    while pos < len(data):
        size = 12 + struct.unpack_from(">i", data, pos + 8)[0]
        out.append(DefaultRecordBatch(data[pos : pos + size]))
        pos += size
    return out


def upper_values(key: bytes | None, value: bytes | None, headers: Headers | None) -> Edited:
    if value is None:
        return None
    return key, value.upper(), None


def unchanged(key: bytes | None, value: bytes | None, headers: Headers | None) -> Edited:
    return None


ROWS = [
    (0, b"k0", b"card 4111", [("h", b"1")]),
    (1, None, b"mail a@b.c", []),
    (2, b"k2", None, [("trace", None)]),
]


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: batches.CODEC_NAMES[c])
def test_a_rewritten_batch_keeps_its_header_codec_and_record_deltas(codec: int) -> None:
    original = build(ROWS, codec=codec, transactional=True, producer_id=4242)
    result = edit_fields(original, upper_values)
    assert result.batches == result.rewritten == 1
    (before,), (after,) = read(original), read(result.records)
    assert after.validate_crc()
    for name in (
        "base_offset",
        "magic",
        "attributes",
        "compression_type",
        "last_offset_delta",
        "first_timestamp",
        "max_timestamp",
        "producer_id",
        "producer_epoch",
        "base_sequence",
        "is_transactional",
    ):
        assert getattr(after, name) == getattr(before, name), name
    assert result.records[12:16] == original[12:16]  # partition leader epoch
    old, new = list(before), list(after)
    assert [(r.offset, r.timestamp, r.key, r.headers) for r in new] == [
        (r.offset, r.timestamp, r.key, r.headers) for r in old
    ]
    assert [r.value for r in new] == [b"CARD 4111", b"MAIL A@B.C", None]


def test_a_batch_without_changes_is_passed_on_as_the_same_bytes() -> None:
    original = build(ROWS, codec=batches.GZIP)
    result = edit_fields(original, unchanged)
    assert result.records == original
    assert result.rewritten == 0 and result.batches == 1


def test_offset_gaps_of_a_compacted_batch_are_kept() -> None:
    original = build([(0, b"a", b"x", []), (2, b"b", b"y", []), (5, b"c", b"z", [])])
    result = edit_fields(original, upper_values)
    assert [r.offset for r in read(result.records)[0]] == [100, 102, 105]


def test_control_batches_are_never_handed_to_edit() -> None:
    marker = bytearray(build([(0, b"\x00\x00\x00\x00", b"\x00\x00\x00\x00\x00\x00", [])]))
    attributes = struct.unpack_from(">h", marker, 21)[0] | batches.CONTROL_MASK
    struct.pack_into(">h", marker, 21, attributes)
    seen: list[bytes | None] = []

    def remember(key: bytes | None, value: bytes | None, headers: Headers | None) -> Edited:
        seen.append(value)
        return key, value, None

    result = edit_fields(bytes(marker) + build(ROWS, base_offset=101), remember)
    assert len(seen) == len(ROWS)
    assert result.records.startswith(bytes(marker))


def test_the_timestamp_type_of_a_log_append_time_batch_is_kept() -> None:
    raw = bytearray(build(ROWS))
    header = batches.read_batch(memoryview(raw))
    appended = Batch(**{**_fields(header), "attributes": header.attributes | 0x08})
    original = batches.pack_batch(appended, bytes(raw[61:]))
    result = edit_fields(original, upper_values)
    (after,) = read(result.records)
    assert after.timestamp_type == 1 and after.validate_crc()


def _fields(batch: Batch) -> dict[str, int]:
    return {name: getattr(batch, name) for name in Batch.__slots__}


def test_a_partial_batch_at_the_end_is_dropped_not_passed_on() -> None:
    whole, cut = build(ROWS), build(ROWS, base_offset=103)
    result = edit_fields(whole + cut[:40], unchanged)
    assert result.records == whole
    assert result.dropped_partial == 40


def test_an_older_magic_is_refused() -> None:
    raw = bytearray(build(ROWS))
    raw[16] = 1
    with pytest.raises(BatchError, match="magic 1"):
        edit_fields(bytes(raw), upper_values)


def test_records_that_do_not_decompress_are_refused() -> None:
    raw = bytearray(build(ROWS * 20, codec=batches.GZIP))
    raw[70:90] = b"\xff" * 20
    with pytest.raises(BatchError, match="gzip records do not decompress"):
        edit_fields(bytes(raw), upper_values)


def test_records_that_overrun_their_batch_are_refused() -> None:
    raw = bytearray(build(ROWS))
    struct.pack_into(">i", raw, 57, 5)  # claims five records, holds three
    with pytest.raises(BatchError):
        edit_fields(bytes(raw), upper_values)


def test_a_header_value_changed_by_edit_is_written() -> None:
    def drop_headers(key: bytes | None, value: bytes | None, headers: Headers | None) -> Edited:
        if not headers:
            return None
        return key, value, [(n, v) for n, v in headers if n != "h"]

    result = edit_fields(build(ROWS), drop_headers, with_headers=True)
    assert [r.headers for r in read(result.records)[0]] == [[], [], [("trace", None)]]


values = st.one_of(st.none(), st.binary(max_size=40))
rows = st.lists(
    st.tuples(
        values,
        values,
        st.lists(st.tuples(st.text(max_size=5), values), max_size=2),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(rows=rows, codec=st.sampled_from(CODECS), gaps=st.lists(st.integers(1, 3), min_size=8))
def test_any_batch_reads_back_equal_apart_from_what_edit_changed(
    rows: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]],
    codec: int,
    gaps: list[int],
) -> None:
    deltas, at = [], 0
    for gap in gaps[: len(rows)]:
        deltas.append(at)
        at += gap
    original = build([(d, k, v, h) for d, (k, v, h) in zip(deltas, rows, strict=True)], codec=codec)

    def reverse(key: bytes | None, value: bytes | None, headers: Headers | None) -> Edited:
        return key, None if value is None else value[::-1], None

    (new_batch,) = read(edit_fields(original, reverse).records)
    (old_batch,) = read(original)
    assert new_batch.validate_crc() and new_batch.compression_type == codec
    after, before = list(new_batch), list(old_batch)
    assert [(r.offset, r.timestamp, r.key, r.headers) for r in after] == [
        (r.offset, r.timestamp, r.key, r.headers) for r in before
    ]
    assert [r.value for r in after] == [
        None if r.value is None else bytes(r.value)[::-1] for r in before
    ]


@pytest.mark.parametrize("codec", [batches.GZIP, batches.SNAPPY, batches.LZ4, batches.ZSTD])
def test_records_that_decompress_past_the_bound_are_refused_before_taking_it(codec: int) -> None:
    # 4 MiB of zeros in one record: a few kilobytes compressed (snappy states its size).
    bomb = build([(0, b"k", b"\0" * (4 << 20), [])], codec=codec)
    assert len(bomb) < 256 * 1024
    with pytest.raises(batches.BatchTooLarge, match=f"{batches.CODEC_NAMES[codec]} records"):
        batches.decode(bomb, max_batch_bytes=1 << 20)
    # Under a bound it fits, it decodes whole, whatever the first guess of its size.
    (item,) = batches.decode(bomb, max_batch_bytes=8 << 20).batches
    assert item.records is not None and item.records[0].value == b"\0" * (4 << 20)


def test_the_snappy_size_check_reads_every_xerial_block() -> None:
    from aiokafka import codec as aiokafka_codec

    framed = aiokafka_codec.snappy_encode(b"a" * 100_000, xerial_compatible=True)
    assert framed.startswith(b"\x82SNAPPY\x00")
    assert batches._snappy_size(memoryview(framed)) == 100_000
    raw = aiokafka_codec.snappy_encode(b"b" * 5000, xerial_compatible=False)
    assert batches._snappy_size(memoryview(raw)) == 5000
