"""Send a partitioned request to every leader it touches, retrying stale routes.

Used by the read APIs (Fetch, ListOffsets, OffsetForLeaderEpoch), where sending a
partition again is harmless. Produce has its own path: it must keep arrival order.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from dataclasses import dataclass
from typing import Any

from kio.schema.errors import ErrorCode

from gateway import metrics
from gateway.errors import UpstreamError
from gateway.handlers import routing
from gateway.handlers.routing import PartitionedApi
from gateway.protocol import codec
from gateway.protocol.codec import Request
from gateway.session import ClientSession

log = logging.getLogger(__name__)

MAX_ROUTE_ATTEMPTS = 3


@dataclass
class FanOutResult:
    topics: tuple[Any, ...]
    responses: list[Any]


async def fan_out(
    session: ClientSession,
    request: Request,
    api: PartitionedApi,
    name: str,
    budget: float,
    unroutable_error: ErrorCode = ErrorCode.unknown_topic_or_partition,
) -> FanOutResult:
    """Route, send, merge; partitions answered with a stale-route error are retried
    after a metadata refresh, at most :data:`MAX_ROUTE_ATTEMPTS` times in all."""
    pool = session.services.pool
    response_cls = codec.response_schema(request.api_key, request.api_version)
    wanted = list(getattr(request.body, api.request_topics))
    answered: list[Any] = []
    responses: list[Any] = []
    for attempt in range(MAX_ROUTE_ATTEMPTS):
        plan = routing.split(api, pool.view, wanted)
        if plan.unroutable and attempt == 0:
            await pool.refresh()
            plan = routing.split(api, pool.view, wanted)
        results = await asyncio.gather(
            *(
                _send(session, request, api, leader, topics, response_cls, budget)
                for leader, topics in plan.by_leader.items()
            )
        )
        topics = [t for response, sent in results for t in sent]
        responses.extend(r for r, _ in results if r is not None)
        topics += routing.error_topics(api, response_cls, plan.unroutable, unroutable_error)
        stale = routing.stale_partitions(api, topics)
        last = attempt == MAX_ROUTE_ATTEMPTS - 1
        if not stale or last:
            answered += topics
            break
        metrics.UPSTREAM_RETRIES.labels(pool.name, name).inc(sum(len(s) for s in stale.values()))
        answered += routing.drop(api, topics, stale)
        wanted = routing.select(api, wanted, stale)
        await pool.refresh()
    return FanOutResult(routing.merge_topics(api, answered), responses)


async def _send(
    session: ClientSession,
    request: Request,
    api: PartitionedApi,
    leader: int,
    topics: list[Any],
    response_cls: type[Any],
    budget: float,
) -> tuple[Any | None, list[Any]]:
    sub = codec.replace(request.body, **{api.request_topics: tuple(topics)})
    try:
        response = await session.upstream.request(leader, sub, request.client_id, budget)
    except UpstreamError as exc:
        log.warning("leader %d unavailable for api_key=%d: %s", leader, request.api_key, exc)
        lost = [(t, list(getattr(t, api.request_partitions))) for t in topics]
        return None, routing.error_topics(api, response_cls, lost, ErrorCode.not_leader_or_follower)
    return response, list(getattr(response, api.response_topics))


async def partitioned(
    session: ClientSession, request: Request, api: PartitionedApi, name: str
) -> Any:
    """The whole answer to a per-partition request whose response is just its topics
    and a throttle (ListOffsets, OffsetForLeaderEpoch, DeleteRecords, DescribeProducers)."""
    result = await fan_out(session, request, api, name, own_budget(session, request))
    return codec.build(
        codec.response_schema(request.api_key, request.api_version),
        throttle_time=max_throttle(result.responses),
        **{api.response_topics: result.topics},
    )


def own_budget(session: ClientSession, request: Request) -> float:
    """The request's own timeout (if it has one) plus the upstream allowance."""
    own = getattr(request.body, "timeout", None)
    seconds = own.total_seconds() if isinstance(own, datetime.timedelta) else 0.0
    return seconds + session.services.pool.timeout


def max_throttle(responses: list[Any]) -> Any:
    """The longest throttle any leader asked for (the client must honour all)."""
    throttles = [r.throttle_time for r in responses if hasattr(r, "throttle_time")]
    return max(throttles) if throttles else codec.NO_THROTTLE
