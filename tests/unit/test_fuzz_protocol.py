"""Fuzz the inbound protocol path: bytes -> FrameDecoder -> codec.decode_request.

Whatever a client sends, decoding either succeeds or raises a ProtocolError (which the
server answers by closing the connection). Any other exception, or the process dying,
is a bug.

kio's native reader can abort the whole process on some inputs, which would take the
test run down with it. The fuzz properties therefore run in a forked child: a Python
exception there is reported with hypothesis' falsifying example, and a killed child is
reported with the input it was decoding.
"""

from __future__ import annotations

import contextlib
import faulthandler
import mmap
import os
import select
import signal
import struct
import time
import traceback
from collections.abc import Callable
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import FrameTooLarge, MalformedRequest, ProtocolError
from gateway.protocol import codec
from gateway.protocol.framing import FrameDecoder, frame
from tests.unit.kafka_strategies import request_bodies, request_frame

# API versions whose requests clients send to the gateway.
SERVED = [
    (0, 3),
    (0, 9),
    (0, 12),
    (1, 4),
    (1, 12),
    (1, 17),
    (2, 7),
    (3, 1),
    (3, 9),
    (3, 12),
    (10, 3),
    (10, 4),
    (17, 1),
    (18, 0),
    (18, 3),
    (19, 7),
    (20, 6),
    (22, 4),
    (23, 4),
    (32, 4),
    (36, 2),
    (60, 1),
]

MAX_FRAME = 1 << 20

FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# Running a property in a child process ------------------------------------------------


class LastInput:
    """The input being decoded, in memory shared with the parent across fork()."""

    _CAPACITY = 1 << 16

    def __init__(self) -> None:
        self._memory = mmap.mmap(-1, 4 + self._CAPACITY)

    def record(self, data: bytes) -> None:
        data = data[: self._CAPACITY]
        self._memory[: 4 + len(data)] = struct.pack(">I", len(data)) + data

    def read(self) -> bytes:
        (size,) = struct.unpack_from(">I", self._memory, 0)
        return bytes(self._memory[4 : 4 + size])


def run_forked(target: Callable[[LastInput], None], timeout: float = 120.0) -> None:
    """Run ``target`` in a forked child; fail with its traceback or with how it died."""
    last = LastInput()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 0
        try:
            os.close(read_fd)
            # A death is reported by the parent; spare the output pytest's and Rust's
            # crash handlers would add in the child.
            faulthandler.disable()
            os.environ["RUST_BACKTRACE"] = "0"
            target(last)
        except BaseException:
            status = 1
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(traceback.format_exc().encode())
        finally:
            os._exit(status)
    os.close(write_fd)
    report = bytearray()
    deadline = time.monotonic() + timeout
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        while True:
            ready, _, _ = select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"fuzzing did not finish in {timeout}s; last input {last.read()!r}")
            data = pipe.read(65536)
            if not data:
                break
            report += data
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        pytest.fail(f"the decoding process died ({name}) on input {last.read().hex()}")
    assert os.WEXITSTATUS(status) == 0, report.decode(errors="replace")


def decode_stream(chunks: list[bytes], last: LastInput) -> None:
    """Feed chunks to a FrameDecoder and decode every frame it yields."""
    decoder = FrameDecoder(MAX_FRAME)
    for chunk in chunks:
        try:
            frames = decoder.feed(chunk)
        except FrameTooLarge:
            return
        for item in frames:
            last.record(item)
            with contextlib.suppress(ProtocolError):
                codec.decode_request(item)


# A corpus of valid requests to mutate -------------------------------------------------


@cache
def corpus() -> tuple[bytes, ...]:
    """Valid request frames of every served API version, drawn once per test run."""
    frames: list[bytes] = []
    for api_key, version in SERVED:

        @settings(FUZZ, max_examples=15)
        @given(body=request_bodies(api_key, version))
        def collect(body: Any) -> None:
            frames.append(request_frame(body, correlation_id=7, client_id="fuzz"))

        collect()
    return tuple(frames)


# Values that sit on a length or count field's edges: null, zero, huge, varint extremes.
INTERESTING = [
    b"\x00",
    b"\x01",
    b"\x7f",
    b"\x80",
    b"\xff",
    b"\xff\xff",
    b"\x7f\xff\xff\xff",
    b"\x80\x00\x00\x00",
    b"\xff\xff\xff\xff",
    b"\x80\x80\x80\x80\x08",
    b"\xff\xff\xff\xff\x0f",
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
]

positions = st.integers(min_value=0, max_value=1 << 16)
mutations = st.one_of(
    st.tuples(st.just("flip"), positions, st.integers(0, 7)),
    st.tuples(st.just("set"), positions, st.integers(0, 255)),
    st.tuples(st.just("insert"), positions, st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("insert"), positions, st.sampled_from(INTERESTING)),
    st.tuples(st.just("overwrite"), positions, st.sampled_from(INTERESTING)),
    st.tuples(st.just("delete"), positions, st.integers(1, 8)),
    st.tuples(st.just("truncate"), positions, st.just(0)),
)


