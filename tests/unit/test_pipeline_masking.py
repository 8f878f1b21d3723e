"""The masking stage on a real ClientConnection: a Fetch of a topic with masking rules
is answered with masked records, other topics' bytes pass untouched, an exempt
identity reads in clear, and a partition that cannot be masked answers the retriable
error with no records (fail closed) while the audit event says what happened."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kio.schema.errors import ErrorCode
from kio.schema.produce.v9 import request as produce_request

from gateway import metrics
from gateway.audit.recorder import Recorder, StageSettings
from gateway.masking.engine import MaskingEngine
from gateway.masking.methods import MaskKey
from gateway.masking.schemas import RegisteredSchema, RegistryUnavailable
from tests.unit.harness import Harness, settle
from tests.unit.test_audit_stage import LEADERS, MemorySink
from tests.unit.test_client_connection import (
    BROKERS,
    fetch,
    fetched,
    produce,
    produce_items,
    produced,
)

POLICY = """
rules:
  - id: read-all
    effect: allow
    subjects: {listeners: [harness]}
    resources: [{type: topic, literal: "*"}]
    operations: [read, write, describe]
masking:
  - id: orders-cards
    topics: [{literal: orders}]
    value: {format: text, detectors: [card], method: partial, keep_last: 4}
  - id: secret-avro
    topics: [{prefix: secret}]
    value: {format: avro, fields: [{path: name, method: redact}]}
  - id: notes-on-write
    topics: [{literal: notes}]
    apply_on: [produce]
    value: {format: text, detectors: [email], method: redact, replacement: "(email)"}
  - id: ledger-schemas
    topics: [{literal: ledger}]
    require_schema: true
