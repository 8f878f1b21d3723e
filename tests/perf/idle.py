"""Idle client connections: raw sockets that each complete one ApiVersions exchange.

After the exchange the peer (broker or gateway) holds a real session for the socket,
which then stays silent until closed.
"""

from __future__ import annotations

import contextlib
import socket
import struct

from tests.perf.targets import BenchError

API_VERSIONS_KEY = 18
API_VERSIONS_VERSION = 3
CLIENT_ID = b"bench-idle"
SOFTWARE_NAME = b"bench-idle"
SOFTWARE_VERSION = b"1.0"
CONNECT_TIMEOUT_S = 10.0


def _compact_string(value: bytes) -> bytes:
    # Unsigned varint of len+1; our strings are short enough for one byte.
    assert len(value) < 127
    return bytes([len(value) + 1]) + value


def api_versions_request(correlation_id: int) -> bytes:
    """An ApiVersions v3 request frame (request header v2: flexible, with client_id)."""
    header = (
        struct.pack(">hhi", API_VERSIONS_KEY, API_VERSIONS_VERSION, correlation_id)
        + struct.pack(">h", len(CLIENT_ID))
        + CLIENT_ID
        + b"\x00"  # no tagged fields
    )
    body = _compact_string(SOFTWARE_NAME) + _compact_string(SOFTWARE_VERSION) + b"\x00"
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = sock.recv(remaining)
        if not chunk:
            raise BenchError("peer closed the connection during ApiVersions")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def open_idle_connection(host: str, port: int, correlation_id: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
    try:
        sock.sendall(api_versions_request(correlation_id))
        (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
        response = _recv_exactly(sock, size)
        # Response header v0 (ApiVersions answers always use v0), then error_code.
        got_id, error_code = struct.unpack(">ih", response[:6])
        if got_id != correlation_id or error_code != 0:
            raise BenchError(f"ApiVersions answer: correlation {got_id}, error {error_code}")
    except BaseException:
        sock.close()
        raise
    return sock


class IdleConnections:
    """``count`` idle sessions to host:port, opened by :meth:`open`, closed by :meth:`close`."""

    def __init__(self, host: str, port: int, count: int) -> None:
        self.host = host
        self.port = port
        self.count = count
        self.sockets: list[socket.socket] = []

    def open(self) -> None:
        try:
            for i in range(self.count):
                self.sockets.append(open_idle_connection(self.host, self.port, i + 1))
        except (OSError, BenchError) as err:
            opened = len(self.sockets)
            self.close()
            raise BenchError(f"idle connection {opened + 1} of {self.count} failed: {err}") from err

    def still_open(self) -> int:
        """How many sockets the peer has not closed (a closed one reads EOF)."""
        alive = 0
        for sock in self.sockets:
            try:
                sock.setblocking(False)
                data = sock.recv(1, socket.MSG_PEEK)
                alive += 1 if data else 0
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    sock.setblocking(True)
        return alive

    def close(self) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()
        self.sockets = []

    def __enter__(self) -> IdleConnections:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
