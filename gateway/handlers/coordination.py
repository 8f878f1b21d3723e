"""Route requests to the upstream coordinator of a group or transactional id.

Single-key requests (JoinGroup, EndTxn, ...) go to one coordinator; multi-key ones
(DescribeGroups, DeleteGroups, batched OffsetFetch, DescribeTransactions, ...) are
split by coordinator and their results joined. An answer of NOT_COORDINATOR or
COORDINATOR_NOT_AVAILABLE makes the gateway look the coordinator up again and retry,
so a coordinator move upstream is invisible to the client; a coordinator that cannot
be reached is looked up again on the client's retry.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kio.schema.errors import ErrorCode

from gateway.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from gateway.handlers.fanout import max_throttle
from gateway.protocol import codec
from gateway.protocol.codec import Request
from gateway.session import ClientSession
from gateway.upstream.coordinators import STALE_COORDINATOR_ERRORS

MAX_ATTEMPTS = 3


def stale_coordinator_error(entity: Any) -> ErrorCode | None:
    """NOT_COORDINATOR or COORDINATOR_NOT_AVAILABLE anywhere in a response, else None.

    Coordinator APIs put their errors at different depths (top level, per group, per
    partition); any of them means the request reached the wrong broker.
    """
    if isinstance(entity, ErrorCode):
        return entity if entity in STALE_COORDINATOR_ERRORS else None
    if isinstance(entity, tuple):
        items: Any = entity
    elif dataclasses.is_dataclass(entity):
        items = (getattr(entity, f.name) for f in dataclasses.fields(entity))
    else:
        return None
    for item in items:
        found = stale_coordinator_error(item)
        if found is not None:
            return found
    return None


async def to_coordinator(
    session: ClientSession,
    request: Request,
    key_type: int,
    key: str,
    extra_budget: float = 0.0,
) -> Any:
    """Send ``request`` to the coordinator of ``key``, following coordinator moves."""
    coordinators = session.services.coordinators
    budget = session.services.pool.timeout + extra_budget
    response: Any = None
    for _ in range(MAX_ATTEMPTS):
        node = await coordinators.find(session.upstream, key_type, key)
        response = await _to_node(
            session, node, key_type, [key], request.body, request.client_id, budget
        )
        if stale_coordinator_error(response) is None:
            break
        coordinators.forget(key_type, key)
    return response


async def _to_node(
    session: ClientSession,
    node: int,
    key_type: int,
    keys: list[str],
    body: Any,
    client_id: str | None,
    budget: float,
) -> Any:
    """Send to the node coordinating ``keys``. When it cannot be reached (stopped,
    crashed, paused) its keys are looked up afresh on the next request: the cluster
    elects another coordinator, and a cached node would fail the group until the old
    one came back."""
    try:
        return await session.upstream.request(node, body, client_id, budget)
    except (UpstreamUnavailable, UpstreamTimeout):
        for key in keys:
            session.services.coordinators.forget(key_type, key)
        raise


@dataclass(frozen=True)
class MultiKeyApi:
    """Where a multi-key request keeps its keys and its response the results."""

    key_type: int
    request_keys: str
    response_results: str
    # The key of a request item (a string itself, or an entity holding it).
    key_of_item: Callable[[Any], str]
    key_of_result: Callable[[Any], str]


async def split_by_coordinator(session: ClientSession, request: Request, api: MultiKeyApi) -> Any:
    """Send each key to its coordinator; join the results into one response."""
    coordinators = session.services.coordinators
    items = list(getattr(request.body, api.request_keys))
    if not items:
        return codec.build(
            codec.response_schema(request.api_key, request.api_version),
            throttle_time=codec.NO_THROTTLE,
            **{api.response_results: ()},
        )
    results: dict[str, Any] = {}
    responses: list[Any] = []
    for _ in range(MAX_ATTEMPTS):
        by_node: dict[int, list[Any]] = defaultdict(list)
        for item in items:
            key = api.key_of_item(item)
            by_node[await coordinators.find(session.upstream, api.key_type, key)].append(item)
        answers = await asyncio.gather(
            *(
                _to_node(
                    session,
                    node,
                    api.key_type,
                    [api.key_of_item(item) for item in subset],
                    codec.replace(request.body, **{api.request_keys: tuple(subset)}),
                    request.client_id,
                    session.services.pool.timeout,
                )
                for node, subset in by_node.items()
            )
        )
        responses.extend(answers)
        stale: set[str] = set()
        for answer in answers:
            for result in getattr(answer, api.response_results):
                key = api.key_of_result(result)
                results[key] = result
                if stale_coordinator_error(result) is not None:
                    stale.add(key)
                    coordinators.forget(api.key_type, key)
        items = [item for item in items if api.key_of_item(item) in stale]
        if not items:
            break
    ordered = tuple(
        results[key]
        for key in dict.fromkeys(
            api.key_of_item(i) for i in getattr(request.body, api.request_keys)
        )
        if key in results
    )
    return codec.replace(
        responses[0],
        **{api.response_results: ordered},
        throttle_time=max_throttle(responses),
    )


async def to_every_broker(
    session: ClientSession, request: Request, listed: str, pooled: tuple[str, ...] = ()
) -> Any:
    """Ask every upstream broker (ListGroups, ListTransactions, DescribeLogDirs) and join
    the answers: the ``listed`` items of all, the union of the ``pooled`` fields, the
    first error, the longest throttle. A broker that does not answer makes the answer
    COORDINATOR_NOT_AVAILABLE (retriable) with what the others listed; when none
    answers, the request fails."""
    pool = session.services.pool
    if not pool.view.brokers:
        await pool.refresh()
    results = await asyncio.gather(
        *(
            session.upstream.request(node, request.body, request.client_id, pool.timeout)
            for node in sorted(pool.view.brokers)
        ),
        return_exceptions=True,
    )
    answers = [a for a in results if not isinstance(a, BaseException)]
    failures = [a for a in results if isinstance(a, BaseException)]
    if not answers or any(not isinstance(f, UpstreamError) for f in failures):
        raise failures[0]
    errors = [a.error_code for a in answers if a.error_code != ErrorCode.none]
    if failures:
        errors.append(ErrorCode.coordinator_not_available)
    joined = {
        name: tuple(sorted({v for a in answers for v in getattr(a, name)})) for name in pooled
    }
    return codec.replace(
        answers[0],
        error_code=errors[0] if errors else ErrorCode.none,
        throttle_time=max_throttle(list(answers)),
        **{listed: tuple(item for a in answers for item in getattr(a, listed))},
        **joined,
    )
