"""The audit stage on the request path, driven through a real ClientConnection.

The sink is an in-memory stand-in for the audit log (it records events, holds or
refuses them); the upstream is scripted (tests/unit/harness.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import json
import struct
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from kio.schema.errors import ErrorCode
from kio.schema.produce.v9 import request as produce_request
from kio.schema.produce.v13 import request as v13
from kio.schema.produce.v13 import response as v13_answer

from gateway.audit import events
from gateway.audit.recorder import Recorder, StageSettings
from gateway.errors import AuditUnavailable
from gateway.pipeline.audit import audit_stage
from gateway.protocol import items
from tests.unit.harness import Harness, settle, topic_id
from tests.unit.test_client_connection import (
    BROKERS,
    fetch,
    fetch_items,
    fetched,
    produce,
    produce_items,
    produced,
)

POLICY = """
rules:
  - id: write-orders
    effect: allow
    subjects: {listeners: [harness]}
    resources: [{type: topic, literal: orders}]
    operations: [write, read]
  - id: no-secrets
    effect: deny
    subjects: {principals: ["*"]}
    resources: [{type: topic, prefix: secret}]
    operations: [all]
"""

LEADERS = {"orders": {0: 1, 1: 1}, "secret-x": {0: 1}}


class MemorySink:
    """Records every event; while ``hold`` is clear, append waits for it."""

    def ensure_writable(self) -> None:
        return None

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.hold = asyncio.Event()
        self.hold.set()
        # The types of the events whose append is waiting on ``hold``.
        self.waiting: list[str] = []

    async def append(self, event: Mapping[str, Any]) -> None:
        self.waiting.append(event["type"])
        await self.hold.wait()
        self.waiting.remove(event["type"])
        # Through JSON, as the log stores it: a value JSON cannot hold fails here.
        self.events.append(json.loads(json.dumps(event)))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]


class BrokenSink:
    """An audit log that cannot write (and has not noticed yet: ``healthy``)."""

    def __init__(self, healthy: bool = True) -> None:
        self.healthy = healthy

    def ensure_writable(self) -> None:
        # As AuditLog: an unhealthy log refuses at once (fail_open is the log's own
        # setting there; this sink stands for a log without it).
        if not self.healthy:
            raise AuditUnavailable("disk full")

    async def append(self, event: Mapping[str, Any]) -> None:
        raise AuditUnavailable("disk full")


def audited(
    tmp_path: Path, sink: Any, fail_open: bool = False, payloads: list[Any] | None = None
) -> Harness:
    (tmp_path / "policy.yaml").write_text(POLICY)
    recorder = Recorder(sink, StageSettings(fail_open=fail_open))
    overrides: dict[str, Any] = {"policy": {"dir": str(tmp_path)}}
    if payloads is not None:
        overrides["audit"] = {
            "dir": str(tmp_path / "audit"),
            "key_file": str(tmp_path / "audit.key"),
            "payloads": payloads,
        }
    h = Harness(overrides=overrides, audit=recorder)
    h.pool.set_layout(BROKERS, LEADERS)
    return h


def batch(base_offset: int, count: int, payload: int = 10) -> bytes:
    """A magic-2 record batch: a real header, ``payload`` bytes of (unread) records."""
    header = bytearray(61)
    struct.pack_into(">qi", header, 0, base_offset, 61 - 12 + payload)
    header[16] = 2
    struct.pack_into(">i", header, 23, count - 1)
    struct.pack_into(">i", header, 57, count)
    return bytes(header) + b"r" * payload


def produce_batches(*parts: tuple[str, int, bytes], acks: int = 1) -> Any:
    topics: dict[str, list[Any]] = {}
    for topic, partition, records in parts:
        topics.setdefault(topic, []).append(
            produce_request.PartitionProduceData(index=partition, records=records)
        )
    return dataclasses.replace(
        produce("orders", acks=acks),
        topic_data=tuple(
            produce_request.TopicProduceData(name=name, partition_data=tuple(p))
            for name, p in topics.items()
        ),
    )


async def test_a_produce_event_names_resources_decisions_record_counts_and_base_offset(
    tmp_path: Path,
) -> None:
    sink = MemorySink()
    records = batch(0, 3) + batch(3, 2)
    async with audited(tmp_path, sink) as h:
        h.client.send(produce_batches(("orders", 0, records), ("orders", 1, batch(0, 1))))
        (sent,) = await h.sends(1)
        sent.reply(produced(sent.body, base_offset=42))
        (answer,) = await h.answers(1)
        assert produce_items(answer.body) == {
            "orders/0": ErrorCode.none,
            "orders/1": ErrorCode.none,
        }
    (event,) = sink.of("request")
    assert event["v"] == 1
    assert event["api"] == "Produce"
    assert event["version"] == 9
    assert event["correlation_id"] == answer.correlation_id
    assert event["client_id"] == "harness"
    assert event["principal"] == "anonymous"
    assert event["listener"] == "harness"
    assert event["connection"] == h.connection.session.connection_id
    assert event["resources"] == [{"kind": "topic", "name": "orders"}]
    (decision,) = event["decisions"]
    assert decision["allowed"] is True
    assert decision["rule"] == "write-orders"
    assert decision["policy_version"] == h.connection.session.services.policies.version
    assert decision["policy_version"] is not None
    assert event["produce"] == [
        {"topic": "orders", "partition": 0, "records": 5, "bytes": len(records), "base_offset": 42},
        {"topic": "orders", "partition": 1, "records": 1, "bytes": 71, "base_offset": 42},
    ]
    assert event["results"] == [
        {"item": "orders/0", "error": "none"},
        {"item": "orders/1", "error": "none"},
    ]
    assert event["answered"] is True
    assert event["throttle_ms"] == 0.0
    assert event["latency_ms"] >= 0.0


async def test_a_denied_items_decision_is_recorded_with_its_rule_and_policy_version(
    tmp_path: Path,
) -> None:
    sink = MemorySink()
    async with audited(tmp_path, sink) as h:
        h.client.send(produce_batches(("orders", 0, batch(0, 1)), ("secret-x", 0, batch(0, 4))))
        (sent,) = await h.sends(1)
        sent.reply(produced(sent.body, base_offset=7))
        await h.answers(1)
    (event,) = sink.of("request")
    version = h.connection.session.services.policies.version
    denied = [d for d in event["decisions"] if not d["allowed"]]
    assert denied == [
        {
            "stage": denied[0]["stage"],
            "kind": "topic",
            "name": "secret-x",
            "allowed": False,
            "rule": "no-secrets",
            "policy_version": version,
            "error": "topic_authorization_failed",
        }
    ]
    results = {r["item"]: r["error"] for r in event["results"]}
    assert results == {"orders/0": "none", "secret-x/0": "topic_authorization_failed"}
    offsets = {p["topic"]: p["base_offset"] for p in event["produce"]}
    assert offsets == {"orders": 7, "secret-x": None}


async def test_a_fetch_event_counts_the_delivered_records_and_their_offsets(
    tmp_path: Path,
) -> None:
    sink = MemorySink()
    async with audited(tmp_path, sink) as h:
        h.client.send(fetch("orders", 0))
        (sent,) = await h.sends(1)
        # Two whole batches and the start of a third, cut off as a broker may.
        sent.reply(fetched(sent.body, records=batch(10, 3) + batch(13, 2) + batch(15, 9)[:30]))
        (answer,) = await h.answers(1)
        assert fetch_items(answer.body) == {"orders/0": ErrorCode.none}
    (event,) = sink.of("request")
    assert event["api"] == "Fetch"
    assert event["fetch"] == [
        {"topic": "orders", "partition": 0, "records": 5, "first_offset": 10, "last_offset": 14}
    ]


async def test_the_answer_is_released_only_once_its_event_is_written(tmp_path: Path) -> None:
    sink = MemorySink()
    sink.hold.clear()
    async with audited(tmp_path, sink) as h:
        h.client.send(produce_batches(("orders", 0, batch(0, 1))))
        (sent,) = await h.sends(1)
        sent.reply(produced(sent.body))
        await settle()
        # The connection's opened event waits too: it did not hold the request up.
        assert sorted(sink.waiting) == ["connection_opened", "request"]
        assert h.client.answers() == []
        sink.hold.set()
        (answer,) = await h.answers(1)
        assert produce_items(answer.body) == {"orders/0": ErrorCode.none}
    assert len(sink.of("request")) == 1


async def test_an_unwritable_event_answers_the_retriable_error_and_the_connection_serves_on(
    tmp_path: Path,
) -> None:
    async with audited(tmp_path, BrokenSink()) as h:
        h.client.send(produce_batches(("orders", 0, batch(0, 1))))
        (sent,) = await h.sends(1)
        sent.reply(produced(sent.body))
        (answer,) = await h.answers(1)
        assert produce_items(answer.body) == {"orders/0": items.unavailable_error(0)}
        assert h.is_open
        h.client.send(fetch("orders", 0))
        (_, again) = await h.sends(2)
        again.reply(fetched(again.body))
        (_, second) = await h.answers(2)
        assert fetch_items(second.body) == {"orders/0": items.unavailable_error(1)}
        assert h.is_open


async def test_while_the_log_is_known_unhealthy_requests_are_refused_before_the_cluster_acts(
    tmp_path: Path,
) -> None:
    async with audited(tmp_path, BrokenSink(healthy=False)) as h:
        h.client.send(produce_batches(("orders", 0, batch(0, 1))))
        (answer,) = await h.answers(1)
        assert produce_items(answer.body) == {"orders/0": items.unavailable_error(0)}
        # Nothing went upstream: the record is not in Kafka without its event.
        assert h.pool.sent == []
        assert h.is_open


async def test_with_fail_open_an_unhealthy_log_still_forwards_and_serves(tmp_path: Path) -> None:
    async with audited(tmp_path, BrokenSink(healthy=False), fail_open=True) as h:
        h.client.send(produce_batches(("orders", 0, batch(0, 1))))
        (sent,) = await h.sends(1)
        sent.reply(produced(sent.body, base_offset=3))
        (answer,) = await h.answers(1)
        assert produce_items(answer.body) == {"orders/0": ErrorCode.none}


async def test_with_fail_open_an_unwritable_event_still_serves_the_answer(tmp_path: Path) -> None:
    async with audited(tmp_path, BrokenSink(), fail_open=True) as h:
        h.client.send(produce_batches(("orders", 0, batch(0, 1))))
        (sent,) = await h.sends(1)
        sent.reply(produced(sent.body, base_offset=3))
        (answer,) = await h.answers(1)
        assert produce_items(answer.body) == {"orders/0": ErrorCode.none}


async def test_an_acks_0_produce_gets_its_event_and_no_answer(tmp_path: Path) -> None:
    sink = MemorySink()
    async with audited(tmp_path, sink) as h:
        h.client.send(produce_batches(("orders", 0, batch(0, 2)), acks=0))
        (sent,) = await h.sends(1)
        assert sent.expect_response is False
        await settle()
    assert h.client.answers() == []
    (event,) = sink.of("request")
    assert event["answered"] is False
    assert event["produce"] == [
        {"topic": "orders", "partition": 0, "records": 2, "bytes": 71, "base_offset": None}
    ]


def test_without_an_audit_recorder_there_is_no_stage() -> None:
    h = Harness()
    assert h.connection.session.services.audit is None
    assert audit_stage(h.connection.session.services) is None


def test_every_event_is_made_of_json_types() -> None:
    built = [
        events.policy_reload("v1", "v2", applied=False, errors=["line 3: bad"]),
        events.admin_action("ops", "POST", "/policy/reload", 200),
    ]
    assert all(events.json_ready(e.values()) for e in built)
    assert built[0]["result"] == "rejected"
    assert built[0]["errors"] == ["line 3: bad"]
    assert built[1]["status"] == 200


async def test_an_acks_0_produce_whose_event_fails_still_gets_no_answer(tmp_path: Path) -> None:
    # The pipeline's retriable error must not become an answer the client never asked for.
    async with audited(tmp_path, BrokenSink()) as h:
        h.client.send(produce_batches(("orders", 0, batch(0, 2)), acks=0))
        (sent,) = await h.sends(1)
        assert sent.expect_response is False
        await settle()
        assert h.client.answers() == []
        assert h.is_open


def test_an_api_without_item_descriptions_records_its_own_error_code() -> None:
    """A refused SaslAuthenticate shows sasl_authentication_failed in the event, not an
    empty result, so a failed login is visible in the request's own event too."""
    import datetime

    from kio.schema.sasl_authenticate.v2 import response as sasl_response

    answer = sasl_response.SaslAuthenticateResponse(
        error_code=ErrorCode.sasl_authentication_failed,
        error_message="Authentication failed",
        auth_bytes=b"",
        session_lifetime=datetime.timedelta(0),
    )
    assert events.results(36, 2, answer) == [{"item": "", "error": "sasl_authentication_failed"}]


