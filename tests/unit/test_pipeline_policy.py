"""The policy stage on the request path, driven through a real ClientConnection.

The upstream is scripted (tests/unit/harness.py): every request that reaches it is
recorded, so these tests can say exactly what a denied item did not reach.
"""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path
from typing import Any

import pytest
from kio.schema.errors import ErrorCode
from kio.schema.list_groups.v4 import request as list_groups_request
from kio.schema.list_groups.v4 import response as list_groups_response
from kio.schema.produce.v9 import request as produce_request

from gateway import pipeline
from gateway.pipeline import authorize
from gateway.protocol.versions import METADATA
from tests.unit.harness import Harness, settle
from tests.unit.test_client_connection import (
    BROKERS,
    NO_TIME,
    counter,
    create_topics,
    create_topics_items,
    created,
    described,
    join_group,
    metadata,
    metadata_items,
    produce,
    produce_items,
    produced,
)

# The harness's PLAINTEXT listener is "harness": its clients are anonymous.
POLICY = """
rules:
  - id: write-orders
    effect: allow
    subjects: {listeners: [harness]}
    resources: [{type: topic, literal: orders}]
    operations: [write]
  - id: no-secrets
    effect: deny
    subjects: {principals: ["*"]}
    resources: [{type: topic, prefix: secret}]
    operations: [all]
"""


def harness(tmp_path: Path, policy: str = POLICY) -> Harness:
    (tmp_path / "policy.yaml").write_text(policy)
    return Harness(overrides={"policy": {"dir": str(tmp_path)}})


def produce_to(*topics: str, transactional_id: str | None = None) -> Any:
    """One Produce naming every topic (partition 0 each)."""
    return produce_request.ProduceRequest(
        transactional_id=transactional_id,
        acks=1,
        timeout=datetime.timedelta(seconds=5),
        topic_data=tuple(
            produce_request.TopicProduceData(
                name=topic,
                partition_data=(
                    produce_request.PartitionProduceData(index=0, records=b"batch:" + t_bytes),
                ),
            )
            for topic in topics
            for t_bytes in (topic.encode(),)
        ),
    )


def single_leader_layout(h: Harness) -> None:
    h.pool.set_layout(BROKERS, {"orders": {0: 1}, "payments": {0: 1}, "secret-x": {0: 1}})


async def test_a_denied_topic_in_a_single_leader_produce_never_reaches_the_broker(
    tmp_path: Path,
) -> None:
    async with harness(tmp_path) as h:
        single_leader_layout(h)
        h.client.send(produce_to("orders", "payments"))
        (sent,) = await h.sends(1)
        # Re-encoded without payments: not the client's bytes, which still name it.
        assert not isinstance(sent.request.encode(), memoryview)
        assert [t.name for t in sent.body.topic_data] == ["orders"]
        assert b"payments" not in bytes(sent.request.encode())
        sent.reply(produced(sent.body, base_offset=7))
        (answer,) = await h.answers(1)
        assert produce_items(answer.body) == {
            "orders/0": ErrorCode.none,
            "payments/0": ErrorCode.topic_authorization_failed,
        }
        (refused,) = [t for t in answer.body.responses if t.name == "payments"]
        assert "write on topic 'payments'" in refused.partition_responses[0].error_message
    assert len(h.pool.sent) == 1


async def test_an_allowed_produce_still_goes_upstream_as_the_clients_bytes(
    tmp_path: Path,
) -> None:
    async with harness(tmp_path) as h:
        single_leader_layout(h)
        h.client.send(produce_to("orders"))
        (sent,) = await h.sends(1)
        assert isinstance(sent.request.encode(), memoryview)
        sent.reply(produced(sent.body))
        (answer,) = await h.answers(1)
        assert produce_items(answer.body) == {"orders/0": ErrorCode.none}


