"""The one request pipeline: every client request passes the same ordered stages.

Between the decoded request and its handler, and between the handler's answer and the
encoded response, each request runs through :class:`Pipeline`'s stages in order. A
stage sees a :class:`Call`: the session and its identity, the API, the request entity,
and the items it names. On the way in a stage may

- let the request go on unchanged (the common case: nothing is copied or re-encoded),
- withhold items (:meth:`Call.withhold`): they get the error the stage chose, in the
  answer Kafka itself would give for that item, and the rest goes on,
- answer the whole request itself (:meth:`Call.refuse`): no handler and no upstream
  request at all.

On the way back each stage, in reverse order, may rewrite the answer (hide listed
resources, add the withheld items' answers). Policy is the first stage; audit,
approvals and masking are stages of the same chain.

Fail closed: a stage that raises refuses the request with the API's retriable error
(the client retries), and an answer a stage could not check is replaced by that error;
neither is ever served unchecked. ``gateway_pipeline_stage_failures_total`` counts it.

Bytes as they came: a handler forwards the client's own frame bytes only while
:attr:`~gateway.protocol.codec.Request.as_received` holds. Withholding an item
replaces the request with :meth:`~gateway.protocol.codec.Request.with_body`, which
drops those bytes, so what a stage removed can never reach the broker; an unchanged
request still goes upstream as the bytes the client sent.

Connection set-up that carries no decodable request is answered before the
pipeline, as Kafka answers it before its authorizer: the ApiVersions answer for a
version the gateway cannot decode (so that the client learns which versions to use)
and bare SASL tokens after a v0 handshake (handlers/sasl.py). Both happen before the
client has an identity, and no stage has an item to look at. A frame that cannot be
decoded at all is reported to every stage (:meth:`Stage.rejected`) before the
connection closes.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

from kio.schema.errors import ErrorCode

from gateway import metrics
from gateway.errors import GatewayError
from gateway.identity import ANONYMOUS, Identity
from gateway.protocol import items
from gateway.protocol.codec import Answer, EncodedBody, Request
from gateway.protocol.items import Resource
from gateway.protocol.items.model import GROUP, TOPIC, TRANSACTIONAL_ID

if TYPE_CHECKING:
    # The session module holds the pipeline the server builds: a type here only.
    from gateway.session import ClientSession

# Request item kinds the authorizer knows by their own name; any other config resource
# (broker, broker logger, client metrics) is checked as the cluster.
_OWN_KINDS = frozenset({TOPIC, GROUP, TRANSACTIONAL_ID})
CLUSTER = "cluster"

log = logging.getLogger(__name__)

Handler = Callable[["ClientSession", Request], Awaitable[Answer]]


@dataclass(frozen=True, slots=True)
class Denial:
    """Why one item is not served: the Kafka error its answer carries, and a message
    for versions that carry one."""

    error: ErrorCode
    message: str


@dataclass(frozen=True, slots=True)
class ItemDecision:
    """What a stage decided for one item, for the stages after it (audit): the resource,
    allowed or not, the rule that made the decision and the policy version."""

    stage: str
    resource: Resource
    allowed: bool
    rule_id: str | None
    policy_version: str | None
    error: ErrorCode | None = None


@dataclass
class Call:
    """One request on its way through the pipeline."""

    session: ClientSession
    request: Request
    # Resources withheld from the request, each with its answer's error.
    withheld: dict[Resource, Denial] = field(default_factory=dict)
    # Set when a stage answers the whole request itself.
    answer: Answer = None
    answered: bool = False
    # What stages note for their own response step (the policy in force, say).
    notes: dict[str, Any] = field(default_factory=dict)
    # Every item decision made on the way in, in order.
    decisions: list[ItemDecision] = field(default_factory=list)
    # time.perf_counter() and time.time() when the call began (latency, event times).
    started: float = field(default_factory=time.perf_counter)
    started_at: float = field(default_factory=time.time)

    @property
    def identity(self) -> Identity:
        return self.session.identity or ANONYMOUS

    @property
    def api_key(self) -> int:
        return self.request.api_key

    @property
    def resources(self) -> tuple[Resource, ...]:
        """The resources the request names, in request order, as stages know them."""
        return tuple(self.key(r) for r in items.names(self.request.body))

    def key(self, resource: Resource) -> Resource:
        """How a request item's resource is known to stages: a topic by name (an id the
        layout names is that name, an unknown one its text), a config resource of a
        broker, broker logger or client metrics as the cluster's, as Kafka checks them."""
        name = resource.name
        if isinstance(name, uuid.UUID):
            known = self.session.upstream.view.names_by_id.get(name)
            return Resource(TOPIC, known if known is not None else str(name))
        if resource.kind in _OWN_KINDS:
            return resource
        return Resource(CLUSTER, name)

    def withhold(self, resource: Resource, denial: Denial) -> None:
        """Leave ``resource``'s items out of the request; they are answered ``denial``."""
        self.withheld.setdefault(resource, denial)

    def refuse(self, error: ErrorCode, message: str) -> None:
        """Answer every item of the request with ``error``, as a broker does when it
        refuses a request as a whole; the handler is not called."""
        self.answer = items.error_response(self.request.body, error, message)
        self.answered = True


