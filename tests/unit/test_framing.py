"""FrameDecoder: length-prefixed frames under a size limit, fed in arbitrary chunks."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import FrameTooLarge
from gateway.protocol.framing import FrameDecoder, frame

FAST = settings(max_examples=200, deadline=None, database=None)

payloads = st.lists(st.binary(max_size=300), max_size=12)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """Split ``data`` at the given positions (taken modulo its length, deduplicated)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


def feed_all(decoder: FrameDecoder, chunks: list[bytes]) -> list[bytes]:
    frames: list[bytes] = []
    for chunk in chunks:
        frames.extend(decoder.feed(chunk))
    return frames


def prefix(size: int) -> bytes:
    return struct.pack(">i", size)


@FAST
@given(payloads, st.lists(st.integers(min_value=0), max_size=40))
def test_frames_split_at_any_chunk_boundaries_reassemble_exactly(
    items: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(frame(p) for p in items)
    decoder = FrameDecoder(max_frame_size=300)

    assert feed_all(decoder, chunked(stream, cuts)) == items
    assert decoder.buffered == 0


@FAST
@given(payloads)
def test_frames_fed_one_byte_at_a_time_reassemble_exactly(items: list[bytes]) -> None:
    stream = b"".join(frame(p) for p in items)
    decoder = FrameDecoder(max_frame_size=300)

    assert feed_all(decoder, [stream[i : i + 1] for i in range(len(stream))]) == items


def test_frame_prefixes_payload_with_big_endian_size() -> None:
    assert frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert frame(b"") == b"\x00\x00\x00\x00"


def test_empty_frame_is_returned_as_empty_bytes() -> None:
    assert FrameDecoder(10).feed(frame(b"") + frame(b"x")) == [b"", b"x"]


def test_incomplete_frame_is_held_until_its_last_byte_arrives() -> None:
    decoder = FrameDecoder(100)
    data = frame(b"hello")

    assert decoder.feed(data[:-1]) == []
    assert decoder.buffered == len(b"hell")
    assert decoder.feed(data[-1:]) == [b"hello"]


def test_frame_exactly_at_the_limit_is_accepted() -> None:
    assert FrameDecoder(5).feed(frame(b"12345")) == [b"12345"]


def test_size_prefix_over_limit_raises_before_the_body_arrives() -> None:
    decoder = FrameDecoder(100)

    with pytest.raises(FrameTooLarge, match="101"):
        decoder.feed(prefix(101))
    assert decoder.buffered <= 4


@FAST
@given(st.integers(min_value=-(2**31), max_value=-1))
def test_negative_size_prefix_raises_frame_too_large(size: int) -> None:
    with pytest.raises(FrameTooLarge):
        FrameDecoder(100).feed(prefix(size))


@FAST
@given(st.integers(min_value=101, max_value=2**31 - 1))
def test_any_size_prefix_over_the_limit_raises_frame_too_large(size: int) -> None:
    with pytest.raises(FrameTooLarge):
        FrameDecoder(100).feed(prefix(size) + b"x" * 10)


def test_oversized_frame_after_good_frames_raises_once_they_are_consumed() -> None:
    decoder = FrameDecoder(4)

    with pytest.raises(FrameTooLarge):
        decoder.feed(frame(b"ok") + frame(b"too big"))


def test_raising_max_frame_size_afterwards_admits_bigger_frames() -> None:
    big = b"x" * 1000
    with pytest.raises(FrameTooLarge):
        FrameDecoder(8).feed(frame(big))

    decoder = FrameDecoder(8)
    assert decoder.feed(frame(b"small")) == [b"small"]
    decoder.max_frame_size = 1000
    assert decoder.feed(frame(big)) == [big]


def test_raising_the_limit_mid_stream_applies_to_the_next_prefix() -> None:
    decoder = FrameDecoder(4)
    stream = frame(b"abc") + frame(b"x" * 50)

    assert decoder.feed(stream[:7]) == [b"abc"]
    decoder.max_frame_size = 64
    assert decoder.feed(stream[7:]) == [b"x" * 50]


# A hostile stream: well-formed frames mixed with arbitrary bytes, in arbitrary chunks.
hostile_chunks = st.lists(
    st.one_of(
        st.binary(max_size=64).map(frame),
        st.binary(max_size=64),
        st.integers(min_value=-(2**31), max_value=2**31 - 1).map(prefix),
    ),
    max_size=20,
)


@FAST
@given(hostile_chunks, st.integers(min_value=1, max_value=128))
def test_buffered_bytes_never_exceed_limit_plus_prefix_plus_one_read(
    chunks: list[bytes], limit: int
) -> None:
    decoder = FrameDecoder(limit)
    for chunk in chunks:
        try:
            frames = decoder.feed(chunk)
        except FrameTooLarge:
            assert decoder.buffered <= limit + 4 + len(chunk)
            return
        assert all(len(f) <= limit for f in frames)
        # Between reads only one partial frame (prefix or body) is held.
        assert decoder.buffered < limit + 4
