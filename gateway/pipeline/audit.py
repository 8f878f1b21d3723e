"""The audit stage: every request's event is durable before its answer is released.

``on_response`` builds the request event (gateway.audit.events) and awaits the sink's
append; only then does the answer go on to the client. When the event cannot be
written (:class:`~gateway.errors.AuditUnavailable`) the stage raises, and the pipeline
answers the request with the API's retriable error (fail closed), unless the config
says ``fail_open``. While the sink knows it cannot write, ``on_request`` refuses
at once, so the cluster does not act on requests whose events cannot be written. This
stage never changes a request or an answer, and it reads record batches only as far as
their headers.

It must be the first stage of the pipeline, so that its ``on_response`` runs last and
records the answer the client gets.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from gateway.audit import events
from gateway.audit.recorder import StageSettings
from gateway.audit.sink import AuditSink
from gateway.errors import AuditUnavailable
from gateway.protocol.codec import Answer, EncodedBody

if TYPE_CHECKING:
    from gateway.pipeline import Call
    from gateway.session import ClientSession, Services

log = logging.getLogger(__name__)

# Where on_request keeps the request as it came, in Call.notes.
NOTE = "audit.request"


class AuditStage:
    """Writes one event per request before its answer is released."""

    name = "audit"

    def __init__(self, sink: AuditSink, settings: StageSettings) -> None:
        self._sink = sink
        self._settings = settings
        # Requests served although their event was not written (fail_open).
        self.unrecorded = 0

    async def on_request(self, call: Call) -> None:
        # The request as the client sent it: a later stage may withhold items, and the
        # event records what was asked (the call's own start time is the request's).
        call.notes[NOTE] = call.request
        # While the log is known not to write, refuse before the cluster acts, so that
        # a Produce is not written to Kafka only to be refused after (a retry by a
        # producer without idempotence would then write it twice).
        if not self._settings.fail_open:
            self._sink.ensure_writable()

    async def on_response(self, call: Call, answer: Answer) -> Answer:
        finished = time.perf_counter()
        entity = answer
        if isinstance(answer, EncodedBody):
            # An answer passed on as the upstream's bytes is decoded once more here,
            # for its per-item errors and offsets: one decode per request (the
            # Fetch's record bytes are sliced, not copied into records). The bytes
            # themselves still go to the client unchanged.
            entity = answer.decoded()
        asked = call.notes.get(NOTE, call.request)
        event = events.request(
            call, entity, answered=answer is not None, finished=finished, asked=asked
        )
        try:
            await self._sink.append(event)
        except AuditUnavailable:
            if not self._settings.fail_open:
                raise
            self.unrecorded += 1
            log.warning("audit event not written; serving anyway (fail_open)")
        return answer

    def rejected(self, session: ClientSession, detail: str) -> None:
        # The connection closes on an undecodable frame; its close event says so.
        return None


def audit_stage(services: Services) -> AuditStage | None:
    """The audit stage for ``services``, or None when audit is off."""
    recorder = services.audit
    if recorder is None:
        return None
    return AuditStage(recorder.sink, recorder.settings)
