"""Which API versions the gateway advertises.

ApiVersions is the single control point (DESIGN decision 5): per API, the gateway
advertises the intersection of the versions kio can encode, the versions a handler
implements and the versions the active upstream cluster supports.
"""

from __future__ import annotations

import functools
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
OFFSET_COMMIT = 8
OFFSET_FETCH = 9
FIND_COORDINATOR = 10
JOIN_GROUP = 11
HEARTBEAT = 12
LEAVE_GROUP = 13
SYNC_GROUP = 14
DESCRIBE_GROUPS = 15
LIST_GROUPS = 16
SASL_HANDSHAKE = 17
API_VERSIONS = 18
CREATE_TOPICS = 19
DELETE_TOPICS = 20
DELETE_RECORDS = 21
INIT_PRODUCER_ID = 22
OFFSET_FOR_LEADER_EPOCH = 23
ADD_PARTITIONS_TO_TXN = 24
ADD_OFFSETS_TO_TXN = 25
END_TXN = 26
TXN_OFFSET_COMMIT = 28
DESCRIBE_CONFIGS = 32
ALTER_CONFIGS = 33
DESCRIBE_LOG_DIRS = 35
SASL_AUTHENTICATE = 36
CREATE_PARTITIONS = 37
DELETE_GROUPS = 42
ELECT_LEADERS = 43
INCREMENTAL_ALTER_CONFIGS = 44
OFFSET_DELETE = 47
DESCRIBE_CLUSTER = 60
DESCRIBE_PRODUCERS = 61
DESCRIBE_TRANSACTIONS = 65
LIST_TRANSACTIONS = 66
CONSUMER_GROUP_HEARTBEAT = 68
CONSUMER_GROUP_DESCRIBE = 69

# The versions each handler implements.
IMPLEMENTED: Mapping[int, VersionRange] = {
    PRODUCE: VersionRange(3, 13),
    FETCH: VersionRange(4, 18),
    LIST_OFFSETS: VersionRange(1, 11),
    METADATA: VersionRange(0, 13),
    OFFSET_COMMIT: VersionRange(2, 10),
    OFFSET_FETCH: VersionRange(1, 10),
    FIND_COORDINATOR: VersionRange(0, 6),
    JOIN_GROUP: VersionRange(0, 9),
    HEARTBEAT: VersionRange(0, 4),
    LEAVE_GROUP: VersionRange(0, 5),
    SYNC_GROUP: VersionRange(0, 5),
    DESCRIBE_GROUPS: VersionRange(0, 6),
    LIST_GROUPS: VersionRange(0, 5),
    SASL_HANDSHAKE: VersionRange(0, 1),
    API_VERSIONS: VersionRange(0, 4),
    CREATE_TOPICS: VersionRange(2, 7),
    DELETE_TOPICS: VersionRange(1, 6),
    DELETE_RECORDS: VersionRange(0, 2),
    INIT_PRODUCER_ID: VersionRange(0, 5),
    OFFSET_FOR_LEADER_EPOCH: VersionRange(2, 4),
    # v4+ batches several transactional ids and is meant for brokers only.
    ADD_PARTITIONS_TO_TXN: VersionRange(0, 3),
    ADD_OFFSETS_TO_TXN: VersionRange(0, 4),
    END_TXN: VersionRange(0, 5),
    TXN_OFFSET_COMMIT: VersionRange(0, 5),
    DESCRIBE_CONFIGS: VersionRange(1, 4),
    ALTER_CONFIGS: VersionRange(0, 2),
    DESCRIBE_LOG_DIRS: VersionRange(1, 5),
    SASL_AUTHENTICATE: VersionRange(0, 2),
    CREATE_PARTITIONS: VersionRange(0, 3),
    DELETE_GROUPS: VersionRange(0, 2),
    ELECT_LEADERS: VersionRange(0, 2),
    INCREMENTAL_ALTER_CONFIGS: VersionRange(0, 1),
    OFFSET_DELETE: VersionRange(0, 0),
    DESCRIBE_CLUSTER: VersionRange(0, 2),
    DESCRIBE_PRODUCERS: VersionRange(0, 0),
    DESCRIBE_TRANSACTIONS: VersionRange(0, 0),
    LIST_TRANSACTIONS: VersionRange(0, 2),
    CONSUMER_GROUP_HEARTBEAT: VersionRange(0, 1),
    CONSUMER_GROUP_DESCRIBE: VersionRange(0, 1),
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


def common(
    one: Mapping[int, VersionRange], other: Mapping[int, VersionRange]
) -> dict[int, VersionRange]:
    """The APIs and versions two clusters' ApiVersions answers both list."""
    result: dict[int, VersionRange] = {}
    for api_key, theirs in one.items():
        ours = other.get(api_key)
        both = theirs.intersect(ours) if ours is not None else None
        if both is not None:
            result[api_key] = both
    return result


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


@functools.cache
def api_name(api_key: int) -> str:
    """Kafka's name for an API (``ListOffsets``), for metric labels and logs."""
    snake = api_key_map.get(api_key)
    if snake is None:
        return f"Api{api_key}"
    return "".join(part.title() for part in snake.split("_"))
