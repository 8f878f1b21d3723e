"""The masking stage: records of topics with masking rules leave the gateway masked.

On the way back from a Fetch, each partition of a topic that masking rules name for
this identity (:func:`~gateway.policy.masking.masking_for`) is decoded
(:mod:`gateway.masking.batches`), its records' values, keys and headers masked as the
rules say (Avro fields with the writer schema from the registry, JSON fields, text
detectors), and its batches written back with everything else as the broker wrote
it. Partitions no rule names stay bytes.

Fail closed: when a partition cannot be masked (its schema cannot be fetched, a record
does not decode or is not in the format the rule expects, a batch does not parse) no
byte of it reaches the client: the partition answers the Fetch's retriable error with
no records, so the client fetches the same offset again and consumption resumes by
itself once the cause is fixed. An answer left with no records at all is held for the
Fetch's max_wait (at most :data:`REFUSED_HOLD_S`), as a broker holds a fetch with
nothing to deliver, so a client that asks again at once does not spin. A metric
counts the cause and the audit event of the Fetch names it (``masking_failed``). What
was masked goes to the audit event too (``masking``: per partition the rule ids, field
paths, record counts and schema ids).

On the way in, a Produce to a topic whose rules apply on ``produce`` is masked before
it is written (the request goes on with the rewritten batches), and a topic whose rule
says ``require_schema`` refuses each partition whose values are not in Confluent wire
format with a schema registered for ``<topic>-value``: INVALID_RECORD with a message
for that partition, while the other partitions of the request are written. When the
registry cannot be asked, or records cannot be masked, the whole Produce is refused
with its retriable error (nothing unchecked is written).

Records larger than ``masking.inline_max_bytes`` per partition are masked on a worker
thread, so one large fetch does not stall the other connections.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any, cast

from kio.schema.errors import ErrorCode

from gateway import metrics
from gateway.masking.engine import MaskingEngine, MaskingFailed, PartitionResult
from gateway.pipeline import topic_name
from gateway.pipeline.policies import PolicyStore
from gateway.policy.masking import masking_for
from gateway.protocol import items
from gateway.protocol import versions as api
from gateway.protocol.codec import Answer, EncodedBody

if TYPE_CHECKING:
    from gateway.pipeline import Call
    from gateway.session import ClientSession

log = logging.getLogger(__name__)

# Where the stage leaves what it did for the audit stage, in Call.notes.
NOTE = "masking"
FAILED_NOTE = "masking_failed"
# The answers of Produce partitions refused on the way in, added on the way back.
REFUSED_NOTE = "masking.refused"
# The longest a Fetch answer whose records were all refused is held.
REFUSED_HOLD_S = 0.5


class MaskingStage:
    """Masks fetched records by the masking rules of the policy in force."""

    name = "masking"

    def __init__(self, policies: PolicyStore, engine: MaskingEngine | None) -> None:
        self._policies = policies
        self._engine = engine

    async def on_request(self, call: Call) -> None:
        if call.api_key != api.PRODUCE:
            return
        policy = self._policies.current
        if policy is None or not policy.masking:
            return
        body = call.request.body
        topics = []
        refused: list[tuple[Any, Any, str]] = []  # (topic entry, partition, why)
        changed = False
        for topic in body.topic_data:
            name = topic_name(call, topic)
            rules = masking_for(policy.masking, call.identity, name, "produce")
            guarded = any(r.guards(call.identity, name) for r in policy.masking)
            if not rules and not guarded:
                topics.append(topic)
                continue
            parts = []
            for part in topic.partition_data:
                kept, why = await self._produced(call, name, part, rules, guarded)
                if why is not None:
                    refused.append((topic, part, why))
                else:
                    parts.append(kept)
                changed |= kept is not part
            if parts:
                topics.append(dataclasses.replace(topic, partition_data=tuple(parts)))
        if changed:
            self._rewrite_produce(call, body, topics, refused)

    async def _produced(
        self, call: Call, topic: str, part: Any, rules: Any, guarded: bool
    ) -> tuple[Any, str | None]:
        """One Produce partition as it goes on (masked where rules say), or why it is
        refused (its records lack registered schemas). A partition that cannot be
        checked or masked raises: the request is refused, retriably."""
        if not part.records:
            return part, None
        engine = self._engine
        if engine is None:
            raise MaskingFailed("not_configured", "masking rules apply but masking is off")
        if guarded and (why := await engine.unregistered(topic, part.records)) is not None:
            return None, why
        if not rules:
            return part, None
        masked = await self._mask(call, topic, part.index, part.records, rules)
        if masked is None:
            raise MaskingFailed("produce", f"records for {topic} could not be masked")
        if masked == part.records:
            return part, None
        return dataclasses.replace(part, records=masked), None

    @staticmethod
    def _rewrite_produce(
        call: Call, body: Any, topics: list[Any], refused: list[tuple[Any, Any, str]]
    ) -> None:
        if refused:
            metrics.MASKING_REFUSED_PRODUCE.inc(len(refused))
            call.notes[REFUSED_NOTE] = [
                items.error_response(
                    dataclasses.replace(
                        body, topic_data=(dataclasses.replace(topic, partition_data=(part,)),)
                    ),
                    ErrorCode.invalid_record,
                    why,
                )
                for topic, part, why in refused
            ]
        if not topics:
            # Nothing left to write: the answer is the refusals alone.
            call.answer = _merged(None, call.notes.pop(REFUSED_NOTE, []))
            call.answered = True
            return
        call.request = call.request.with_body(dataclasses.replace(body, topic_data=tuple(topics)))

    async def on_response(self, call: Call, answer: Answer) -> Answer:
        if call.api_key == api.PRODUCE and call.notes.get(REFUSED_NOTE) and answer is not None:
            written: Any = answer.decoded() if isinstance(answer, EncodedBody) else answer
            return cast(Answer, _merged(written, call.notes[REFUSED_NOTE]))
        if call.api_key != api.FETCH or answer is None:
            return answer
        policy = self._policies.current
        if policy is None or not policy.masking:
            return answer
        identity = call.identity
        # The gateway's Fetch is sessionless (handlers/fetch.py): the answer holds only
        # topics the request names, so an answer none of whose topics a rule names for
        # this identity passes as it came, without being decoded.
        asked = {topic_name(call, topic) for topic in call.request.body.topics}
        rules_of = {name: masking_for(policy.masking, identity, name, "fetch") for name in asked}
        if not any(rules_of.values()):
            return answer
        entity: Any = answer.decoded() if isinstance(answer, EncodedBody) else answer
        topics = []
        touched = False
        for topic in entity.responses:
            name = topic_name(call, topic)
            if name in rules_of:
                rules = rules_of[name]
            else:  # not asked for: decided here all the same
                rules = masking_for(policy.masking, identity, name, "fetch")
            if not rules or not any(part.records for part in topic.partitions):
                topics.append(topic)
                continue
            touched = True
            parts = [await self._fetched(call, name, part, rules) for part in topic.partitions]
            topics.append(dataclasses.replace(topic, partitions=tuple(parts)))
        if not touched:
            return answer
        if FAILED_NOTE in call.notes and not any(p.records for t in topics for p in t.partitions):
            wait = call.request.body.max_wait.total_seconds()
            await asyncio.sleep(max(0.0, min(wait, REFUSED_HOLD_S)))
        masked: Answer = dataclasses.replace(entity, responses=tuple(topics))
        return masked

    async def _fetched(self, call: Call, topic: str, part: Any, rules: Any) -> Any:
        """A fetched partition masked, or answering the retriable error with no records
        when it cannot be (noted in ``call.notes[FAILED_NOTE]``)."""
        if not part.records:
            return part
        records = await self._mask(call, topic, part.partition_index, part.records, rules)
        if records is None:
            return dataclasses.replace(
                part, error_code=items.unavailable_error(api.FETCH), records=None
            )
        return dataclasses.replace(part, records=records)

    async def _mask(
        self, call: Call, topic: str, partition: int, records: Any, rules: Any
    ) -> bytes | None:
        """The partition's records masked, or None when they cannot be (counted,
        logged and noted for the audit event)."""
        engine = self._engine
        try:
            if engine is None:
                raise MaskingFailed("not_configured", "masking rules apply but masking is off")
            result = await engine.mask(topic, records, rules)
        except MaskingFailed as exc:
            metrics.MASKING_FAILURES.labels(topic, exc.cause).inc()
            call.notes.setdefault(FAILED_NOTE, []).append(
                {"topic": topic, "partition": partition, "cause": exc.cause}
            )
            _log_failure(topic, partition, exc)
            return None
        _count(topic, result)
        if result.masked:
            call.notes.setdefault(NOTE, []).append(
                {"topic": topic, "partition": partition, **result.evidence()}
            )
        return result.records

    def rejected(self, session: ClientSession, detail: str) -> None:
        return None


def _merged(answer: Any, refusals: list[Any]) -> Any:
    """A Produce answer with the refused partitions' answers added, each to the entry of
    its topic where the answer has one (clients look partitions up by topic)."""
    for extra in refusals:
        if answer is None:
            answer = extra
            continue
        (added,) = extra.responses
        key = _topic_key(added)
        responses = list(answer.responses)
        for n, entry in enumerate(responses):
            if _topic_key(entry) == key:
                responses[n] = dataclasses.replace(
                    entry, partition_responses=entry.partition_responses + added.partition_responses
                )
                break
        else:
            responses.append(added)
        answer = dataclasses.replace(answer, responses=tuple(responses))
    return answer


def _topic_key(entry: Any) -> object:
    return getattr(entry, "name", None) or getattr(entry, "topic_id", None)


def _count(topic: str, result: PartitionResult) -> None:
    for rule_id, records in result.records_by_rule.items():
        metrics.MASKED_RECORDS.labels(topic, rule_id).inc(records)
    if result.bytes_rewritten:
        metrics.MASKING_BYTES_REWRITTEN.inc(result.bytes_rewritten)


_last_logged: Counter[str] = Counter()


def _log_failure(topic: str, partition: int, exc: MaskingFailed) -> None:
    # One line per cause every 1,000 failures: a registry outage refuses every fetch.
    key = f"{topic}:{exc.cause}"
    if _last_logged[key] % 1000 == 0:
        log.warning("masking refused %s/%d: %s", topic, partition, exc)
    _last_logged[key] += 1
