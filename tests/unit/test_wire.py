"""EncodedRequest: kio-encoded bytes in the shape aiokafka's connection sends and reads."""

from __future__ import annotations

import datetime
import io
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from kio.index import load_response_schema
from kio.schema.errors import ErrorCode
from kio.schema.metadata.v9.request import MetadataRequest as MetadataRequestV9
from kio.schema.metadata.v9.request import MetadataRequestTopic

from gateway.protocol import codec
from gateway.upstream.wire import EncodedRequest

FAST = settings(max_examples=200, deadline=None, database=None)

BODY = b"the response body"


def uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tagged_fields(fields: list[tuple[int, bytes]]) -> bytes:
    return uvarint(len(fields)) + b"".join(
        uvarint(tag) + uvarint(len(data)) + data for tag, data in fields
    )


def test_flexible_response_header_skips_tagged_fields_and_stops_at_the_body() -> None:
    request = EncodedRequest(3, 9, b"", None)  # Metadata v9: response header v1
    buffer = io.BytesIO(struct.pack(">i", 42) + tagged_fields([(0, b"abc"), (7, b"")]) + BODY)

    header = request.parse_response_header(buffer)

    assert header.correlation_id == 42
    assert buffer.read() == BODY


def test_tagged_field_longer_than_127_bytes_is_skipped() -> None:
    request = EncodedRequest(3, 12, b"", None)
    field = bytes(range(256)) * 2
    buffer = io.BytesIO(struct.pack(">i", -1) + tagged_fields([(300, field)]) + BODY)

    header = request.parse_response_header(buffer)

    assert header.correlation_id == -1
    assert buffer.read() == BODY


@FAST
@given(
    correlation_id=st.integers(-(2**31), 2**31 - 1),
    fields=st.lists(st.tuples(st.integers(0, 2**28), st.binary(max_size=300)), max_size=5),
    body=st.binary(max_size=50),
)
def test_any_tagged_fields_leave_the_buffer_at_the_body(
    correlation_id: int, fields: list[tuple[int, bytes]], body: bytes
) -> None:
    request = EncodedRequest(3, 9, b"", None)
    buffer = io.BytesIO(struct.pack(">i", correlation_id) + tagged_fields(fields) + body)

    assert request.parse_response_header(buffer).correlation_id == correlation_id
    assert buffer.read() == body


def test_non_flexible_response_header_is_only_the_correlation_id() -> None:
    request = EncodedRequest(3, 1, b"", None)  # Metadata v1: response header v0
    # The body starts with bytes that would read as tagged fields in header v1.
    body = b"\x01\x00\x03abc" + BODY
    buffer = io.BytesIO(struct.pack(">i", 5) + body)

    assert request.parse_response_header(buffer).correlation_id == 5
    assert buffer.read() == body


def test_api_versions_v3_response_uses_header_v0() -> None:
    request = EncodedRequest(18, 3, b"", None)
    body = b"\x00\x00" + b"\x02\x00\x12"  # error code, then a compact array
    buffer = io.BytesIO(struct.pack(">i", 9) + body)

    assert request.parse_response_header(buffer).correlation_id == 9
    assert buffer.read() == body


def metadata_v9_response() -> object:
    module = codec.entity_module(load_response_schema(3, 9))
    return module.MetadataResponse(
        throttle_time=datetime.timedelta(0),
        brokers=(module.MetadataResponseBroker(node_id=1, host="kafka", port=9092, rack=None),),
        cluster_id="cluster",
        controller_id=1,
        topics=(),
    )


def api_versions_v3_response() -> object:
    module = codec.entity_module(load_response_schema(18, 3))
    return module.ApiVersionsResponse(
        error_code=ErrorCode.none,
        api_keys=(module.ApiVersion(api_key=3, min_version=0, max_version=12),),
        throttle_time=datetime.timedelta(0),
    )


def metadata_v1_response() -> object:
    module = codec.entity_module(load_response_schema(3, 1))
    return module.MetadataResponse(
        brokers=(module.MetadataResponseBroker(node_id=1, host="kafka", port=9092, rack=None),),
        controller_id=1,
        topics=(),
    )


def test_parsed_header_leaves_a_body_that_kio_decodes() -> None:
    for api_key, version, response in [
        (3, 9, metadata_v9_response()),
        (3, 1, metadata_v1_response()),
        (18, 3, api_versions_v3_response()),
    ]:
        encoded = codec.encode_response(77, response)
        buffer = io.BytesIO(encoded[4:])  # aiokafka strips the size prefix

        header = EncodedRequest(api_key, version, b"", None).parse_response_header(buffer)
        body = EncodedRequest.RESPONSE_TYPE.decode(buffer)

        assert header.correlation_id == 77
        assert codec.decode_response(api_key, version, body, 0) == response


def test_request_carries_the_kio_encoded_body_and_header() -> None:
    entity = MetadataRequestV9(
        topics=(MetadataRequestTopic(name="orders"),),
        allow_auto_topic_creation=False,
        include_cluster_authorized_operations=False,
        include_topic_authorized_operations=False,
    )
    request = EncodedRequest.of(entity, "client-a")

    header = request.build_request_header(correlation_id=3, client_id="aiokafka")

    assert (request.api_key, request.api_version) == (3, 9)
    assert request.encode() == codec.encode_body(entity)
    assert header.encode() == codec.encode_request_header(3, 9, 3, "client-a")
    assert request.prepare(object()) is request
    decoded = codec.decode_request(header.encode() + request.encode())
    assert decoded.body == entity
    assert decoded.client_id == "client-a"


def test_request_without_client_id_uses_the_connections_client_id() -> None:
    request = EncodedRequest(18, 3, b"", None)

    header = request.build_request_header(correlation_id=1, client_id="soc2-gateway")

    assert header.encode() == codec.encode_request_header(18, 3, 1, "soc2-gateway")
