"""Fetch: sessionless, routed per partition to upstream leaders, batches as bytes.

The gateway answers every fetch with session id 0 (KIP-227's "no session"), so each
client fetch is complete in itself and can be split across leaders and replayed
after a failover. Rack-aware follower fetching is switched off upstream: the gateway
is the only replica a client knows.

A client fetch that spans several leaders is answered once enough has arrived, as a
broker answers once min_bytes are there. The leaders still working on it are not
told: a broker serves one request at a time per connection, so the gateway's next
fetch to such a leader would queue behind the held one, and a client polling a busy
partition would pile fetches up behind an idle one without bound. So each leader's
part goes after the previous unfinished one (one outstanding fetch per leader and
client), and when that one comes back with records for exactly the partitions and
offsets asked again, those records are the answer (otherwise a leader that answers a
little later than another, every time, would never deliver its partitions). Such an
answer is kept for :data:`KEEP_UNTAKEN_S` at most.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from kio.schema.errors import ErrorCode

from gateway.handlers import fanout, routing
from gateway.handlers.fanout import Sender, Sent, fan_out, max_throttle
from gateway.handlers.routing import PartitionedApi
from gateway.protocol import codec
from gateway.protocol.codec import EncodedBody, Request
from gateway.session import ClientSession
from gateway.upstream.connections import Unfinished
from gateway.upstream.wire import EncodedRequest

API = PartitionedApi(
    request_topics="topics",
    request_partitions="partitions",
    request_partition="partition",
    response_topics="responses",
    response_partitions="partitions",
    response_partition="partition_index",
    response_topic_class="FetchableTopicResponse",
    response_partition_class="PartitionData",
    error_fields=lambda: {
        "high_watermark": -1,
        "last_stable_offset": -1,
        "log_start_offset": -1,
        "aborted_transactions": None,
        "preferred_read_replica": -1,
        "records": b"",  # an empty record set, as a broker sends with an error
    },
)


# A leader that is up answers a fetch by its max_wait; one that has not answered this
# much later (paused, overloaded) no longer holds the other leaders' data back.
LEADER_GRACE_S = 1.0

# How long a leader's answer that arrived after the client was answered is kept for
# the client's next fetch (a consumer fetches again within milliseconds while it reads).
KEEP_UNTAKEN_S = 5.0

SESSIONLESS = {"session_id": 0, "session_epoch": -1, "forgotten_topics_data": (), "rack_id": ""}


async def handle(session: ClientSession, request: Request) -> Any:
    body = request.body
    # Clients that fetch sessionless already (librdkafka, aiokafka) send bytes that can
    # go upstream as they are; others are rewritten to be.
    as_sent = request.as_received and all(getattr(body, k, v) == v for k, v in SESSIONLESS.items())
    if not as_sent:
        request = request.with_body(codec.replace(body, **SESSIONLESS))
    budget = body.max_wait.total_seconds() + session.upstream.timeout
    passed_on = await _from_one_leader(session, request, budget, as_sent)
    if passed_on is not None:
        return passed_on
    min_bytes: int = body.min_bytes

    def enough(topics: list[Any]) -> bool:
        return record_bytes(topics) >= min_bytes

    patience = body.max_wait.total_seconds() + LEADER_GRACE_S
    sender = _after_unfinished(session, request, budget)
    result = await fan_out(session, request, API, "fetch", budget, enough, patience, sender)
    me = session.node_id
    topics = tuple(
        codec.replace(t, partitions=tuple(routing.hide_upstream(p, me) for p in t.partitions))
        for t in within_max_bytes(result.topics, getattr(body, "max_bytes", None))
    )
    return codec.build(
        codec.response_schema(request.api_key, request.api_version),
        throttle_time=max_throttle(result.responses),
        error_code=ErrorCode.none,
        session_id=0,
        responses=topics,
        node_endpoints=(),
    )


async def _from_one_leader(
    session: ClientSession, request: Request, budget: float, as_sent: bool
) -> EncodedBody | None:
    """The common case: every partition has one leader and its answer needs no change.

    Then the upstream's bytes are the client's answer, records and all, without
    encoding them again. Anything else returns None for the general path (a fetch
    is safe to send again).
    """
    plan = routing.split(API, session.upstream.view, request.body.topics)
    if len(plan.by_leader) != 1 or plan.unroutable:
        return None
    leader = next(iter(plan.by_leader))
    if leader in session.upstream.unfinished:
        return None  # the general path waits for it, or takes its answer
    if as_sent:
        upstream = EncodedRequest(
            request.api_key, request.api_version, request.body_bytes, request.client_id
        )
    else:
        upstream = EncodedRequest.of(request.body, request.client_id)
    reply = await session.upstream.request_reply(leader, upstream, budget)
    if not _as_is(reply.entity):
        return None
    return EncodedBody(request.api_key, request.api_version, reply.data)


def record_bytes(topics: Iterable[Any]) -> int:
    """The size of the record batches in response topics."""
    return sum(len(p.records or b"") for t in topics for p in t.partitions)


def within_max_bytes(topics: Iterable[Any], max_bytes: int | None) -> list[Any]:
    """The merged answer within the client's max_bytes, as a broker keeps it: whole
    partitions in order while they fit, and always the first partition with records
    (KIP-74, so that a batch larger than the limit still makes progress). A partition
    left out keeps its place with no records, and the client asks for it again."""
    if max_bytes is None:
        return list(topics)
    total = 0
    kept = []
    for topic in topics:
        partitions = []
        for p in topic.partitions:
            size = len(p.records or b"")
            if size and total and total + size > max_bytes:
                p = codec.replace(p, records=b"")
                size = 0
            total += size
            partitions.append(p)
        kept.append(codec.replace(topic, partitions=tuple(partitions)))
    return kept


def _as_is(response: Any) -> bool:
    """True when an upstream answer names no upstream broker and reports no stale route."""
    if response.error_code != ErrorCode.none or getattr(response, "node_endpoints", ()):
        return False
    return not any(routing.reveals_upstream(p) for t in response.responses for p in t.partitions)


def _after_unfinished(session: ClientSession, request: Request, budget: float) -> Sender:
    """The fan-out's sender for Fetch: each leader's part waits for the unfinished
    fetch to that leader, if any, and takes its answer when it asked the same."""
    unfinished = session.upstream.unfinished
    response_cls = codec.response_schema(request.api_key, request.api_version)

    def send(leader: int, topics: list[Any]) -> Coroutine[Any, Any, Sent]:
        asked = (request.api_version, codec.replace(request.body, topics=tuple(topics)))

        def fresh(within: float) -> Awaitable[Sent]:
            return fanout.send(session, request, API, leader, topics, response_cls, within)

        def nothing_yet() -> Sent:
            # As for a leader abandoned past its patience: no records, no error (a
            # stale-route error would be retried at once, behind the same held fetch).
            return None, routing.error_topics(
                API, response_cls, routing.whole(API, topics), ErrorCode.none
            )

        earlier = unfinished.pop(leader, None)
        task = asyncio.ensure_future(_resumed(earlier, asked, budget, fresh, nothing_yet))
        entry = Unfinished(asked, task)
        unfinished[leader] = entry
        task.add_done_callback(lambda _: _forget_later(unfinished, leader, entry))
        return _taken(unfinished, leader, entry)

    return send


def _forget_later(unfinished: dict[int, Unfinished], leader: int, entry: Unfinished) -> None:
    """An answer the client has not taken within :data:`KEEP_UNTAKEN_S` of its arrival
    is dropped (its records with it): the client has moved on from that leader. Taken
    or used by the next fetch first, the entry is settled: the timer goes, so the
    answer is not held on to for the rest of the 5 s."""

    def forget() -> None:
        entry.timer = None
        if unfinished.get(leader) is entry:
            del unfinished[leader]

    if entry.task.cancelled() or unfinished.get(leader) is not entry:
        return  # taken already, or superseded: nothing to drop later
    entry.timer = asyncio.get_running_loop().call_later(KEEP_UNTAKEN_S, forget)


async def _taken(unfinished: dict[int, Unfinished], leader: int, entry: Unfinished) -> Sent:
    """The leader's answer for this client fetch. Abandoned (cancelled), the fetch goes
    on and stays the leader's unfinished one; answered, it is no longer unfinished."""
    result: Sent = await asyncio.shield(entry.task)
    if unfinished.get(leader) is entry:
        del unfinished[leader]
    entry.settle()
    return result


async def _resumed(
    earlier: Unfinished | None,
    asked: object,
    budget: float,
    fresh: Callable[[float], Awaitable[Sent]],
    nothing_yet: Callable[[], Sent],
) -> Sent:
    """After the earlier fetch, its answer when it asked the same and got records,
    else a fresh fetch; all within ``budget`` (while the leader still holds the
    earlier one, its partitions answer with nothing yet)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    if earlier is not None:
        await asyncio.wait([earlier.task], timeout=budget)
        if not earlier.task.done():
            return nothing_yet()
        earlier.settle()  # used now or superseded: not held on to past this point
        task, same = earlier.task, earlier.asked == asked
        earlier = None
        if not task.cancelled() and task.exception() is None and same:
            response, topics = task.result()
            if response is not None and record_bytes(topics) > 0:
                return response, topics
            del response, topics
        del task
    return await fresh(max(0.0, deadline - loop.time()))