def topic_name(call: Call, entry: Any) -> str:
    """The topic a Produce or Fetch topic entry names (``name`` in Produce, ``topic`` in
    Fetch). From v13 on both name topics by id instead: the name the layout knows, else
    the id's text (which no rule names, as :meth:`Call.key` sees it too)."""
    for attribute in ("name", "topic"):
        name = getattr(entry, attribute, None)
        if name:
            return str(name)
    topic_id = getattr(entry, "topic_id", None)
    if isinstance(topic_id, uuid.UUID):
        known = call.session.upstream.view.names_by_id.get(topic_id)
        return known if known is not None else str(topic_id)
    return "?"


class Stage(Protocol):
    """One control on the request path."""

    name: str

    async def on_request(self, call: Call) -> None:
        """Look at the request; withhold items or refuse it."""

    async def on_response(self, call: Call, answer: Answer) -> Answer:
        """Look at (and possibly rewrite) the answer."""

    def rejected(self, session: ClientSession, detail: str) -> None:
        """A frame from this session could not be decoded; the connection closes."""


class Pipeline:
    """The stages, in order, around every handler."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = tuple(stages)

    async def run(self, session: ClientSession, request: Request, handler: Handler) -> Answer:
        """Answer ``request``: stages in, the handler (unless a stage answered or
        withheld every item), stages out."""
        call = Call(session, request)
        for stage in self.stages:
            try:
                await stage.on_request(call)
            except Exception as exc:
                _stage_failed(stage, "request", exc)
                call.refuse(_retriable(call), f"the gateway's {stage.name} check failed; retry")
                break
            if call.answered:
                break
        if call.answered:
            answer = call.answer
        elif call.withheld:
            answer = await _without_withheld(call, handler)
        else:
            answer = await handler(session, call.request)
        for stage in reversed(self.stages):
            try:
                answer = await stage.on_response(call, answer)
            except Exception as exc:
                # Fail closed: an answer a stage could not check is not delivered.
                _stage_failed(stage, "response", exc)
                answer = items.error_response(
                    request.body, _retriable(call), f"the gateway's {stage.name} check failed"
                )
        return answer

    def rejected(self, session: ClientSession, detail: str) -> None:
        for stage in self.stages:
            stage.rejected(session, detail)


async def _without_withheld(call: Call, handler: Handler) -> Answer:
    """Serve what is left of the request, then add the withheld items' answers."""
    body = call.request.body
    withheld = call.withheld
    kept = items.without_items(body, lambda r: call.key(r) in withheld)
    if kept is body:
        # The withheld resources name no item that can be answered on its own (a
        # nested list): the request cannot be served in part.
        first = next(iter(withheld.values()))
        return cast(Answer, items.error_response(body, first.error, first.message))
    answers = [
        items.error_response(_only(call, resource), denial.error, denial.message)
        for resource, denial in withheld.items()
    ]
    if items.has_items(kept):
        call.request = call.request.with_body(kept)
        answer = await handler(call.session, call.request)
    else:
        # Nothing left to ask upstream: the answer is the withheld items' alone.
        answer = items.error_response(kept, ErrorCode.none)
    if answer is None:
        return None  # acks=0: the client expects no answer at all
    if isinstance(answer, EncodedBody):
        answer = answer.decoded()
    merged: Any = answer
    for extra in answers:
        merged = items.merge_items(merged, extra)
    return cast(Answer, merged)


def _retriable(call: Call) -> ErrorCode:
    return items.unavailable_error(call.api_key)


# A failing stage fails every request until it recovers: one log line per stage and
# phase in this many seconds (with the count since), not one per request.
_LOG_EVERY_SECONDS = 10.0
_last_logged: dict[tuple[str, str], tuple[float, int]] = {}


def _stage_failed(stage: Stage, phase: str, exc: Exception) -> None:
    """A stage that cannot do its job refuses (fail closed): the request is answered
    with the API's retriable error and never served unchecked."""
    metrics.PIPELINE_STAGE_FAILURES.labels(stage.name, phase).inc()
    key = (stage.name, phase)
    now = time.monotonic()
    last, suppressed = _last_logged.get(key, (-_LOG_EVERY_SECONDS, 0))
    if now - last < _LOG_EVERY_SECONDS:
        _last_logged[key] = (last, suppressed + 1)
        return
    _last_logged[key] = (now, 0)
    more = f" ({suppressed} more since the last report)" if suppressed else ""
    if isinstance(exc, GatewayError):
        # A known condition (the audit log cannot write, ...): its message says why.
        log.warning("pipeline stage %s refused on the %s: %s%s", stage.name, phase, exc, more)
    else:
        log.error("pipeline stage %s failed on the %s%s", stage.name, phase, more, exc_info=exc)


def _only(call: Call, resource: Resource) -> Any:
    """The request with ``resource``'s items alone, to build their answers from."""
    return items.without_items(call.request.body, lambda other: call.key(other) != resource)
