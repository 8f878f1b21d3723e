"""Request and response codec built on kio's generated entities.

Every Kafka message layout comes from kio (generated from Kafka's own message
definitions); this module only chooses the header version, calls kio's readers and
writers, and turns kio's decode failures into :class:`MalformedRequest`.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import struct
import sys
from dataclasses import dataclass
from functools import cache, lru_cache
from types import ModuleType
from typing import Any

from kio.index import KioIndexError, load_request_schema, load_response_schema
from kio.schema.request_header.v1.header import RequestHeader as RequestHeaderV1
from kio.schema.request_header.v2.header import RequestHeader as RequestHeaderV2
from kio.schema.response_header.v1.header import ResponseHeader as ResponseHeaderV1
from kio.serial import entity_reader, entity_writer
from kio.serial.errors import SerialError
from kio.static.protocol import ResponsePayload

from gateway.errors import MalformedRequest, MalformedResponse, UnsupportedApi
from gateway.protocol import bounds

# A piece of an encoded message, written to a socket without being joined first.
Chunk = bytes | memoryview

API_VERSIONS_KEY = 18
NO_THROTTLE = datetime.timedelta(0)
_PREFIX = struct.Struct(">hhi")
_SIZE = struct.Struct(">i")
_I16 = struct.Struct(">h")
_CORRELATION = struct.Struct(">i")

# kio's readers raise their own errors for bad input, but a fuzzed buffer can also
# trip Python-level errors inside the native reader (an invalid UUID or enum, or an
# unknown tagged field, which kio refuses).
_DECODE_ERRORS = (
    SerialError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    OverflowError,
    UnicodeError,
)


@dataclass(frozen=True, slots=True)
class RequestPrefix:
    """The three fields every request header starts with, readable for any API."""

    api_key: int
    api_version: int
    correlation_id: int


@dataclass(frozen=True, slots=True)
class Request:
    """One decoded client request."""

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body: Any
    size: int
    # The frame as received and where its body starts, so that a body the gateway
    # does not change can be forwarded without encoding it again.
    frame: bytes = dataclasses.field(repr=False, default=b"")
    body_offset: int = 0

    @property
    def as_received(self) -> bool:
        """True while the body is the one the client sent, so that its bytes may be
        forwarded as they came."""
        return bool(self.frame)

    @property
    def body_bytes(self) -> memoryview:
        """The body as the client encoded it; only while :attr:`as_received`."""
        if not self.frame:
            raise ValueError("the request was changed: encode its body instead")
        return memoryview(self.frame)[self.body_offset :]

    def with_body(self, body: Any) -> Request:
        """The same request with another body. The client's bytes no longer describe it,
        so they are dropped: nothing can forward them by mistake."""
        return dataclasses.replace(self, body=body, frame=b"", body_offset=0)


@dataclass(frozen=True, slots=True)
class EncodedBody:
    """A response body that is already encoded (an upstream answer passed on as is)."""

    api_key: int
    api_version: int
    data: Chunk

    def decoded(self) -> Any:
        """The response entity these bytes encode."""
        return decode_response(self.api_key, self.api_version, bytes(self.data), 0)


Answer = ResponsePayload | EncodedBody | None
"""What answering a request gives: a response entity of the request's version, the
encoded body of one, or None for a request that gets no answer (acks=0 Produce)."""


def read_prefix(frame: bytes) -> RequestPrefix:
    """Read api key, version and correlation id; works for unknown APIs too."""
    if len(frame) < _PREFIX.size:
        raise MalformedRequest(f"request of {len(frame)} bytes is shorter than a header")
    api_key, api_version, correlation_id = _PREFIX.unpack_from(frame, 0)
    return RequestPrefix(api_key, api_version, correlation_id)


@cache
def request_schema(api_key: int, api_version: int) -> type[Any]:
    """The kio request class for an API key and version, or :class:`UnsupportedApi`."""
    try:
        return load_request_schema(api_key, api_version)
    except KioIndexError as exc:
        raise UnsupportedApi(f"api_key={api_key} version={api_version} is unknown") from exc


@cache
def response_schema(api_key: int, api_version: int) -> type[Any]:
    """The kio response class for an API key and version."""
    try:
        return load_response_schema(api_key, api_version)
    except KioIndexError as exc:
        raise UnsupportedApi(f"api_key={api_key} version={api_version} is unknown") from exc


def entity_module(entity_or_type: object) -> ModuleType:
    """The generated module an entity lives in, to reach its sibling nested types."""
    cls = entity_or_type if isinstance(entity_or_type, type) else type(entity_or_type)
    return sys.modules[cls.__module__]


def build(cls: type[Any], **values: Any) -> Any:
    """Construct a kio entity from the values its version has a field for.

    Lets one handler build responses for every version: fields that a version lacks
    are dropped, the ones it has default as kio defines them.
    """
    names = _field_names(cls)
    return cls(**{k: v for k, v in values.items() if k in names})


def replace(entity: Any, **values: Any) -> Any:
    """``dataclasses.replace`` limited to the fields the entity's version has."""
    names = _field_names(type(entity))
    return dataclasses.replace(entity, **{k: v for k, v in values.items() if k in names})


_FIELD_NAMES: dict[type[Any], frozenset[str]] = {}
_WRITERS: dict[type[Any], Any] = {}
_READERS: dict[type[Any], Any] = {}


def _field_names(cls: type[Any]) -> frozenset[str]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(f.name for f in dataclasses.fields(cls))
    return names


