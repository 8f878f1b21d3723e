"""Which API versions the gateway advertises.

ApiVersions is the single control point (DESIGN decision 5): per API, the gateway
advertises the intersection of the versions kio can encode, the versions a handler
implements and the versions the active upstream cluster supports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kio.schema.errors import ErrorCode
from kio.schema.index import api_key_map, schema_name_map

from gateway.protocol import codec


@dataclass(frozen=True, slots=True)
class VersionRange:
    min: int
    max: int

    def intersect(self, other: VersionRange) -> VersionRange | None:
        low, high = max(self.min, other.min), min(self.max, other.max)
        return VersionRange(low, high) if low <= high else None

    def __contains__(self, version: object) -> bool:
        return isinstance(version, int) and self.min <= version <= self.max


# API keys, by name, for readability at call sites.
PRODUCE = 0
FETCH = 1
LIST_OFFSETS = 2
METADATA = 3
FIND_COORDINATOR = 10
DESCRIBE_CONFIGS = 32
SASL_HANDSHAKE = 17
API_VERSIONS = 18
CREATE_TOPICS = 19
INIT_PRODUCER_ID = 22
DELETE_TOPICS = 20
OFFSET_FOR_LEADER_EPOCH = 23
SASL_AUTHENTICATE = 36
DESCRIBE_CLUSTER = 60

# The versions each handler implements.
IMPLEMENTED: Mapping[int, VersionRange] = {
    PRODUCE: VersionRange(3, 13),
    FETCH: VersionRange(4, 18),
    LIST_OFFSETS: VersionRange(1, 11),
    METADATA: VersionRange(0, 13),
    FIND_COORDINATOR: VersionRange(0, 6),
    SASL_HANDSHAKE: VersionRange(0, 1),
    API_VERSIONS: VersionRange(0, 4),
    CREATE_TOPICS: VersionRange(2, 7),
    DELETE_TOPICS: VersionRange(1, 6),
    INIT_PRODUCER_ID: VersionRange(0, 5),
    DESCRIBE_CONFIGS: VersionRange(1, 4),
    OFFSET_FOR_LEADER_EPOCH: VersionRange(2, 4),
    SASL_AUTHENTICATE: VersionRange(0, 2),
    DESCRIBE_CLUSTER: VersionRange(0, 2),
}

# Answered by the gateway itself, so the upstream's support does not limit them.
LOCAL_APIS = frozenset({API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE, FIND_COORDINATOR})


def kio_range(api_key: int) -> VersionRange | None:
    """The request versions kio has entities for."""
    name = api_key_map.get(api_key)
    if name is None:
        return None
    versions = sorted(schema_name_map[name])
    return VersionRange(versions[0], versions[-1]) if versions else None


def advertised(upstream: Mapping[int, VersionRange]) -> dict[int, VersionRange]:
    """The versions to advertise given the upstream cluster's ApiVersions answer."""
    result: dict[int, VersionRange] = {}
    for api_key, implemented in IMPLEMENTED.items():
        known = kio_range(api_key)
        if known is None:
            continue
        supported = implemented.intersect(known)
        if supported is not None and api_key not in LOCAL_APIS:
            theirs = upstream.get(api_key)
            supported = supported.intersect(theirs) if theirs is not None else None
        if supported is not None:
            result[api_key] = supported
    return result


def api_versions_response(
    version: int, table: Mapping[int, VersionRange], error: ErrorCode = ErrorCode.none
) -> Any:
    """An ApiVersions response of ``version`` listing ``table``."""
    cls = codec.response_schema(API_VERSIONS, version)
    item = codec.entity_module(cls).ApiVersion
    keys = tuple(
        codec.build(item, api_key=k, min_version=r.min, max_version=r.max)
        for k, r in sorted(table.items())
    )
    return codec.build(cls, error_code=error, api_keys=keys, throttle_time=codec.NO_THROTTLE)


def unsupported_version_response(table: Mapping[int, VersionRange]) -> Any:
    """The v0 answer to an ApiVersions request of a version the gateway does not know:
    the client retries with the highest version this answer lists (KIP-511)."""
    return api_versions_response(0, table, ErrorCode.unsupported_version)
