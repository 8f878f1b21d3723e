"""Produce: record batches go to each partition's upstream leader as bytes.

Batches are not decoded (DESIGN decision 3): producer id, epoch, sequence numbers
and compression reach the broker untouched. Requests from one client connection are
written upstream in arrival order, so an idempotent producer's batches for a
partition keep their sequence. A stale route is not retried here: the client's own
retry keeps batch order, a retry from the gateway could reorder it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kio.schema.errors import ErrorCode

from gateway.errors import UpstreamError
from gateway.handlers import routing
from gateway.handlers.fanout import max_throttle, refresh_quietly
from gateway.handlers.routing import PartitionedApi
from gateway.protocol import codec
from gateway.protocol.codec import EncodedBody, Request
from gateway.protocol.sequences import SequenceGuard
from gateway.session import ClientSession
from gateway.upstream.connections import Reply
from gateway.upstream.wire import EncodedRequest

log = logging.getLogger(__name__)

API = PartitionedApi(
    request_topics="topic_data",
    request_partitions="partition_data",
    request_partition="index",
    response_topics="responses",
    response_partitions="partition_responses",
    response_partition="index",
    response_topic_class="TopicProduceResponse",
    response_partition_class="PartitionProduceResponse",
    error_fields=lambda: {
        "base_offset": -1,
        "log_append_time": None,
        "log_start_offset": -1,
        "record_errors": (),
        "error_message": None,
    },
)


async def handle(session: ClientSession, request: Request) -> Any:
    body = request.body
    upstream = session.upstream
    timeout = body.timeout.total_seconds() + upstream.timeout
    expect_response = body.acks != 0
    guard = session.produce_sequences
    async with session.produce_order:
        topic_data, held = _hold_out_of_sequence(guard, body.topic_data)
        plan = routing.split(API, upstream.view, topic_data)
        if plan.unroutable:
            await refresh_quietly(session)
            plan = routing.split(API, upstream.view, topic_data)
        sent: list[tuple[Any, Any, EncodedRequest, list[Any]]] = []
        unsent: list[tuple[Any, list[Any]]] = []
        # Bytes go as they came only when nothing changed the request (a policy that
        # withheld a topic changed it) and one leader takes it all.
        whole = (
            request.as_received and len(plan.by_leader) == 1 and not plan.unroutable and not held
        )
        for leader, topics in plan.by_leader.items():
            if whole:
                # One leader takes it all: forward the client's bytes as they came.
                sub = EncodedRequest(
                    request.api_key, request.api_version, request.body_bytes, request.client_id
                )
            else:
                sub_body = codec.replace(body, topic_data=tuple(topics))
                sub = EncodedRequest.of(sub_body, request.client_id)
            try:
                conn = await session.upstream.connection(leader)
                pending = session.upstream.send_now(conn, sub, expect_response)
            except UpstreamError as exc:
                log.debug("produce to leader %d failed: %s", leader, exc)
                unsent += routing.whole(API, topics)
                continue
            sent.append((conn, pending, sub, topics))
    if not expect_response:
        await asyncio.gather(*(pending for _, pending, _, _ in sent), return_exceptions=True)
        return None
    _note_failed(guard, plan.unroutable + unsent)
    errors = [
        (plan.unroutable, ErrorCode.unknown_topic_or_partition),
        # Never written: the client refreshes its metadata and sends again.
        (unsent + held, ErrorCode.not_leader_or_follower),
    ]
    return await _collect(session, request, sent, errors, timeout)


def _hold_out_of_sequence(
    guard: SequenceGuard, topics: tuple[Any, ...]
) -> tuple[tuple[Any, ...], list[tuple[Any, list[Any]]]]:
    """The topics without the batches that must wait for an earlier failed batch of
    their partition (see :mod:`gateway.protocol.sequences`), and those batches."""
    if not guard:
        return topics, []
    kept: list[Any] = []
    held: list[tuple[Any, list[Any]]] = []
    for topic in topics:
        key = routing.topic_key(topic)
        waiting = [p for p in topic.partition_data if guard.holds((key, p.index), p.records)]
        if not waiting:
            kept.append(topic)
            continue
        held.append((topic, waiting))
        sending = tuple(p for p in topic.partition_data if p not in waiting)
        if sending:
            kept.append(codec.replace(topic, partition_data=sending))
    return tuple(kept), held


def _note_failed(guard: SequenceGuard, lost: list[tuple[Any, list[Any]]]) -> None:
    for topic, partitions in lost:
        key = routing.topic_key(topic)
        for p in partitions:
            guard.failed((key, p.index), p.records)


async def _collect(
    session: ClientSession,
    request: Request,
    sent: list[tuple[Any, Any, EncodedRequest, list[Any]]],
    errors: list[tuple[list[tuple[Any, list[Any]]], ErrorCode]],
    budget: float,
) -> Any:
    response_cls = codec.response_schema(request.api_key, request.api_version)
    results: list[Reply | BaseException]
    if len(sent) == 1:  # the common case, without gather's extra task
        conn, pending, sub, _ = sent[0]
        try:
            results = [await session.upstream.wait(conn, pending, sub, budget)]
        except UpstreamError as exc:
            results = [exc]
    else:
        results = await asyncio.gather(
            *(session.upstream.wait(c, pending, sub, budget) for c, pending, sub, _ in sent),
            return_exceptions=True,
        )
    only = results[0] if len(results) == 1 else None
    if isinstance(only, Reply) and not any(lost for lost, _ in errors) and _as_is(only.entity):
        return EncodedBody(request.api_key, request.api_version, only.data)
    responses: list[Any] = []
    topics: list[Any] = []
    unknown_outcome: list[tuple[Any, list[Any]]] = []
    for (_, _, _, sent_topics), result in zip(sent, results, strict=True):
        if isinstance(result, UpstreamError):
            # The batch may or may not have been written: REQUEST_TIMED_OUT tells the
            # client exactly that (an idempotent producer's retry is deduplicated).
            unknown_outcome += routing.whole(API, sent_topics)
        elif isinstance(result, BaseException):
            raise result
        else:
            responses.append(result.entity)
            topics.extend(result.entity.responses)
    _note_failed(session.produce_sequences, unknown_outcome)
    errors.append((unknown_outcome, ErrorCode.request_timed_out))
    for lost, error in errors:
        topics += routing.error_topics(API, response_cls, lost, error)
    if routing.stale_partitions(API, topics):
        # Refresh now so that the client's retry, which comes soon, finds the new leader.
        session.upstream.refresh_soon()
    merged = routing.merge_topics(API, topics)
    merged = tuple(
        codec.replace(
            t,
            partition_responses=tuple(
                routing.hide_upstream(p, session.node_id) for p in t.partition_responses
            ),
        )
        for t in merged
    )
    return codec.build(
        response_cls,
        responses=merged,
        throttle_time=max_throttle(responses),
        node_endpoints=(),
    )


def _as_is(response: Any) -> bool:
    """True when an upstream answer names no upstream broker and can pass unchanged."""
    if getattr(response, "node_endpoints", ()):
        return False
    return not any(
        routing.reveals_upstream(p) for t in response.responses for p in t.partition_responses
    )