def mutate(data: bytes, operations: list[tuple[str, int, Any]]) -> bytes:
    out = bytearray(data)
    for operation, position, argument in operations:
        at = position % (len(out) + 1)
        if operation == "flip" and at < len(out):
            out[at] ^= 1 << argument
        elif operation == "set" and at < len(out):
            out[at] = argument
        elif operation == "insert":
            out[at:at] = argument
        elif operation == "overwrite":
            out[at : at + len(argument)] = argument
        elif operation == "delete":
            del out[at : at + argument]
        elif operation == "truncate":
            del out[at:]
    return bytes(out)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


# The properties, each run in a child ----------------------------------------------------


def fuzz_mutated_requests(last: LastInput) -> None:
    seeds = corpus()

    @settings(FUZZ, max_examples=1200)
    @given(
        seed=st.sampled_from(seeds),
        operations=st.lists(mutations, min_size=1, max_size=4),
        cuts=st.lists(positions, max_size=4),
    )
    def prop(seed: bytes, operations: list[tuple[str, int, Any]], cuts: list[int]) -> None:
        decode_stream(chunked(frame(mutate(seed, operations)), cuts), last)

    prop()


def fuzz_mutated_streams(last: LastInput) -> None:
    # The size prefixes are mutated too, so frames run into each other or fall short.
    seeds = corpus()

    @settings(FUZZ, max_examples=500)
    @given(
        items=st.lists(st.sampled_from(seeds), min_size=1, max_size=3),
        operations=st.lists(mutations, min_size=1, max_size=3),
        cuts=st.lists(positions, max_size=6),
    )
    def prop(items: list[bytes], operations: list[tuple[str, int, Any]], cuts: list[int]) -> None:
        stream = mutate(b"".join(frame(i) for i in items), operations)
        decode_stream(chunked(stream, cuts), last)

    prop()


def fuzz_random_bodies(last: LastInput) -> None:
    @settings(FUZZ, max_examples=800)
    @given(
        api=st.sampled_from(SERVED),
        correlation_id=st.integers(-(2**31), 2**31 - 1),
        body=st.binary(max_size=300),
    )
    def prop(api: tuple[int, int], correlation_id: int, body: bytes) -> None:
        header = codec.encode_request_header(*api, correlation_id, "fuzz")
        decode_stream([frame(header + body)], last)

    prop()


def fuzz_random_bytes(last: LastInput) -> None:
    @settings(FUZZ, max_examples=500)
    @given(stream=st.binary(max_size=600), cuts=st.lists(positions, max_size=4))
    def prop(stream: bytes, cuts: list[int]) -> None:
        decode_stream(chunked(stream, cuts), last)
        # The same bytes as one frame, so the codec sees them whatever the prefix says.
        decode_stream([frame(stream)], last)

    prop()


def test_mutated_valid_requests_raise_only_protocol_errors() -> None:
    corpus()  # drawn here, so that every child inherits it
    run_forked(fuzz_mutated_requests)


def test_mutated_request_streams_raise_only_protocol_errors() -> None:
    corpus()  # drawn here, so that every child inherits it
    run_forked(fuzz_mutated_streams)


def test_random_bodies_after_a_valid_header_raise_only_protocol_errors() -> None:
    run_forked(fuzz_random_bodies)


def test_random_bytes_raise_only_protocol_errors() -> None:
    run_forked(fuzz_random_bytes)


def test_corpus_holds_valid_requests_of_every_served_api_version() -> None:
    decoded = [codec.decode_request(f) for f in corpus()]

    assert {(r.api_key, r.api_version) for r in decoded} == set(SERVED)


# Inputs the fuzzing found, kept as plain examples -------------------------------------


def test_unknown_tagged_field_raises_only_protocol_errors() -> None:
    # ApiVersions v3 (allowed before authentication): empty client software name and
    # version, then one tagged field with tag 20 and no data.
    data = codec.encode_request_header(18, 3, 1, "c") + b"\x01\x01" + b"\x01\x14\x00"

    # Kafka skips unknown tags; kio refuses them. Either is fine, an untyped error is not.
    try:
        request = codec.decode_request(data)
    except ProtocolError:
        return
    assert (request.api_key, request.api_version) == (18, 3)


def decode_compact_array_of_four_billion_topics(last: LastInput) -> None:
    # Metadata v9 whose topics array claims 2**32 - 2 entries in five bytes.
    data = codec.encode_request_header(3, 9, 1, None) + b"\xff\xff\xff\xff\x0f"
    last.record(data)
    with pytest.raises(MalformedRequest):
        codec.decode_request(data)


def test_huge_array_count_is_malformed_request_not_a_dead_process() -> None:
    run_forked(decode_compact_array_of_four_billion_topics, timeout=30.0)
