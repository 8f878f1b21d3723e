"""Which upstream broker coordinates a group or a transactional id.

Clients are told the gateway coordinates everything (one virtual broker); the
gateway itself asks the upstream cluster with FindCoordinator and caches the answer
until a response says NOT_COORDINATOR or COORDINATOR_NOT_AVAILABLE. The cache is keyed
by names clients choose, so it is bounded (least recently used go first).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode

from gateway.errors import UpstreamRefused, UpstreamUnavailable
from gateway.protocol import codec
from gateway.protocol.versions import FIND_COORDINATOR, VersionRange

if TYPE_CHECKING:
    from gateway.upstream.connections import UpstreamSession
    from gateway.upstream.pool import ClusterPool

GROUP = 0
TRANSACTION = 1
LOOKUP_ATTEMPTS = 10
LOOKUP_BACKOFF_SECONDS = 0.1
MAX_CACHED = 10_000

STALE_COORDINATOR_ERRORS = frozenset(
    {ErrorCode.not_coordinator, ErrorCode.coordinator_not_available}
)


class Coordinators:
    """A bounded cache of coordinator node ids for one cluster."""

    def __init__(self, pool: ClusterPool, max_cached: int = MAX_CACHED) -> None:
        self._pool = pool
        self._known: OrderedDict[tuple[int, str], int] = OrderedDict()
        self._max_cached = max_cached

    def __len__(self) -> int:
        return len(self._known)

    def forget(self, key_type: int, key: str) -> None:
        self._known.pop((key_type, key), None)

    def remember(self, key_type: int, key: str, node_id: int) -> None:
        self._known[(key_type, key)] = node_id
        self._known.move_to_end((key_type, key))
        while len(self._known) > self._max_cached:
            self._known.popitem(last=False)

    async def find(self, session: UpstreamSession, key_type: int, key: str) -> int:
        """The node coordinating ``key``.

        Raises UpstreamRefused with the cluster's error when it refuses the lookup
        (e.g. GROUP_AUTHORIZATION_FAILED), UpstreamUnavailable when no coordinator is
        elected within the lookup attempts.
        """
        found = self._known.get((key_type, key))
        if found is not None:
            self._known.move_to_end((key_type, key))
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
        if response.error_code in STALE_COORDINATOR_ERRORS:
            raise UpstreamUnavailable(
                f"no coordinator for key type {key_type}: {response.error_code.name}"
            )
        if response.error_code != ErrorCode.none:
            raise UpstreamRefused(
                f"coordinator lookup refused: {response.error_code.name}", response.error_code
            )
        if response.node_id not in self._pool.view.brokers:
            await self._pool.refresh()
        self.remember(key_type, key, int(response.node_id))
        return int(response.node_id)
