"""The kio-based codec: request round-trips, response headers and size prefixes, build()."""

from __future__ import annotations

import datetime
import io
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio.index import load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode
from kio.schema.metadata.v1.request import MetadataRequest as MetadataRequestV1
from kio.schema.metadata.v9.request import MetadataRequest as MetadataRequestV9
from kio.schema.metadata.v9.request import MetadataRequestTopic as MetadataRequestTopicV9
from kio.schema.request_header.v1.header import RequestHeader as RequestHeaderV1
from kio.schema.request_header.v2.header import RequestHeader as RequestHeaderV2
from kio.schema.response_header.v0.header import ResponseHeader as ResponseHeaderV0
from kio.schema.response_header.v1.header import ResponseHeader as ResponseHeaderV1
from kio.serial import entity_writer
from kio.static.primitive import i16, i32

from gateway.errors import MalformedRequest, UnsupportedApi
from gateway.protocol import codec
from tests.unit.kafka_strategies import (
    client_ids,
    correlation_ids,
    produce_requests,
    request_frame,
    topic_names,
)

# kio's generated entities nest deeply, so drawing them is the slow part: a few dozen
# examples per API version keep the whole file within a few seconds.
GENERATED = settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
RESPONSES_GENERATED = settings(GENERATED, max_examples=12)
HAND_BUILT = settings(GENERATED, max_examples=100)


@pytest.mark.parametrize("version", [3, 9, 12])
@HAND_BUILT
@given(data=st.data(), correlation_id=correlation_ids, client_id=client_ids)
def test_produce_request_round_trips_with_record_bytes_intact(
    version: int, data: st.DataObject, correlation_id: int, client_id: str | None
) -> None:
    body = data.draw(produce_requests(version))
    frame = request_frame(body, correlation_id, client_id)

    request = codec.decode_request(frame)

    assert request.body == body
    assert request.api_key == 0
    assert request.api_version == version
    assert request.correlation_id == correlation_id
    assert request.client_id == client_id
    assert request.size == len(frame)


KIO_GENERATED = [
    (1, 4),  # Fetch
    (1, 12),
    (1, 17),
    (3, 1),  # Metadata
    (3, 9),
    (3, 12),
    (18, 0),  # ApiVersions
    (18, 3),
    (17, 1),  # SaslHandshake
    (36, 2),  # SaslAuthenticate
    (10, 3),  # FindCoordinator
    (10, 4),
]


@pytest.mark.parametrize(("api_key", "version"), KIO_GENERATED)
@GENERATED
@given(data=st.data(), correlation_id=correlation_ids, client_id=client_ids)
def test_request_round_trips_through_kio(
    api_key: int, version: int, data: st.DataObject, correlation_id: int, client_id: str | None
) -> None:
    body = data.draw(st.from_type(load_request_schema(api_key, version)))
    frame = request_frame(body, correlation_id, client_id)

    request = codec.decode_request(frame)

    assert request.body == body
    assert (request.api_key, request.api_version) == (api_key, version)
    assert request.correlation_id == correlation_id
    assert request.client_id == client_id


@HAND_BUILT
@given(names=st.lists(topic_names, max_size=5), correlation_id=correlation_ids)
def test_metadata_request_keeps_topic_names(names: list[str], correlation_id: int) -> None:
    body = MetadataRequestV9(
        topics=tuple(MetadataRequestTopicV9(name=n) for n in names),
        allow_auto_topic_creation=False,
        include_cluster_authorized_operations=False,
        include_topic_authorized_operations=True,
    )

    request = codec.decode_request(request_frame(body, correlation_id, "client"))

    assert [t.name for t in request.body.topics] == names


def test_read_prefix_reads_api_key_version_and_correlation_id_of_unknown_apis() -> None:
    prefix = codec.read_prefix(struct.pack(">hhi", 9999, 42, -7) + b"rest")

    assert (prefix.api_key, prefix.api_version, prefix.correlation_id) == (9999, 42, -7)


def test_read_prefix_of_a_frame_shorter_than_a_header_raises_malformed_request() -> None:
    with pytest.raises(MalformedRequest):
        codec.read_prefix(b"\x00\x03\x00")


# Responses ----------------------------------------------------------------------------

