"""Send a partitioned request to every leader it touches, retrying stale routes.

Used by the read APIs (Fetch, ListOffsets, OffsetForLeaderEpoch), where sending a
partition again is harmless. Produce has its own path: it must keep arrival order.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Callable, Coroutine
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
    enough: Enough | None = None,
    patience: float | None = None,
    sender: Sender | None = None,
) -> FanOutResult:
    """Route, send, merge; partitions answered with a stale-route error are retried
    after a metadata refresh, at most :data:`MAX_ROUTE_ATTEMPTS` times in all.

    With ``enough``, the answer goes back as soon as the leaders that answered satisfy
    it (Fetch's min_bytes), as a broker answers once min_bytes are there; the requests
    to the leaders still waiting are abandoned (a fetch changes nothing, and the client
    asks for the same offsets again; Fetch's ``sender`` lets them finish and keeps
    their answers for that next request) and their partitions are answered without records
    or watermarks. They must be in the answer: a sessionless fetch is a full one, and
    the Java consumer drops a full answer that leaves out a partition it asked for.
    With ``patience`` too, leaders that have not answered after that many seconds are
    abandoned the same way (Fetch's max_wait: a paused leader must not hold the data
    of the others). ``sender`` sends one leader's part (by default :func:`send`).
    """
    upstream = session.upstream
    response_cls = codec.response_schema(request.api_key, request.api_version)
    wanted = list(getattr(request.body, api.request_topics))
    answered: list[Any] = []
    responses: list[Any] = []

    def each(leader: int, topics: list[Any]) -> Coroutine[Any, Any, Sent]:
        return send(session, request, api, leader, topics, response_cls, budget)

    send_part = sender or each
    for attempt in range(MAX_ROUTE_ATTEMPTS):
        plan = routing.split(api, upstream.view, wanted)
        if plan.unroutable and attempt == 0:
            await refresh_quietly(session)
            plan = routing.split(api, upstream.view, wanted)
        results, abandoned = await _gather(
            [(send_part(leader, topics), topics) for leader, topics in plan.by_leader.items()],
            enough,
            patience,
        )
        satisfied = abandoned is not None
        topics = [t for response, sent in results for t in sent]
        responses.extend(r for r, _ in results if r is not None)
        if abandoned:
            topics += routing.error_topics(
                api, response_cls, routing.whole(api, abandoned), ErrorCode.none
            )
        topics += routing.error_topics(
            api, response_cls, plan.unroutable, ErrorCode.unknown_topic_or_partition
        )
        stale = routing.stale_partitions(api, topics)
        last = attempt == MAX_ROUTE_ATTEMPTS - 1
        if not stale or last or satisfied:
            answered += topics
            break
        metrics.UPSTREAM_RETRIES.labels(upstream.cluster, name).inc(
            sum(len(s) for s in stale.values())
        )
        answered += routing.drop(api, topics, stale)
        wanted = routing.select(api, wanted, stale)
        await refresh_quietly(session)
    return FanOutResult(routing.merge_topics(api, answered), responses)


Sent = tuple[Any | None, list[Any]]
Enough = Callable[[list[Any]], bool]
Sender = Callable[[int, list[Any]], Coroutine[Any, Any, Sent]]


async def _gather(
    sends: list[tuple[Coroutine[Any, Any, Sent], list[Any]]],
    enough: Enough | None,
    patience: float | None = None,
) -> tuple[list[Sent], list[Any] | None]:
    """Every leader's answer; with ``enough``, only those in before it is satisfied
    or ``patience`` seconds have passed, the others cancelled (their request topics
    are returned then, else None)."""
    if enough is None or len(sends) < 2:
        return list(await asyncio.gather(*(send for send, _ in sends))), None
    loop = asyncio.get_running_loop()
    deadline = None if patience is None else loop.time() + patience
    pending = {asyncio.ensure_future(send): topics for send, topics in sends}
    results: list[Sent] = []
    try:
        while pending:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            done, _ = await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            results += [task.result() for task in done]
            for task in done:
                del pending[task]
            out_of_time = deadline is not None and loop.time() >= deadline
            if pending and (out_of_time or enough([t for _, sent in results for t in sent])):
                return results, [t for topics in pending.values() for t in topics]
    finally:
        for task in pending:
            task.cancel()
    return results, None


async def refresh_quietly(session: ClientSession) -> None:
    """Re-read the layout before routing again; when the cluster cannot be read, route
    with what is known (what cannot be routed gets a retriable error per partition)."""
    with contextlib.suppress(UpstreamError):
        await session.upstream.refresh()


async def send(
    session: ClientSession,
    request: Request,
    api: PartitionedApi,
    leader: int,
    topics: list[Any],
    response_cls: type[Any],
    budget: float,
) -> Sent:
    """``topics`` sent to ``leader``: its answer and answered topics, or no answer and
    the topics with a retriable error when the leader cannot be reached."""
    sub = codec.replace(request.body, **{api.request_topics: tuple(topics)})
    try:
        response = await session.upstream.request(leader, sub, request.client_id, budget)
    except UpstreamError as exc:
        log.debug("leader %d unavailable for api_key=%d: %s", leader, request.api_key, exc)
        lost = routing.whole(api, topics)
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
    return seconds + session.upstream.timeout


def max_throttle(responses: list[Any]) -> Any:
    """The longest throttle any leader asked for (the client must honour all)."""
    throttles = [r.throttle_time for r in responses if hasattr(r, "throttle_time")]
    return max(throttles) if throttles else codec.NO_THROTTLE