async def test_a_produce_whose_every_topic_is_denied_is_answered_without_the_upstream(
    tmp_path: Path,
) -> None:
    before = counter(
        "gateway_policy_decisions_total", api="Produce", decision="deny", rule="no-secrets"
    )
    async with harness(tmp_path) as h:
        single_leader_layout(h)
        h.client.send(produce_to("payments", "secret-x"))
        (answer,) = await h.answers(1)
        assert produce_items(answer.body) == {
            "payments/0": ErrorCode.topic_authorization_failed,
            "secret-x/0": ErrorCode.topic_authorization_failed,
        }
        (secret,) = [t for t in answer.body.responses if t.name == "secret-x"]
        assert "denied by rule no-secrets" in secret.partition_responses[0].error_message
        await settle()
    assert h.pool.sent == []
    assert (
        counter("gateway_policy_decisions_total", api="Produce", decision="deny", rule="no-secrets")
        == before + 1
    )


async def test_a_denied_transactional_id_fails_the_whole_produce(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        single_leader_layout(h)
        h.client.send(produce_to("orders", transactional_id="txn-1"))
        (answer,) = await h.answers(1)
        assert produce_items(answer.body) == {
            "orders/0": ErrorCode.transactional_id_authorization_failed
        }
    assert h.pool.sent == []


async def test_metadata_for_a_forbidden_topic_and_for_a_missing_one_look_the_same(
    tmp_path: Path,
) -> None:
    async with harness(tmp_path) as h:
        single_leader_layout(h)
        h.client.send(metadata("orders", "payments", "no-such-topic"))
        (sent,) = await h.sends(1)
        assert [t.name for t in sent.body.topics] == ["orders"]
        sent.reply(described(sent.body))
        (answer,) = await h.answers(1)
        assert metadata_items(answer.body) == {
            "orders": ErrorCode.none,
            "payments": ErrorCode.topic_authorization_failed,
            "no-such-topic": ErrorCode.topic_authorization_failed,
        }
        assert [b.node_id for b in answer.body.brokers] == [0]


async def test_metadata_for_every_topic_lists_only_describable_ones(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        single_leader_layout(h)
        every = metadata()
        h.client.send(
            every.__class__(
                topics=None,
                allow_auto_topic_creation=False,
                include_topic_authorized_operations=True,
            )
        )
        (sent,) = await h.sends(1)
        assert sent.body.topics is None
        sent.reply(described(metadata("orders", "payments", "secret-x")))
        (answer,) = await h.answers(1)
        assert [t.name for t in answer.body.topics] == ["orders"]
        (orders,) = answer.body.topics
        # write implies describe: bits 4 (WRITE) and 8 (DESCRIBE) of Kafka's AclOperation.
        assert orders.topic_authorized_operations == (1 << 4) | (1 << 8)


async def test_a_group_without_read_cannot_join_and_nothing_goes_upstream(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        single_leader_layout(h)
        h.client.send(join_group("payments"))
        (answer,) = await h.answers(1)
        assert answer.body.error_code == ErrorCode.group_authorization_failed
    assert h.pool.sent == []


async def test_list_groups_shows_only_describable_groups(tmp_path: Path) -> None:
    policy = (
        POLICY
        + """
  - id: read-app-groups
    effect: allow
    subjects: {listeners: [harness]}
    resources: [{type: group, prefix: app-}]
    operations: [read]
"""
    )
    async with harness(tmp_path, policy) as h:
        single_leader_layout(h)
        h.client.send(list_groups_request.ListGroupsRequest(states_filter=()))
        sent = await h.sends(len(BROKERS))
        for each in sent:
            each.reply(
                list_groups_response.ListGroupsResponse(
                    throttle_time=NO_TIME,
                    error_code=ErrorCode.none,
                    groups=tuple(
                        list_groups_response.ListedGroup(
                            group_id=f"{name}-{each.node}",
                            protocol_type="consumer",
                            group_state="Stable",
                        )
                        for name in ("app", "other")
                    ),
                )
            )
        (answer,) = await h.answers(1)
        assert sorted(g.group_id for g in answer.body.groups) == ["app-1", "app-2"]


async def test_without_a_policy_nothing_is_refused(tmp_path: Path) -> None:
    async with Harness() as h:
        single_leader_layout(h)
        h.client.send(produce("payments"))
        (sent,) = await h.sends(1)
        sent.reply(produced(sent.body))
        (answer,) = await h.answers(1)
        assert produce_items(answer.body) == {"payments/0": ErrorCode.none}


SAFEGUARDED = """
rules:
  - id: apps
    effect: allow
    subjects: {listeners: [harness]}
    resources: [{type: topic, prefix: app-}, {type: topic, prefix: payments}]
    operations: [write, create]
safeguards:
  - id: app-bounds
    topics: [{prefix: app-}]
    create_topics: {max_partitions: 4}
  - id: payments-durable
    topics: [{prefix: payments}]
    produce: {acks: all}
"""


async def test_a_create_beyond_a_safeguard_is_refused_alone_with_policy_violation(
    tmp_path: Path,
) -> None:
    request = create_topics("app-small", "app-huge")
    (small, huge) = request.topics
    request = dataclasses.replace(
        request,
        topics=(small, dataclasses.replace(huge, num_partitions=1000)),
        validate_only=True,
    )
    before = counter(
        "gateway_policy_safeguard_violations_total", api="CreateTopics", rule="app-bounds"
    )
    async with harness(tmp_path, SAFEGUARDED) as h:
        single_leader_layout(h)
        h.client.send(request)
        (sent,) = await h.sends(1)
        assert [t.name for t in sent.body.topics] == ["app-small"]
        sent.reply(created(sent.body))
        (answer,) = await h.answers(1)
    assert create_topics_items(answer.body) == {
        "app-small": ErrorCode.none,
        "app-huge": ErrorCode.policy_violation,
    }
    (refused,) = [t for t in answer.body.topics if t.name == "app-huge"]
    assert refused.error_message.startswith("rule app-bounds (policy.yaml:")
    assert "1000" in refused.error_message
    assert (
        counter("gateway_policy_safeguard_violations_total", api="CreateTopics", rule="app-bounds")
        == before + 1
    )


async def test_a_produce_to_a_protected_topic_without_acks_all_is_refused(
    tmp_path: Path,
) -> None:
    async with harness(tmp_path, SAFEGUARDED) as h:
        h.pool.set_layout(BROKERS, {"payments": {0: 1}})
        h.client.send(produce("payments", acks=1))
        (answer,) = await h.answers(1)
        assert produce_items(answer.body) == {"payments/0": ErrorCode.policy_violation}
    assert h.pool.sent == []


async def test_a_policy_stage_that_fails_refuses_the_request_with_a_retriable_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the authorization table is broken")

    monkeypatch.setattr(authorize, "required_actions", broken)
    before = counter("gateway_pipeline_stage_failures_total", stage="policy", phase="request")
    async with harness(tmp_path) as h:
        single_leader_layout(h)
        h.client.send(produce_to("orders"))
        (answer,) = await h.answers(1)
        assert produce_items(answer.body) == {"orders/0": ErrorCode.request_timed_out}
        assert h.is_open
    assert h.pool.sent == []
    assert (
        counter("gateway_pipeline_stage_failures_total", stage="policy", phase="request")
        == before + 1
    )


async def test_a_stage_failing_on_every_request_logs_once_per_outage_not_per_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the authorization table is broken")

    monkeypatch.setattr(authorize, "required_actions", broken)
    monkeypatch.setattr(pipeline, "_last_logged", {})
    before = counter("gateway_pipeline_stage_failures_total", stage="policy", phase="request")
    async with harness(tmp_path) as h:
        single_leader_layout(h)
        for _ in range(5):
            h.client.send(produce_to("orders"))
        answers = await h.answers(5)
        assert all(
            produce_items(a.body) == {"orders/0": ErrorCode.request_timed_out} for a in answers
        )
    reports = [r for r in caplog.records if "pipeline stage policy" in r.getMessage()]
    # One report with its stack trace; the other four are counted, not logged.
    assert len(reports) == 1
    assert reports[0].exc_info is not None
    assert (
        counter("gateway_pipeline_stage_failures_total", stage="policy", phase="request")
        == before + 5
    )


async def test_an_answer_the_policy_stage_cannot_filter_is_not_delivered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("cannot filter")

    monkeypatch.setitem(authorize._SHOWN, METADATA, broken)
    async with harness(tmp_path) as h:
        single_leader_layout(h)
        h.client.send(metadata("orders"))
        (sent,) = await h.sends(1)
        sent.reply(described(sent.body))
        (answer,) = await h.answers(1)
    # Not the upstream's answer: every topic refused with a retriable error.
    assert metadata_items(answer.body) == {"orders": ErrorCode.leader_not_available}


async def test_a_call_names_its_resources_as_stages_know_them(tmp_path: Path) -> None:
    from gateway.pipeline import Call
    from gateway.protocol.codec import decode_request
    from gateway.protocol.items import Resource
    from tests.unit.harness import request_frame

    async with harness(tmp_path) as h:
        single_leader_layout(h)
        frame = request_frame(produce_to("orders", "payments", transactional_id="t1"), 1)
        call = Call(h.connection.session, decode_request(frame[4:]))
        assert call.resources == (
            Resource("transactional_id", "t1"),
            Resource("topic", "orders"),
            Resource("topic", "payments"),
        )


async def test_each_item_decision_is_kept_for_later_stages(tmp_path: Path) -> None:
    from gateway.pipeline import Call, ItemDecision
    from gateway.protocol.codec import decode_request
    from gateway.protocol.items import Resource
    from tests.unit.harness import request_frame

    async with harness(tmp_path) as h:
        single_leader_layout(h)
        stage = authorize.PolicyStage(h.connection.session.services.policies)
        frame = request_frame(produce_to("orders", "secret-x"), 1)
        call = Call(h.connection.session, decode_request(frame[4:]))
        await stage.on_request(call)
    version = h.connection.session.services.policies.version
    assert call.decisions == [
        ItemDecision("policy", Resource("topic", "orders"), True, "write-orders", version),
        ItemDecision(
            "policy",
            Resource("topic", "secret-x"),
            False,
            "no-secrets",
            version,
            ErrorCode.topic_authorization_failed,
        ),
    ]


async def test_a_topic_id_the_layout_does_not_know_yet_is_looked_up_before_deciding(
    tmp_path: Path,
) -> None:
    import asyncio

    from kio.schema.fetch.v13 import request as fetch13

    from tests.unit.harness import eventually, topic_id

    policy = (
        POLICY
        + """
  - id: read-new
    effect: allow
    subjects: {listeners: [harness]}
    resources: [{type: topic, literal: brand-new}]
    operations: [read]
"""
    )
    request = fetch13.FetchRequest(
        max_wait=datetime.timedelta(milliseconds=500),
        min_bytes=1,
        topics=(
            fetch13.FetchTopic(
                topic_id=topic_id("brand-new"),
                partitions=(
                    fetch13.FetchPartition(
                        partition=0, fetch_offset=0, partition_max_bytes=1 << 20
                    ),
                ),
            ),
        ),
        forgotten_topics_data=(),
    )
    async with harness(tmp_path, policy) as h:
        single_leader_layout(h)  # without brand-new: created after the last refresh
        h.pool.refresh_gate = asyncio.Event()
        h.client.send(request)
        await eventually(lambda: h.pool.refreshes == 1, "a refresh for the unknown id")
        h.pool.set_layout(BROKERS, {"brand-new": {0: 1}})
        h.pool.refresh_gate.set()
        (sent,) = await h.sends(1)
        assert [t.topic_id for t in sent.body.topics] == [topic_id("brand-new")]
        sent.fail(TimeoutError("the test ends here"))
        await h.answers(1)