RESPONSES = [
    (0, 3),
    (0, 9),
    (0, 12),
    (3, 1),
    (3, 9),
    (3, 12),
    (18, 0),
    (18, 3),
    (17, 1),
    (36, 2),
    (10, 3),
    (10, 4),
]


def expected_header_size(api_key: int, version: int) -> int:
    flexible = load_response_schema(api_key, version).__flexible__
    # v1 (correlation id + empty tagged fields) for flexible versions, except ApiVersions.
    return 5 if flexible and api_key != 18 else 4


@pytest.mark.parametrize(("api_key", "version"), RESPONSES)
@RESPONSES_GENERATED
@given(data=st.data(), correlation_id=correlation_ids)
def test_encoded_response_has_size_prefix_header_and_decodable_body(
    api_key: int, version: int, data: st.DataObject, correlation_id: int
) -> None:
    response = data.draw(st.from_type(load_response_schema(api_key, version)))
    if hasattr(response, "session_lifetime"):
        # kio encodes timedeltas up to int64 milliseconds but cannot decode the ones
        # past Python's timedelta range; the gateway only ever sends 0 here.
        lifetime_ms = data.draw(st.integers(0, 2**40))
        response = codec.replace(
            response, session_lifetime=datetime.timedelta(milliseconds=lifetime_ms)
        )

    encoded = codec.encode_response(correlation_id, response)

    (size,) = struct.unpack_from(">i", encoded, 0)
    assert size == len(encoded) - 4
    assert codec.read_correlation_id(encoded[4:]) == correlation_id
    header_size = codec.response_header_size(api_key, version, encoded[4:])
    assert header_size == expected_header_size(api_key, version)
    if header_size == 5:
        assert encoded[8] == 0  # no tagged fields in the header
    assert codec.decode_response(api_key, version, encoded, 4 + header_size) == response


def api_versions_response(version: int) -> Any:
    module = codec.entity_module(load_response_schema(18, version))
    return codec.build(
        module.ApiVersionsResponse,
        error_code=ErrorCode.unsupported_version,
        api_keys=(module.ApiVersion(api_key=18, min_version=0, max_version=4),),
        throttle_time=datetime.timedelta(0),
    )


@pytest.mark.parametrize("version", [0, 3, 4])
def test_api_versions_response_uses_header_v0_even_in_flexible_versions(version: int) -> None:
    encoded = codec.encode_response(7, api_versions_response(version))

    # Size, correlation id, then the body's error code straight away: no tag byte.
    assert encoded[4:8] == struct.pack(">i", 7)
    assert encoded[8:10] == struct.pack(">h", ErrorCode.unsupported_version.value)


def test_non_flexible_response_uses_header_v0() -> None:
    response = codec.build(load_response_schema(3, 1), brokers=(), controller_id=1, topics=())

    encoded = codec.encode_response(9, response)

    assert encoded[:8] == struct.pack(">ii", len(encoded) - 4, 9)
    assert encoded[8:] == codec.encode_body(response)


def test_flexible_response_uses_header_v1_with_empty_tagged_fields() -> None:
    response = codec.build(
        load_response_schema(3, 9),
        throttle_time=datetime.timedelta(0),
        brokers=(),
        cluster_id="c",
        controller_id=1,
        topics=(),
        cluster_authorized_operations=-(2**31),
    )

    encoded = codec.encode_response(9, response)

    assert encoded[4:9] == struct.pack(">i", 9) + b"\x00"
    assert encoded[9:] == codec.encode_body(response)


# build / replace ----------------------------------------------------------------------


def test_build_drops_fields_the_version_lacks() -> None:
    built = codec.build(
        MetadataRequestV1,
        topics=None,
        allow_auto_topic_creation=False,
        include_topic_authorized_operations=True,
    )

    assert built == MetadataRequestV1(topics=None)


def test_build_keeps_fields_the_version_has() -> None:
    built = codec.build(
        MetadataRequestV9,
        topics=None,
        allow_auto_topic_creation=False,
        include_cluster_authorized_operations=False,
        include_topic_authorized_operations=True,
    )

    assert built.allow_auto_topic_creation is False
    assert built.include_topic_authorized_operations is True


def test_replace_changes_present_fields_and_ignores_absent_ones() -> None:
    original = MetadataRequestV1(topics=None)

    replaced = codec.replace(original, topics=(), allow_auto_topic_creation=False)

    assert replaced == MetadataRequestV1(topics=())


