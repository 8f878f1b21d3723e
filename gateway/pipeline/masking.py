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
itself once the cause is fixed; a metric counts the cause and the audit event of the
Fetch names it (``masking_failed``). What was masked goes to the audit event too
(``masking``: per partition the rule ids, field paths, record counts and schema ids).

Records larger than ``masking.inline_max_bytes`` per partition are masked on a worker
thread, so one large fetch does not stall the other connections.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

from gateway import metrics
from gateway.masking.engine import MaskingEngine, MaskingFailed, PartitionResult
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


class MaskingStage:
    """Masks fetched records by the masking rules of the policy in force."""

    name = "masking"

    def __init__(self, policies: PolicyStore, engine: MaskingEngine | None) -> None:
        self._policies = policies
        self._engine = engine

    async def on_request(self, call: Call) -> None:
        return None

    async def on_response(self, call: Call, answer: Answer) -> Answer:
        if call.api_key != api.FETCH or answer is None:
            return answer
        policy = self._policies.current
        if policy is None or not policy.masking:
            return answer
        entity: Any = answer.decoded() if isinstance(answer, EncodedBody) else answer
        identity = call.identity
        topics = []
        touched = False
        for topic in entity.responses:
            name = _topic_name(call, topic)
            rules = masking_for(policy.masking, identity, name, "fetch")
            if not rules:
                topics.append(topic)
                continue
            parts = []
            for part in topic.partitions:
                if not part.records:
                    parts.append(part)
                    continue
                touched = True
                parts.append(await self._mask(call, name, part, rules))
            topics.append(dataclasses.replace(topic, partitions=tuple(parts)))
        if not touched:
            return answer
        masked: Answer = dataclasses.replace(entity, responses=tuple(topics))
        return masked

    async def _mask(self, call: Call, topic: str, part: Any, rules: Any) -> Any:
        engine = self._engine
        try:
            if engine is None:
                raise MaskingFailed("not_configured", "masking rules apply but masking is off")
            result = await engine.mask(topic, part.records, rules)
        except MaskingFailed as exc:
            metrics.MASKING_FAILURES.labels(topic, exc.cause).inc()
            call.notes.setdefault(FAILED_NOTE, []).append(
                {"topic": topic, "partition": part.partition_index, "cause": exc.cause}
            )
            _log_failure(topic, part.partition_index, exc)
            return dataclasses.replace(
                part,
                error_code=items.unavailable_error(api.FETCH),
                records=None,
            )
        _count(topic, result)
        if result.masked:
            call.notes.setdefault(NOTE, []).append(
                {"topic": topic, "partition": part.partition_index, **result.evidence()}
            )
        return dataclasses.replace(part, records=result.records)

    def rejected(self, session: ClientSession, detail: str) -> None:
        return None


def _topic_name(call: Call, topic: Any) -> str:
    name = getattr(topic, "topic", None)
    if name:
        return str(name)
    known = call.session.upstream.view.names_by_id.get(topic.topic_id)
    # An id the layout cannot name yet: masked as its text (no rule names it), which
    # is what the policy stage also saw.
    return known if known is not None else str(topic.topic_id)


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
