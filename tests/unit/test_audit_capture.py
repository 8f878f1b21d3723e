"""Payload capture in Produce and Fetch events: SHA-256 or the full key and value of
each record, decoded (and decompressed) by aiokafka, with real offsets, records the
client does not get left out, and a damaged batch reported rather than hidden."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatchBuilder

from gateway.audit import events


def batch(
    base_offset: int,
    records: list[tuple[bytes | None, bytes | None]],
    compression: int = 0,
    control: bool = False,
) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=compression,
        is_transactional=int(control),
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for delta, (key, value) in enumerate(records):
        builder.append(delta, timestamp=1000 + delta, key=key, value=value, headers=[("h", b"x")])
    data = bytearray(builder.build())
    data[0:8] = base_offset.to_bytes(8, "big", signed=True)
    if control:
        attributes = int.from_bytes(data[21:23], "big") | 0x20
        data[21:23] = attributes.to_bytes(2, "big")
    return bytes(data)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_produce_capture_hashes_key_and_value_at_the_offsets_the_answer_gave() -> None:
    records = batch(0, [(b"k1", b"v1"), (None, b"v2")])
    result = events.captured(records, "sha256", relative=True, offset_base=40)
    assert result == {
        "captured": [
            {
                "offset": 40,
                "timestamp": 1000,
                "headers": ["h"],
                "key_sha256": sha(b"k1"),
                "value_sha256": sha(b"v1"),
            },
            {
                "offset": 41,
                "timestamp": 1001,
                "headers": ["h"],
                "key_sha256": None,
                "value_sha256": sha(b"v2"),
            },
        ]
    }


def test_a_produce_that_was_not_written_has_no_offsets() -> None:
    result = events.captured(batch(0, [(b"k", b"v")]), "sha256", relative=True, offset_base=None)
    assert [r["offset"] for r in result["captured"]] == [None]


def test_full_capture_of_a_compressed_fetch_leaves_out_records_before_the_fetch_offset() -> None:
    # gzip (1): aiokafka decompresses; the batch starts at 10, the client asked for 12.
    records = batch(10, [(b"a", b"1"), (b"b", b"2"), (b"c", b"3"), (b"d", b"4")], compression=1)
    result = events.captured(records, "full", from_offset=12)
    assert [(r["offset"], r["key"], r["value"]) for r in result["captured"]] == [
        (12, base64.b64encode(b"c").decode(), base64.b64encode(b"3").decode()),
        (13, base64.b64encode(b"d").decode(), base64.b64encode(b"4").decode()),
    ]


def test_transaction_markers_are_not_captured_as_records() -> None:
    data = batch(0, [(b"k", b"v")]) + batch(1, [(None, b"\0\0\0\0\0\0")], control=True)
    result = events.captured(data, "sha256", from_offset=0)
    assert [r["offset"] for r in result["captured"]] == [0]


def test_a_damaged_batch_is_reported_and_what_was_read_before_it_stays() -> None:
    good = batch(0, [(b"k", b"v")])
    damaged = bytearray(batch(1, [(b"x", b"y")], compression=1))
    damaged[-5:] = b"\xff" * 5  # the gzip stream no longer decodes
    result: dict[str, Any] = events.captured(good + bytes(damaged), "sha256", from_offset=0)
    assert [r["offset"] for r in result["captured"]] == [0]
    assert "capture_error" in result


def test_an_events_capture_is_bounded_and_says_how_much_it_left_out(monkeypatch: Any) -> None:
    monkeypatch.setattr(events, "CAPTURE_MAX_RECORDS", 2)
    result = events.captured(batch(0, [(b"k", b"v")] * 5), "sha256", from_offset=0)
    assert len(result["captured"]) == 2 and result["capture_truncated"] == 3