def test_entity_module_finds_sibling_nested_types() -> None:
    assert codec.entity_module(MetadataRequestV9).MetadataRequestTopic is MetadataRequestTopicV9


# Errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(("api_key", "version"), [(9999, 0), (-1, 0), (3, 99), (18, -1)])
def test_unknown_api_key_or_version_raises_unsupported_api(api_key: int, version: int) -> None:
    frame = struct.pack(">hhih", api_key, version, 1, -1)

    with pytest.raises(UnsupportedApi):
        codec.decode_request(frame)
    with pytest.raises(UnsupportedApi):
        codec.request_schema(api_key, version)
    with pytest.raises(UnsupportedApi):
        codec.response_schema(api_key, version)
    with pytest.raises(UnsupportedApi):
        codec.encode_request_header(api_key, version, 1, None)


def test_trailing_bytes_after_the_body_are_ignored_as_kafka_ignores_them() -> None:
    frame = request_frame(MetadataRequestV1(topics=()), 1, "c") + b"\x01\x00\x00"

    request = codec.decode_request(frame)

    assert request.body == MetadataRequestV1(topics=())
    assert bytes(request.body_bytes).endswith(b"\x01\x00\x00")


@pytest.mark.parametrize("cut", [1, 4, 8])
def test_truncated_body_raises_malformed_request(cut: int) -> None:
    body = MetadataRequestV9(
        topics=(MetadataRequestTopicV9(name="orders"),),
        allow_auto_topic_creation=True,
        include_cluster_authorized_operations=False,
        include_topic_authorized_operations=False,
    )
    frame = request_frame(body, 1, "c")

    with pytest.raises(MalformedRequest):
        codec.decode_request(frame[:-cut])


def test_request_header_of_flexible_version_is_header_v2_with_tag_byte() -> None:
    v1 = codec.encode_request_header(3, 1, 5, "ab")
    v2 = codec.encode_request_header(3, 9, 5, "ab")

    assert v1 == struct.pack(">hhih", 3, 1, 5, 2) + b"ab"
    assert v2 == struct.pack(">hhih", 3, 9, 5, 2) + b"ab" + b"\x00"


# Headers are encoded with struct on the hot path; kio's entities stay the reference.


@settings(max_examples=300, deadline=None)
@given(
    api=st.sampled_from([(0, 3), (0, 9), (0, 13), (1, 12), (3, 12), (18, 3), (18, 0), (36, 2)]),
    correlation_id=st.integers(-(2**31), 2**31 - 1),
    client_id=st.one_of(st.none(), st.text(max_size=40)),
)
def test_struct_encoded_request_header_matches_kio(
    api: tuple[int, int], correlation_id: int, client_id: str | None
) -> None:

    api_key, version = api
    flexible = codec.request_schema(api_key, version).__flexible__
    header_cls = RequestHeaderV2 if flexible else RequestHeaderV1
    buffer = io.BytesIO()
    entity_writer(header_cls)(
        buffer,
        header_cls(
            request_api_key=i16(api_key),
            request_api_version=i16(version),
            correlation_id=i32(correlation_id),
            client_id=client_id,
        ),
    )
    assert codec.encode_request_header(api_key, version, correlation_id, client_id) == (
        buffer.getvalue()
    )


@settings(max_examples=200, deadline=None)
@given(
    api=st.sampled_from([(0, 3), (0, 9), (1, 12), (3, 1), (3, 12), (18, 0), (18, 3), (36, 2)]),
    correlation_id=st.integers(-(2**31), 2**31 - 1),
    body=st.binary(max_size=64),
)
def test_struct_encoded_response_prefix_matches_kio(
    api: tuple[int, int], correlation_id: int, body: bytes
) -> None:

    api_key, version = api
    flexible = codec.response_schema(api_key, version).__flexible__ and api_key != 18
    header_cls = ResponseHeaderV1 if flexible else ResponseHeaderV0
    buffer = io.BytesIO()
    entity_writer(header_cls)(buffer, header_cls(correlation_id=i32(correlation_id)))
    header = buffer.getvalue()
    expected = struct.pack(">i", len(header) + len(body)) + header + body
    chunks = codec.encode_encoded_response(
        correlation_id, codec.EncodedBody(api_key, version, body)
    )
    assert b"".join(chunks) == expected
