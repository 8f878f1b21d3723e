"""ApiVersions: answered by the gateway from its negotiated version table."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from gateway.protocol import codec
from gateway.protocol.codec import Request
from gateway.protocol.versions import API_VERSIONS, VersionRange
from gateway.session import ClientSession


def response(version: int, table: dict[int, VersionRange], error: ErrorCode) -> Any:
    cls = codec.response_schema(API_VERSIONS, version)
    item = codec.entity_module(cls).ApiVersion
    keys = tuple(
        codec.build(item, api_key=k, min_version=r.min, max_version=r.max)
        for k, r in sorted(table.items())
    )
    return codec.build(cls, error_code=error, api_keys=keys, throttle_time=codec.NO_THROTTLE)


def unsupported_version_response(table: dict[int, VersionRange]) -> Any:
    """The v0 answer to an ApiVersions request of a version the gateway does not know:
    the client retries with the highest version this answer lists (KIP-511)."""
    return response(0, table, ErrorCode.unsupported_version)


async def handle(session: ClientSession, request: Request) -> Any:
    return response(request.api_version, session.services.versions, ErrorCode.none)