async def test_a_produce_event_captures_record_hashes_only_for_the_topics_configured(
    tmp_path: Path,
) -> None:
    from tests.unit.test_audit_capture import batch as real_batch

    sink = MemorySink()
    capture = [{"topics": "orders", "capture": "sha256"}]
    async with audited(tmp_path, sink, payloads=capture) as h:
        h.client.send(produce_batches(("orders", 0, real_batch(0, [(b"k", b"secret-value")]))))
        (sent,) = await h.sends(1)
        sent.reply(produced(sent.body, base_offset=7))
        await h.answers(1)
        h.client.send(produce_batches(("secret-x", 0, real_batch(0, [(b"k", b"v")]))))
        await h.answers(2)
    first, second = sink.of("request")
    (written,) = first["produce"]
    assert written["capture"] == "sha256"
    assert written["records"] == 1  # the count stays beside what was captured
    assert [(r["offset"], r["value_sha256"]) for r in written["captured"]] == [
        (7, hashlib.sha256(b"secret-value").hexdigest())
    ]
    assert "secret-value" not in json.dumps(sink.events)
    assert all("captured" not in p and "capture" not in p for p in second["produce"])


def test_a_produce_v13_event_names_its_topics_by_name_though_the_request_uses_ids() -> None:
    # Kafka 4.1's Java producer sends Produce v13, which names topics by id only.
    known, unknown = topic_id("orders"), topic_id("gone")
    body = v13.ProduceRequest(
        transactional_id=None,
        acks=-1,
        timeout=datetime.timedelta(seconds=30),
        topic_data=tuple(
            v13.TopicProduceData(
                topic_id=tid,
                partition_data=(v13.PartitionProduceData(index=0, records=batch(0, 2)),),
            )
            for tid in (known, unknown)
        ),
    )
    answer = v13_answer.ProduceResponse(
        responses=tuple(
            v13_answer.TopicProduceResponse(
                topic_id=tid,
                partition_responses=(
                    v13_answer.PartitionProduceResponse(
                        index=0,
                        error_code=ErrorCode.none,
                        base_offset=base,
                        log_append_time=datetime.timedelta(milliseconds=-1),
                        log_start_offset=0,
                        record_errors=(),
                        error_message=None,
                    ),
                ),
            )
            for tid, base in ((known, 40), (unknown, 7))
        ),
        throttle_time=datetime.timedelta(0),
    )
    view = SimpleNamespace(names_by_id={known: "orders"})
    call: Any = SimpleNamespace(session=SimpleNamespace(upstream=SimpleNamespace(view=view)))
    written = events.produce_partitions(body, answer, call)
    assert [(p["topic"], p["base_offset"], p["records"]) for p in written] == [
        ("orders", 40, 2),
        (str(unknown), 7, 2),
    ]
