"""The server side of one Kafka connection, without I/O.

Feed received bytes with :meth:`ServerProtocol.receive_data`, pull events with
:meth:`ServerProtocol.next_event` (h11's shape). Events are pulled one at a time so
that authentication, which changes what the next frame may be, takes effect between
two frames that arrived in one read. Anything the client got wrong raises a
:class:`~gateway.errors.ProtocolError`; the caller closes the connection.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.errors import NotAuthenticated, UnsupportedApi
from gateway.protocol import codec
from gateway.protocol.framing import FrameDecoder
from gateway.protocol.versions import (
    API_VERSIONS,
    SASL_AUTHENTICATE,
    SASL_HANDSHAKE,
    VersionRange,
    unsupported_version_response,
)

# Accepted before the client has authenticated.
PRE_AUTH_APIS = frozenset({API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE})


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A decoded request for a handler."""

    request: codec.Request


@dataclass(frozen=True, slots=True)
class AnswerReady:
    """A response made without a handler (ApiVersions of an unknown version)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class SaslTokenReceived:
    """A bare SASL token, as sent after a SaslHandshake v0."""

    token: bytes


Event = RequestReceived | AnswerReady | SaslTokenReceived
VersionTable = Callable[[], Mapping[int, VersionRange]]


class ServerProtocol:
    """Frames, decodes and gatekeeps one client connection's requests."""

    def __init__(
        self,
        versions: VersionTable,
        pre_auth_max_frame_size: int,
        max_frame_size: int,
        authenticated: bool = False,
    ) -> None:
        self._versions = versions
        self._max_frame_size = max_frame_size
        self._decoder = FrameDecoder(max_frame_size if authenticated else pre_auth_max_frame_size)
        self.is_authenticated = authenticated
        self.expects_raw_token = False

    @property
    def buffered(self) -> int:
        return self._decoder.buffered

    @property
    def missing(self) -> int:
        """Bytes the frame in progress still lacks (0 between frames)."""
        return self._decoder.missing

    @property
    def mid_frame(self) -> bool:
        """Part of a frame has arrived and the rest has not."""
        return self._decoder.buffered > 0 or self._decoder.missing > 0

    def pending_frame_size(self) -> int | None:
        """The size of the next frame as soon as its size prefix has arrived (so that
        memory can be reserved before its body is read), else None. Raises
        :class:`~gateway.errors.FrameTooLarge` for a size over the limit in force."""
        return self._decoder.pending_size()

    def authenticated(self) -> None:
        """The client proved who it is: lift the pre-authentication limits."""
        self.is_authenticated = True
        self.expects_raw_token = False
        self._decoder.max_frame_size = self._max_frame_size

    def discard(self) -> None:
        """Drop the partial frame held (the connection is closing)."""
        self._decoder.clear()

    def receive_data(self, data: bytes) -> None:
        self._decoder.receive(data)

    def next_event(self) -> Event | None:
        """The next event, or None until more bytes arrive."""
        frame = self._decoder.next_frame()
        if frame is None:
            return None
        if self.expects_raw_token:
            self.expects_raw_token = False
            return SaslTokenReceived(frame)
        prefix = codec.read_prefix(frame)
        served = self._versions()
        supported = served.get(prefix.api_key)
        too_new = supported is None or prefix.api_version > supported.max
        if prefix.api_key == API_VERSIONS and too_new:
            answer = unsupported_version_response(served)
            return AnswerReady(codec.encode_response(prefix.correlation_id, answer))
        if supported is None or prefix.api_version not in supported:
            raise UnsupportedApi(
                f"api_key={prefix.api_key} version={prefix.api_version} is not served"
            )
        if not self.is_authenticated and prefix.api_key not in PRE_AUTH_APIS:
            raise NotAuthenticated(f"api_key={prefix.api_key} before authentication")
        return RequestReceived(codec.decode_request(frame))
