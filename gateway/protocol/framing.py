"""Length-prefixed Kafka frames: split a byte stream into frames under a size limit.

Kafka frames are a signed 32-bit big-endian size followed by that many bytes. The
decoder keeps at most one partial frame plus one read's worth of bytes, so a client
cannot make it buffer more than the limit in force. It tells its caller the size of a
frame as soon as the prefix is in (:meth:`FrameDecoder.pending_size`) and how many of
its bytes are still missing, so that the caller can reserve memory for the frame
before reading its body.
"""

from __future__ import annotations

import struct

from gateway.errors import FrameTooLarge

_SIZE = struct.Struct(">i")


def frame(payload: bytes) -> bytes:
    """Prefix ``payload`` with its size, ready to be written to a socket."""
    return _SIZE.pack(len(payload)) + payload


class FrameDecoder:
    """Turns received bytes into complete frames.

    ``max_frame_size`` can be changed at any time (it is raised after authentication);
    a frame whose prefix exceeds the limit in force when the prefix is read raises
    :class:`FrameTooLarge` before any of its body is buffered.
    """

    __slots__ = ("_buffer", "_expected", "max_frame_size")

    def __init__(self, max_frame_size: int) -> None:
        self._buffer = bytearray()
        self._expected: int | None = None
        self.max_frame_size = max_frame_size

    @property
    def buffered(self) -> int:
        """How many bytes are held waiting for the rest of a frame."""
        return len(self._buffer)

    @property
    def missing(self) -> int:
        """How many bytes the frame in progress still lacks (0 between frames; a
        partial size prefix counts what is left of the prefix)."""
        if self._expected is None:
            return _SIZE.size - len(self._buffer) if 0 < len(self._buffer) < _SIZE.size else 0
        return max(self._expected - len(self._buffer), 0)

    def receive(self, data: bytes) -> None:
        """Add received bytes; take the frames with :meth:`next_frame`."""
        self._buffer += data

    def pending_size(self) -> int | None:
        """The size of the next frame once its prefix has been received (before its
        body is complete), else None. Raises :class:`FrameTooLarge` for a size outside
        the limit in force."""
        if self._expected is None:
            if len(self._buffer) < _SIZE.size:
                return None
            (size,) = _SIZE.unpack_from(self._buffer, 0)
            if size < 0 or size > self.max_frame_size:
                raise FrameTooLarge(f"frame size {size} outside 0..{self.max_frame_size} bytes")
            del self._buffer[: _SIZE.size]
            self._expected = size
        return self._expected

    def next_frame(self) -> bytes | None:
        """The next complete frame, or None until more bytes arrive."""
        size = self.pending_size()
        if size is None or len(self._buffer) < size:
            return None
        with memoryview(self._buffer) as view:
            payload = bytes(view[:size])  # one copy, not two
        del self._buffer[:size]
        self._expected = None
        return payload

    def clear(self) -> None:
        """Drop what is buffered (the connection is closing): the memory goes back now,
        not when a reference cycle holding the decoder is collected."""
        self._buffer = bytearray()
        self._expected = None

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every frame they complete, in order."""
        self.receive(data)
        frames: list[bytes] = []
        while (payload := self.next_frame()) is not None:
            frames.append(payload)
        return frames
