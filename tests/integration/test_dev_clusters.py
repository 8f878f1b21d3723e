"""The local dev clusters are real Kafka brokers that enforce SCRAM logins.

These tests share the running clusters with the rest of the integration suite, so they
start them (idempotently) but never stop them.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import SaslAuthenticationFailed

from gateway import dev

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def clusters() -> list[dev.ClusterInfo]:
    return dev.up()


def _sasl(info: dev.ClusterInfo, password: str, mechanism: str | None = None) -> dict[str, str]:
    return {
        "security_protocol": info.security_protocol,
        "sasl_mechanism": mechanism or info.sasl_mechanism,
        "sasl_plain_username": info.username,
        "sasl_plain_password": password,
    }


def test_up_starts_both_clusters(clusters: list[dev.ClusterInfo]) -> None:
    assert [c.name for c in clusters] == ["primary", "secondary"]
    for info in clusters:
        assert info.pid is not None
        assert info.security_protocol == "SASL_PLAINTEXT"
        assert info.sasl_mechanism == "SCRAM-SHA-256"
        assert info.username == "gateway-admin"
    assert clusters[0].bootstrap != clusters[1].bootstrap


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_admin_login_with_password_file(
    clusters: list[dev.ClusterInfo], mechanism: str
) -> None:
    for info in clusters:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=info.bootstrap, **_sasl(info, dev.read_password(info), mechanism)
        )
        await admin.start()
        try:
            described = await admin.describe_cluster()
        finally:
            await admin.close()
        assert [b["host"] for b in described["brokers"]] == ["127.0.0.1"]
        assert f"127.0.0.1:{described['brokers'][0]['port']}" == info.bootstrap


async def test_wrong_password_is_rejected(clusters: list[dev.ClusterInfo]) -> None:
    for info in clusters:
        host, port = info.bootstrap.rsplit(":", 1)
        with pytest.raises(SaslAuthenticationFailed):
            await create_conn(host, int(port), **_sasl(info, "not-the-password"))
        # The same path with the right password succeeds: the rejection was the password.
        conn = await create_conn(host, int(port), **_sasl(info, dev.read_password(info)))
        conn.close()


async def test_produce_and_consume_on_each_cluster(clusters: list[dev.ClusterInfo]) -> None:
    for info in clusters:
        topic = f"dev-roundtrip-{uuid.uuid4().hex[:8]}"
        sasl = _sasl(info, dev.read_password(info))
        producer = AIOKafkaProducer(bootstrap_servers=info.bootstrap, **sasl)
        await producer.start()
        try:
            # auto.create.topics.enable=true, as on a stock broker.
            await producer.send_and_wait(topic, b"hello " + info.name.encode())
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=info.bootstrap, auto_offset_reset="earliest", **sasl
        )
        await consumer.start()
        try:
            record = await consumer.getone()
        finally:
            await consumer.stop()
        assert record.value == b"hello " + info.name.encode()


def test_second_up_keeps_the_same_brokers(clusters: list[dev.ClusterInfo]) -> None:
    again = dev.up()
    assert [c.pid for c in again] == [c.pid for c in clusters]
    assert again == clusters


async def test_up_from_inside_an_event_loop(clusters: list[dev.ClusterInfo]) -> None:
    assert [c.pid for c in dev.up()] == [c.pid for c in clusters]


def test_status_json_never_contains_the_password(
    clusters: list[dev.ClusterInfo], capsys: pytest.CaptureFixture[str]
) -> None:
    assert dev.main(["status", "--json"]) == 0
    out = capsys.readouterr().out
    listed = json.loads(out)
    assert [c["pid"] for c in listed] == [c.pid for c in clusters]
    assert [c["password_file"] for c in listed] == [c.password_file for c in clusters]
    for info in clusters:
        assert dev.read_password(info) not in out
    state = (Path(clusters[0].password_file).parent.parent / "state.json").read_text()
    for info in clusters:
        assert dev.read_password(info) not in state


def test_secret_files_are_private(clusters: list[dev.ClusterInfo]) -> None:
    for info in clusters:
        root = Path(info.password_file).parent
        for name in ("admin.password", "server.properties", "client.properties"):
            mode = stat.S_IMODE(os.stat(root / name).st_mode)
            assert mode == 0o600, f"{root / name} has mode {oct(mode)}"
        assert Path(dev.client_config_file(info)).is_file()


def test_status_reports_running_brokers(clusters: list[dev.ClusterInfo]) -> None:
    assert dev.status() == clusters
