"""Send kio-encoded requests over aiokafka's broker connections.

aiokafka's ``AIOKafkaConnection`` does the TCP/TLS connect, SASL (SCRAM, PLAIN,
OAUTHBEARER) with the gateway's credentials, correlation ids and pipelining. It
expects requests in its own struct format; :class:`EncodedRequest` is the small
adapter that lets it carry bytes that kio encoded, and hands the response body back
as bytes for kio to decode.
"""

from __future__ import annotations

import io
from typing import Any

from gateway.protocol import codec


class _Header:
    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    def encode(self) -> bytearray:
        # aiokafka sends ``header.encode() + body.encode()``: a bytearray on the left
        # lets the body be a memoryview of the client's frame, copied once there.
        return bytearray(self._data)


class _ResponseHeader:
    __slots__ = ("correlation_id",)

    def __init__(self, correlation_id: int) -> None:
        self.correlation_id = correlation_id


class _RawResponse:
    """Stands in for aiokafka's response struct: the body stays bytes, uncopied."""

    @staticmethod
    def decode(buffer: io.BytesIO) -> memoryview:
        # A BytesIO made from bytes hands the same bytes back from getvalue().
        return memoryview(buffer.getvalue())[buffer.tell() :]


def _read_uvarint(buffer: io.BytesIO) -> int:
    result = shift = 0
    while True:
        byte = buffer.read(1)
        if not byte:
            raise EOFError("response header ends inside a varint")
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
        shift += 7
        if shift > 28:
            raise ValueError("varint longer than 5 bytes in response header")


class EncodedRequest:
    """A request body already encoded by kio, in the shape aiokafka sends."""

    __slots__ = ("api_key", "api_version", "_body", "_client_id", "_flexible_response")

    RESPONSE_TYPE = _RawResponse

    def __init__(
        self, api_key: int, api_version: int, body: bytes | memoryview, client_id: str | None
    ) -> None:
        self.api_key = api_key
        self.api_version = api_version
        self._body = body
        self._client_id = client_id
        self._flexible_response = (
            codec.response_schema(api_key, api_version).__flexible__
            and api_key != codec.API_VERSIONS_KEY
        )

    @classmethod
    def of(cls, entity: Any, client_id: str | None) -> EncodedRequest:
        return cls(entity.__api_key__, entity.__version__, codec.encode_body(entity), client_id)

    def prepare(self, versions: object) -> EncodedRequest:
        # aiokafka picks a struct version from the broker's ApiVersions here; ours was
        # chosen by the gateway's own negotiation already.
        return self

    def build_request_header(self, correlation_id: int, client_id: str) -> _Header:
        return _Header(
            codec.encode_request_header(
                self.api_key, self.api_version, correlation_id, self._client_id or client_id
            )
        )

    def encode(self) -> bytes | memoryview:
        return self._body

    def parse_response_header(self, buffer: io.BytesIO) -> _ResponseHeader:
        correlation_id = int.from_bytes(buffer.read(4), "big", signed=True)
        if self._flexible_response:
            for _ in range(_read_uvarint(buffer)):
                _read_uvarint(buffer)
                buffer.seek(_read_uvarint(buffer), io.SEEK_CUR)
        return _ResponseHeader(correlation_id)

    def __repr__(self) -> str:
        return f"<EncodedRequest api_key={self.api_key} v{self.api_version}>"
