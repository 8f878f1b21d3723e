"""Connection and authentication audit events, through a real ClientConnection.

The sink is the in-memory stand-in of tests/unit/test_audit_stage.py.
"""

from __future__ import annotations

import json

from kio.schema.errors import ErrorCode

from gateway.audit.recorder import Recorder
from tests.unit.harness import Harness
from tests.unit.test_audit_stage import BrokenSink, MemorySink
from tests.unit.test_client_connection import BROKERS, fetch, fetch_items, fetched
from tests.unit.test_sasl_sessions import PASSWORDS, handshake, overrides, plain, written


def sasl_audited(sink: MemorySink | BrokenSink) -> tuple[Harness, Recorder]:
    recorder = Recorder(sink)
    h = Harness(
        limits={"failed_authentication_delay_seconds": 0}, overrides=overrides(), audit=recorder
    )
    return h, recorder


async def test_a_connection_is_recorded_when_it_opens_and_when_it_closes() -> None:
    sink = MemorySink()
    recorder = Recorder(sink)
    async with Harness(audit=recorder) as h:
        h.pool.set_layout(BROKERS, {"orders": {0: 1}})
        h.client.send(fetch("orders", 0))
        (sent,) = await h.sends(1)
        sent.reply(fetched(sent.body))
        (answer,) = await h.answers(1)
    await recorder.drain()
    connection = h.connection.session.connection_id
    assert len(connection) == 32
    (opened,) = sink.of("connection_opened")
    assert opened == {
        "v": 1,
        "type": "connection_opened",
        "time": opened["time"],
        "connection": connection,
        "listener": "harness",
        "security_protocol": "PLAINTEXT",
        "peer": "192.0.2.7:50007",
        "tls": None,
    }
    (closed,) = sink.of("connection_closed")
    assert closed["connection"] == connection
    assert closed["reason"] == "client closed"
    assert closed["requests"] == 1
    assert closed["bytes_out"] == len(h.client.writer.data)
    assert closed["bytes_in"] > 0
    (request,) = sink.of("request")
    assert request["connection"] == connection
    assert request["correlation_id"] == answer.correlation_id


async def test_an_unwritable_log_does_not_refuse_a_connection_only_its_requests() -> None:
    recorder = Recorder(BrokenSink())
    async with Harness(audit=recorder) as h:
        h.pool.set_layout(BROKERS, {"orders": {0: 1}})
        h.client.send(fetch("orders", 0))
        (sent,) = await h.sends(1)
        sent.reply(fetched(sent.body))
        (answer,) = await h.answers(1)
        assert fetch_items(answer.body) != {"orders/0": ErrorCode.none}
        assert h.is_open
    await recorder.drain()
    # Opened and closed, both refused by the log: counted, not raised.
    assert recorder.failures == 2


async def test_a_plain_login_is_recorded_with_its_principal_and_no_password() -> None:
    sink = MemorySink()
    h, recorder = sasl_audited(sink)
    async with h:
        h.client.send(handshake(), plain("alice"))
        answers = await written(h, 2)
        assert answers[1].body.error_code == ErrorCode.none
    await recorder.drain()
    (event,) = sink.of("authentication")
    assert event["connection"] == h.connection.session.connection_id
    assert event["mechanism"] == "PLAIN"
    assert event["principal"] == "alice"
    assert event["result"] == "success"
    assert event["reason"] is None
    assert PASSWORDS["alice"] not in json.dumps(sink.events)


async def test_a_refused_plain_login_is_recorded_as_a_failure_and_no_password() -> None:
    sink = MemorySink()
    h, recorder = sasl_audited(sink)
    async with h:
        h.client.send(handshake(), plain("alice", "not-her-password"))
        answers = await written(h, 2)
        assert answers[1].body.error_code == ErrorCode.sasl_authentication_failed
    await recorder.drain()
    (event,) = sink.of("authentication")
    assert event["mechanism"] == "PLAIN"
    assert event["result"] == "failure"
    assert event["principal"] == "alice"  # who tried: the name, never the password
    assert event["reason"] == "bad_password"
    serialized = json.dumps(sink.events)
    assert "not-her-password" not in serialized
    assert PASSWORDS["alice"] not in serialized
    (closed,) = sink.of("connection_closed")
    assert closed["reason"] == "authentication failed"
