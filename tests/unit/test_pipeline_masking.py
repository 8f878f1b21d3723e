"""The masking stage on a real ClientConnection: a Fetch of a topic with masking rules
is answered with masked records, other topics' bytes pass untouched, an exempt
identity reads in clear, and a partition that cannot be masked answers the retriable
error with no records (fail closed) while the audit event says what happened."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kio.schema.errors import ErrorCode

from gateway import metrics
from gateway.audit.recorder import Recorder, StageSettings
from gateway.masking.engine import MaskingEngine
from gateway.masking.methods import MaskKey
from gateway.masking.schemas import RegisteredSchema, RegistryUnavailable
from tests.unit.harness import Harness
from tests.unit.test_audit_stage import LEADERS, MemorySink
from tests.unit.test_client_connection import BROKERS, fetch, fetched

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
"""

CARD = b"card 4111 1111 1111 1111 ok"


class DownRegistry:
    async def schema_by_id(self, schema_id: int) -> RegisteredSchema:
        raise RegistryUnavailable("registry http://registry.test: connection refused")


def records(*values: bytes) -> bytes:
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 20)
    for i, value in enumerate(values):
        builder.append(i, 1_700_000_000_000, None, value, [])
    return bytes(builder.build())


def harness(tmp_path: Path, masking: Any, sink: MemorySink | None = None) -> Harness:
    (tmp_path / "policy.yaml").write_text(POLICY)
    audit = Recorder(sink, StageSettings(fail_open=False)) if sink is not None else None
    h = Harness(overrides={"policy": {"dir": str(tmp_path)}}, audit=audit, masking=masking)
    h.pool.set_layout(BROKERS, {**LEADERS, "payments": {0: 1}})
    return h


def engine(source: Any = None) -> MaskingEngine:
    return MaskingEngine(source or DownRegistry(), MaskKey(b"m" * 32))


async def fetch_one(h: Harness, topic: str, data: bytes) -> Any:
    h.client.send(fetch(topic, 0))
    (sent,) = await h.sends(1)
    sent.reply(fetched(sent.body, records=data))
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
        part = await fetch_one(h, "secret-x", records(wire))
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
        part = await fetch_one(h, "orders", records(CARD))
    assert part.error_code == ErrorCode.not_leader_or_follower
    assert not part.records
