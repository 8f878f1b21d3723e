"""The sans-IO server protocol: framing, decoding and the pre-authentication gate."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode

from gateway.errors import FrameTooLarge, GatewayError, NotAuthenticated, UnsupportedApi
from gateway.protocol import codec
from gateway.protocol.connection import (
    AnswerReady,
    RequestReceived,
    SaslTokenReceived,
    ServerProtocol,
)
from gateway.protocol.versions import IMPLEMENTED, VersionRange

TABLE = {key: VersionRange(r.min, r.max) for key, r in IMPLEMENTED.items()}


def protocol(authenticated: bool = False) -> ServerProtocol:
    return ServerProtocol(lambda: TABLE, 1024, 1 << 20, authenticated=authenticated)


def request_frame(body: Any, correlation_id: int = 1) -> bytes:
    payload = codec.encode_request_header(
        body.__api_key__, body.__version__, correlation_id, "unit"
    ) + codec.encode_body(body)
    return struct.pack(">i", len(payload)) + payload


METADATA = codec.build(
    codec.request_schema(3, 12),
    topics=None,
    allow_auto_topic_creation=False,
    include_topic_authorized_operations=False,
)
HANDSHAKE = codec.build(codec.request_schema(17, 1), mechanism="PLAIN")


def events(proto: ServerProtocol) -> list[Any]:
    found = []
    while (event := proto.next_event()) is not None:
        found.append(event)
    return found


def test_metadata_before_authentication_is_refused() -> None:
    proto = protocol()
    proto.receive_data(request_frame(METADATA))
    with pytest.raises(NotAuthenticated):
        proto.next_event()


def test_authentication_between_two_frames_of_one_read_takes_effect() -> None:
    proto = protocol()
    proto.receive_data(request_frame(HANDSHAKE, 1) + request_frame(METADATA, 2))
    first = proto.next_event()
    assert isinstance(first, RequestReceived) and first.request.api_key == 17
    proto.authenticated()
    second = proto.next_event()
    assert isinstance(second, RequestReceived)
    assert (second.request.api_key, second.request.correlation_id) == (3, 2)


def test_pre_authentication_frame_limit_is_lifted_after_authentication() -> None:
    big = struct.pack(">i", 4096) + b"\x00" * 4096
    with pytest.raises(FrameTooLarge):
        before = protocol()
        before.receive_data(big)
        before.next_event()
    after = protocol(authenticated=True)
    after.receive_data(big)
    with pytest.raises(GatewayError) as raised:
        after.next_event()
    assert not isinstance(raised.value, FrameTooLarge)


def test_bare_token_after_handshake_v0_is_a_sasl_token_event() -> None:
    proto = protocol()
    proto.expects_raw_token = True
    proto.receive_data(struct.pack(">i", 5) + b"\x00u\x00pw")
    event = proto.next_event()
    assert event == SaslTokenReceived(b"\x00u\x00pw")
    assert proto.expects_raw_token is False


def test_api_versions_of_unknown_version_is_answered_with_v0_unsupported_version() -> None:
    proto = protocol()
    payload = struct.pack(">hhi", 18, 42, 9) + b"\x00\x00"
    proto.receive_data(struct.pack(">i", len(payload)) + payload)
    event = proto.next_event()
    assert isinstance(event, AnswerReady)
    response = codec.decode_response(18, 0, event.data, 8)
    assert codec.read_correlation_id(event.data[4:]) == 9
    assert response.error_code == ErrorCode.unsupported_version
    assert {k.api_key for k in response.api_keys} == set(TABLE)


def test_api_not_in_the_table_is_unsupported() -> None:
    proto = protocol(authenticated=True)
    payload = struct.pack(">hhi", 9999, 0, 1)
    proto.receive_data(struct.pack(">i", len(payload)) + payload)
    with pytest.raises(UnsupportedApi):
        proto.next_event()


VALID_FRAMES = [request_frame(METADATA), request_frame(HANDSHAKE)]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    chunks=st.lists(
        st.one_of(
            st.binary(max_size=64),
            st.sampled_from(VALID_FRAMES).flatmap(
                lambda frame: st.tuples(
                    st.integers(0, len(frame) - 1), st.integers(0, 255), st.booleans()
                ).map(lambda m: frame[: m[0]] + bytes([m[1]]) + frame[m[0] + (1 if m[2] else 0) :])
            ),
        ),
        max_size=8,
    ),
    authenticated=st.booleans(),
)
def test_random_and_mutated_bytes_raise_only_gateway_errors(
    chunks: list[bytes], authenticated: bool
) -> None:
    proto = protocol(authenticated)
    try:
        for chunk in chunks:
            proto.receive_data(chunk)
            events(proto)
    except GatewayError:
        pass
    assert proto.buffered <= 1024 + 4 + sum(len(c) for c in chunks)