@cache
def _request_reader(api_key: int, api_version: int) -> tuple[type[Any], type[Any], Any, Any]:
    schema = request_schema(api_key, api_version)
    header = RequestHeaderV2 if schema.__flexible__ else RequestHeaderV1
    return header, schema, entity_reader(header), entity_reader(schema)


def decode_request(frame: bytes | bytearray | memoryview) -> Request:
    """Decode one request frame (without its size prefix)."""
    if not isinstance(frame, bytes):
        frame = bytes(frame)  # kio's reader takes read-only buffers only
    prefix = read_prefix(frame)
    header_cls, schema, header_reader, body_reader = _request_reader(
        prefix.api_key, prefix.api_version
    )
    # kio reserves memory for every array length a frame claims: check them first.
    bounds.check(header_cls, schema, frame)
    try:
        header, header_size = header_reader(frame, 0)
        body, _ = body_reader(frame, header_size)
    except _DECODE_ERRORS as exc:
        raise MalformedRequest(
            f"api_key={prefix.api_key} version={prefix.api_version} does not decode: {exc}"
        ) from exc
    # Bytes after a complete body are ignored, as Kafka's brokers ignore them
    # (librdkafka 2.16 sends three after an all-topics Metadata v13 request).
    return Request(
        api_key=prefix.api_key,
        api_version=prefix.api_version,
        correlation_id=prefix.correlation_id,
        client_id=header.client_id,
        body=body,
        size=len(frame),
        frame=frame,
        body_offset=header_size,
    )


def _writer(cls: type[Any]) -> Any:
    writer = _WRITERS.get(cls)
    if writer is None:
        writer = _WRITERS[cls] = entity_writer(cls)
    return writer


# Headers are encoded with struct rather than through kio's entity writer: they are
# written twice per request on the hot path, their layout is fixed, and a unit test
# checks these bytes against kio's own encoding of the same header entities.
_RESPONSE_PREFIX = struct.Struct(">ii")
_NO_TAGGED_FIELDS = b"\x00"


@cache
def _flexible_response_header(api_key: int, api_version: int) -> bool:
    # ApiVersions responses always use header v0, so that a client can parse the
    # answer before it knows which versions the broker speaks (KIP-511).
    return bool(response_schema(api_key, api_version).__flexible__) and api_key != API_VERSIONS_KEY


def response_prefix(correlation_id: int, api_key: int, api_version: int, body_size: int) -> bytes:
    """Size prefix and response header for a body of ``body_size`` bytes."""
    if _flexible_response_header(api_key, api_version):
        return _RESPONSE_PREFIX.pack(body_size + 5, correlation_id) + _NO_TAGGED_FIELDS
    return _RESPONSE_PREFIX.pack(body_size + 4, correlation_id)


def encode_response(correlation_id: int, response: Any) -> bytes:
    """Encode a response with its header and size prefix."""
    body = encode_body(response)
    cls = type(response)
    return response_prefix(correlation_id, cls.__api_key__, cls.__version__, len(body)) + body


def encode_encoded_response(correlation_id: int, body: EncodedBody) -> list[Chunk]:
    """Size prefix and header, then the already-encoded body (not copied)."""
    prefix = response_prefix(
        correlation_id, body.api_key, body.api_version, memoryview(body.data).nbytes
    )
    return [prefix, body.data]


# Keyed by a name each client chooses: bounded.
@lru_cache(maxsize=1024)
def _client_id_bytes(client_id: str | None) -> bytes:
    if client_id is None:
        return _I16.pack(-1)
    encoded = client_id.encode("utf-8")
    return _I16.pack(len(encoded)) + encoded


@cache
def _flexible_request(api_key: int, api_version: int) -> bool:
    return bool(request_schema(api_key, api_version).__flexible__)


def encode_request_header(
    api_key: int, api_version: int, correlation_id: int, client_id: str | None
) -> bytes:
    """Encode the request header an upstream broker expects for this API version
    (v2 for flexible versions, else v1; client_id is a legacy string in both)."""
    header = struct.pack(">hhi", api_key, api_version, correlation_id) + _client_id_bytes(client_id)
    if _flexible_request(api_key, api_version):
        return header + _NO_TAGGED_FIELDS
    return header


def encode_body(entity: Any) -> bytes:
    """Encode a request or response body without header or size prefix."""
    buffer = io.BytesIO()
    _writer(type(entity))(buffer, entity)
    return buffer.getvalue()


def response_header_size(api_key: int, api_version: int, data: bytes) -> int:
    """Size of the response header at the start of ``data`` (v0: 4 bytes, v1: + tags)."""
    schema = response_schema(api_key, api_version)
    if not schema.__flexible__ or api_key == API_VERSIONS_KEY:
        return _CORRELATION.size
    _, size = entity_reader(ResponseHeaderV1)(data, 0)
    return int(size)


def read_correlation_id(data: bytes) -> int:
    """The correlation id every response header starts with."""
    (correlation_id,) = _CORRELATION.unpack_from(data, 0)
    return int(correlation_id)


def decode_response(api_key: int, api_version: int, data: bytes, offset: int) -> Any:
    """Decode a response body that starts at ``offset``."""
    schema = response_schema(api_key, api_version)
    try:
        body, _ = _response_reader(schema)(data, offset)
    except _DECODE_ERRORS as exc:
        raise MalformedResponse(
            f"response api_key={api_key} version={api_version} does not decode: {exc}"
        ) from exc
    return body


def _response_reader(schema: type[Any]) -> Any:
    reader = _READERS.get(schema)
    if reader is None:
        reader = _READERS[schema] = entity_reader(schema)
    return reader