"""

CARD = b"card 4111 1111 1111 1111 ok"


class DownRegistry:
    async def schema_by_id(self, schema_id: int) -> RegisteredSchema:
        raise RegistryUnavailable("registry http://registry.test: connection refused")

    async def registered(self, subject: str, schema_id: int) -> bool:
        raise RegistryUnavailable("registry http://registry.test: connection refused")


class LedgerRegistry(DownRegistry):
    """Knows schema 7 under ledger-value, nothing else."""

    async def registered(self, subject: str, schema_id: int) -> bool:
        return (subject, schema_id) == ("ledger-value", 7)


def records(*values: bytes) -> bytes:
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 20)
    for i, value in enumerate(values):
        builder.append(i, 1_700_000_000_000, None, value, [])
    return bytes(builder.build())


def harness(tmp_path: Path, masking: Any, sink: MemorySink | None = None) -> Harness:
    (tmp_path / "policy.yaml").write_text(POLICY)
    audit = Recorder(sink, StageSettings(fail_open=False)) if sink is not None else None
    h = Harness(overrides={"policy": {"dir": str(tmp_path)}}, audit=audit, masking=masking)
    h.pool.set_layout(
        BROKERS, {**LEADERS, "payments": {0: 1}, "notes": {0: 1}, "ledger": {0: 1, 1: 1}}
    )
    return h


def engine(source: Any = None) -> MaskingEngine:
    return MaskingEngine(source or DownRegistry(), MaskKey(b"m" * 32))


async def fetch_one(h: Harness, topic: str, data: bytes, held: bool = False) -> Any:
    """The one partition of a Fetch answered with ``data``; ``held`` says the answer
    has nothing to deliver, so it is held (for the fetch's max_wait) before it goes."""
    h.client.send(fetch(topic, 0))
    (sent,) = await h.sends(1)
    sent.reply(fetched(sent.body, records=data))
    if held:
        await settle()
        assert h.client.answers() == [], "an answer with nothing to deliver went at once"
        async with asyncio.timeout(10):
            while not h.client.answers():
                await asyncio.sleep(0.02)
    (answer,) = await h.answers(1)
    ((part,),) = [t.partitions for t in answer.body.responses]
    return part


async def test_a_fetch_of_a_masked_topic_delivers_masked_records(tmp_path: Path) -> None:
    sink = MemorySink()
    async with harness(tmp_path, engine(), sink) as h:
        part = await fetch_one(h, "orders", records(CARD, b"nothing here"))
    assert part.error_code == ErrorCode.none
    values = [r.value for r in DefaultRecordBatch(part.records)]
    assert values == [b"card **** **** **** 1111 ok", b"nothing here"]
    (event,) = sink.of("request")
    assert event["masking"] == [
        {
            "topic": "orders",
            "partition": 0,
            "records": 1,
            "rules": [{"rule": "orders-cards", "records": 1, "fields": ["value:card"]}],
            "schema_ids": [],
        }
    ]


async def test_a_topic_without_masking_rules_passes_as_the_same_bytes(tmp_path: Path) -> None:
    data = records(CARD)
    async with harness(tmp_path, engine()) as h:
        part = await fetch_one(h, "payments", data)
    assert part.records == data


async def test_a_partition_that_cannot_be_masked_gets_a_retriable_error_and_no_records(
    tmp_path: Path,
) -> None:
    sink = MemorySink()
    failures = metrics.MASKING_FAILURES.labels("secret-x", "registry_unavailable")
    before = failures._value.get()
    wire = b"\x00\x00\x00\x00\x07" + b"\x02n"
    async with harness(tmp_path, engine(), sink) as h:
        part = await fetch_one(h, "secret-x", records(wire), held=True)
    assert part.error_code == ErrorCode.not_leader_or_follower
    assert not part.records
    assert failures._value.get() == before + 1
    (event,) = sink.of("request")
    assert event["masking_failed"] == [
        {"topic": "secret-x", "partition": 0, "cause": "registry_unavailable"}
    ]
    assert event["results"] == [{"item": "secret-x/0", "error": "not_leader_or_follower"}]


async def test_without_a_masking_engine_rules_refuse_what_they_name(tmp_path: Path) -> None:
    async with harness(tmp_path, None) as h:
        part = await fetch_one(h, "orders", records(CARD), held=True)
    assert part.error_code == ErrorCode.not_leader_or_follower
    assert not part.records


def produce_to(topic: str, *parts: tuple[int, bytes], acks: int = 1) -> Any:
    return dataclasses.replace(
        produce(topic, acks=acks),
        topic_data=(
            produce_request.TopicProduceData(
                name=topic,
                partition_data=tuple(
                    produce_request.PartitionProduceData(index=i, records=r) for i, r in parts
                ),
            ),
        ),
    )


def wire(schema_id: int) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + b"\x02n"


async def test_a_produce_side_rule_masks_before_the_records_are_written(tmp_path: Path) -> None:
    async with harness(tmp_path, engine()) as h:
        h.client.send(produce_to("notes", (0, records(b"mail ann@example.com"))))
        (sent,) = await h.sends(1)
        (written,) = [p.records for t in sent.body.topic_data for p in t.partition_data]
        sent.reply(produced(sent.body))
        (answer,) = await h.answers(1)
    assert [r.value for r in DefaultRecordBatch(written)] == [b"mail (email)"]
    assert produce_items(answer.body) == {"notes/0": ErrorCode.none}


async def test_records_without_a_registered_schema_are_refused_invalid_record(
    tmp_path: Path,
) -> None:
    async with harness(tmp_path, engine(LedgerRegistry())) as h:
        h.client.send(produce_to("ledger", (0, records(wire(7))), (1, records(b"plain text"))))
        (sent,) = await h.sends(1)
        # Only the partition whose records carry a registered schema goes upstream.
        assert [p.index for t in sent.body.topic_data for p in t.partition_data] == [0]
        sent.reply(produced(sent.body))
        (answer,) = await h.answers(1)
    assert produce_items(answer.body) == {
        "ledger/0": ErrorCode.none,
        "ledger/1": ErrorCode.invalid_record,
    }
    (topic,) = answer.body.responses
    (refused,) = [p for p in topic.partition_responses if p.index == 1]
    assert "not in Confluent wire format" in refused.error_message


async def test_an_unregistered_schema_id_is_refused_without_asking_upstream(
    tmp_path: Path,
) -> None:
    async with harness(tmp_path, engine(LedgerRegistry())) as h:
        h.client.send(produce_to("ledger", (0, records(wire(8)))))
        (answer,) = await h.answers(1)
        assert h.pool.sent == []
    assert produce_items(answer.body) == {"ledger/0": ErrorCode.invalid_record}
    ((refused,),) = [t.partition_responses for t in answer.body.responses]
    assert refused.error_message == "schema id 8 is not registered for subject ledger-value"


async def test_a_registry_that_cannot_be_asked_refuses_the_produce_retriably(
    tmp_path: Path,
) -> None:
    async with harness(tmp_path, engine(DownRegistry())) as h:
        h.client.send(produce_to("ledger", (0, records(wire(7)))))
        (answer,) = await h.answers(1)
        assert h.pool.sent == []
    assert produce_items(answer.body) == {"ledger/0": ErrorCode.request_timed_out}
