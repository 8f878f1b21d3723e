"""Which upstream broker coordinates a group or a transactional id.

Clients are told the gateway coordinates everything (one virtual broker); the
gateway itself asks the upstream cluster with FindCoordinator and caches the answer
until a response says NOT_COORDINATOR or COORDINATOR_NOT_AVAILABLE.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kio.schema.errors import ErrorCode

from gateway.errors import UpstreamUnavailable
from gateway.protocol import codec
from gateway.protocol.versions import FIND_COORDINATOR, VersionRange
from gateway.upstream.pool import ClusterPool, UpstreamSession

GROUP = 0
TRANSACTION = 1
LOOKUP_ATTEMPTS = 10
LOOKUP_BACKOFF_SECONDS = 0.1

STALE_COORDINATOR_ERRORS = frozenset(
    {ErrorCode.not_coordinator, ErrorCode.coordinator_not_available}
)


class Coordinators:
    """A cache of coordinator node ids for one cluster."""

    def __init__(self, pool: ClusterPool) -> None:
        self._pool = pool
        self._known: dict[tuple[int, str], int] = {}

    def forget(self, key_type: int, key: str) -> None:
        self._known.pop((key_type, key), None)

    async def find(self, session: UpstreamSession, key_type: int, key: str) -> int:
        """The node coordinating ``key``; raises UpstreamUnavailable when there is none."""
        found = self._known.get((key_type, key))
        if found is not None:
            return found
        supported = self._pool.api_versions.get(FIND_COORDINATOR, VersionRange(0, 0))
        version = min(supported.max, 3)
        request = codec.build(
            codec.request_schema(FIND_COORDINATOR, version), key=key, key_type=key_type
        )
        response: Any = None
        for attempt in range(LOOKUP_ATTEMPTS):
            response = await session.request(None, request, None, self._pool.timeout)
            if response.error_code not in STALE_COORDINATOR_ERRORS:
                break
            # The coordinator is still being elected (e.g. __consumer_offsets is new).
            await asyncio.sleep(LOOKUP_BACKOFF_SECONDS * (attempt + 1))
        if response.error_code != ErrorCode.none:
            raise UpstreamUnavailable(
                f"no coordinator for key type {key_type}: {response.error_code.name}"
            )
        if response.node_id not in self._pool.view.brokers:
            await self._pool.refresh()
        self._known[(key_type, key)] = response.node_id
        return int(response.node_id)
