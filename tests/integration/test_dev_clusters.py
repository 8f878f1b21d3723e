"""The local dev clusters are real Kafka brokers that enforce SCRAM logins.

The first tests share the running clusters with the rest of the integration suite, so
they start them (idempotently) but never stop them. The three-node tests run their own
three-node primary in a run dir of their own, on ports 300 above the primary's, and
stop it at the end; they pause, kill, stop and move its nodes.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import SaslAuthenticationFailed
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

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
        listed = sorted(f"{b['host']}:{b['port']}" for b in described["brokers"])
        assert listed == sorted(node.bootstrap for node in info.nodes)


async def test_wrong_password_is_rejected(clusters: list[dev.ClusterInfo]) -> None:
    for info in clusters:
        host, port = info.nodes[0].bootstrap.rsplit(":", 1)
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
    listed = json.loads(out)["clusters"]
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
        # Each node's server.properties holds the inter-broker password too; it sits in
        # the cluster's folder for one node, in node-<id>/ for three.
        every = [root / "admin.password", root / "client.properties"]
        every += [Path(node.config_file) for node in info.nodes]
        for path in every:
            mode = stat.S_IMODE(os.stat(path).st_mode)
            assert mode == 0o600, f"{path} has mode {oct(mode)}"
        assert Path(dev.client_config_file(info)).is_file()


def test_status_reports_running_brokers(clusters: list[dev.ClusterInfo]) -> None:
    assert dev.status() == clusters


# --------------------------------------------------------------------------- three nodes

THREE_NODE_PORT_OFFSET = 300
POLL_LIMIT_S = 60.0


@pytest.fixture(scope="module")
def three_node_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    primary_env = dev.PORT_ENV["primary"]
    base = int(os.environ.get(primary_env) or dev.DEFAULT_PORTS["primary"])
    return {
        "GATEWAY_DEV_DIR": str(tmp_path_factory.mktemp("dev-three-nodes")),
        primary_env: str(base + THREE_NODE_PORT_OFFSET),
        dev.PRIMARY_BROKERS_ENV: "3",
    }


@pytest.fixture(scope="module")
def three_node_cluster(three_node_env: dict[str, str]) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for key, value in three_node_env.items():
            patch.setenv(key, value)
        try:
            dev.up(only=("primary",))
            yield
        finally:
            dev.down()


@pytest.fixture
def three(
    three_node_cluster: None, three_node_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> dev.ClusterInfo:
    """The three-node primary with every node running; dev.* calls in the test act on it."""
    for key, value in three_node_env.items():
        monkeypatch.setenv(key, value)
    (info,) = dev.up(only=("primary",))
    return info


def _confluent(info: dev.ClusterInfo, **extra: object) -> dict[str, object]:
    return {
        "bootstrap.servers": info.bootstrap_servers,
        "security.protocol": info.security_protocol,
        "sasl.mechanism": info.sasl_mechanism,
        "sasl.username": info.username,
        "sasl.password": dev.read_password(info),
        **extra,
    }


def _brokers(info: dev.ClusterInfo) -> dict[int, str]:
    """Broker id -> advertised address, as the cluster's metadata lists them now."""
    metadata = AdminClient(_confluent(info)).list_topics(timeout=10)
    return {b.id: f"{b.host}:{b.port}" for b in metadata.brokers.values()}


def _poll(what: str, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + POLL_LIMIT_S
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _produce(info: dev.ClusterInfo, topic: str, values: list[str]) -> list[str]:
    """Send with acks=all; the error text of every record that was not delivered."""
    errors: list[str] = []

    def report(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err.str())

    producer = Producer(_confluent(info, acks="all", **{"message.timeout.ms": 30_000}))
    for value in values:
        producer.produce(topic, value.encode(), on_delivery=report)
    assert producer.flush(60) == 0, "records still in flight after 60 s"
    return errors


def _read_all(info: dev.ClusterInfo, topic: str, partitions: int, count: int) -> list[str]:
    consumer = Consumer(
        _confluent(info, **{"group.id": f"reader-{uuid.uuid4().hex[:8]}"}),
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    values: list[str] = []
    deadline = time.monotonic() + POLL_LIMIT_S
    try:
        while len(values) < count and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                values.append(msg.value().decode())
    finally:
        consumer.close()
    return values


def _create_topic(info: dev.ClusterInfo, partitions: int) -> str:
    topic = f"dev-rf3-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(_confluent(info))  # kept alive until the answer is in
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=3)]
    )
    futures[topic].result(30)
    return topic


def _isr_sizes(info: dev.ClusterInfo, topic: str) -> list[int]:
    metadata = AdminClient(_confluent(info)).list_topics(topic, timeout=10)
    return [len(p.isrs) for p in metadata.topics[topic].partitions.values()]


def test_three_node_primary_has_three_live_brokers(
    three: dev.ClusterInfo, three_node_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    base = int(three_node_env[dev.PORT_ENV["primary"]])
    assert [n.node_id for n in three.nodes] == [1, 2, 3]
    assert [n.port for n in three.nodes] == [base, base + 2, base + 4]
    assert all(n.state == "running" and n.pid is not None and _alive(n.pid) for n in three.nodes)
    assert len({n.pid for n in three.nodes}) == 3
    assert _brokers(three) == {n.node_id: n.bootstrap for n in three.nodes}
    assert dev.main(["status", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["clusters"]
    (primary,) = [c for c in listed if c["name"] == "primary"]
    assert [(n["node_id"], n["state"]) for n in primary["nodes"]] == [
        (1, "running"),
        (2, "running"),
        (3, "running"),
    ]
    assert primary["bootstrap_servers"] == three.bootstrap_servers


def test_acks_all_writes_go_on_with_one_node_stopped_and_it_rejoins(
    three: dev.ClusterInfo,
) -> None:
    topic = _create_topic(three, partitions=3)
    first = [f"before-{i}" for i in range(100)]
    assert _produce(three, topic, first) == []
    stopped = dev.stop_node("primary", 3)
    assert stopped.state == "stopped" and stopped.pid is None
    assert not _alive(three.nodes[2].pid or 0)
    _poll("the stopped node to leave the metadata", lambda: 3 not in _brokers(three))
    second = [f"during-{i}" for i in range(100)]
    assert _produce(three, topic, second) == []
    assert sorted(_read_all(three, topic, 3, 200)) == sorted(first + second)
    started = dev.start_node("primary", 3)
    assert started.state == "running" and started.bootstrap == three.nodes[2].bootstrap
    _poll("node 3 back in every ISR", lambda: _isr_sizes(three, topic) == [3, 3, 3])


def test_up_restarts_a_killed_node_on_its_address(three: dev.ClusterInfo) -> None:
    old = {n.node_id: n for n in three.nodes}
    killed = dev.kill_node("primary", 2)
    assert killed.state == "stopped" and killed.pid is None
    assert not _alive(old[2].pid or 0)
    assert [n.state for n in dev.nodes("primary")] == ["running", "stopped", "running"]
    (again,) = dev.up(only=("primary",))
    now = {n.node_id: n for n in again.nodes}
    assert now[2].state == "running" and now[2].pid not in (None, old[2].pid)
    assert now[2].bootstrap == old[2].bootstrap
    assert (now[1].pid, now[3].pid) == (old[1].pid, old[3].pid)
    assert _brokers(again)[2] == old[2].bootstrap


async def test_a_paused_node_answers_nothing_until_resumed(three: dev.ClusterInfo) -> None:
    node = three.nodes[2]
    host, port = node.bootstrap.rsplit(":", 1)
    sasl = _sasl(three, dev.read_password(three))
    paused = dev.pause_node("primary", 3)
    try:
        assert paused.state == "paused" and paused.pid == node.pid
        assert Path(f"/proc/{node.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
        with pytest.raises(dev.DevError, match="paused; resume it"):
            dev.up(only=("primary",))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(create_conn(host, int(port), **sasl), 3)
    finally:
        resumed = dev.resume_node("primary", 3)
    assert resumed.state == "running" and resumed.pid == node.pid
    conn = await create_conn(host, int(port), **sasl)
    conn.close()


def test_restart_with_a_new_address_changes_the_advertised_listener(
    three: dev.ClusterInfo, three_node_env: dict[str, str]
) -> None:
    base = int(three_node_env[dev.PORT_ENV["primary"]])
    home = three.nodes[2].bootstrap
    moved = dev.restart_node("primary", 3, new_address=True)
    try:
        assert moved.node_id == 3 and moved.port == base + 8
        assert moved.pid != three.nodes[2].pid
        _poll("broker 3 listed at its new address", lambda: _brokers(three)[3] == moved.bootstrap)
        topic = _create_topic(three, partitions=3)
        assert _produce(three, topic, [f"moved-{i}" for i in range(30)]) == []
    finally:
        back = dev.restart_node("primary", 3, new_address=True)
    assert back.bootstrap == home
    _poll("broker 3 listed at home again", lambda: _brokers(three)[3] == home)


def test_asking_for_one_node_while_three_run_is_a_one_line_error(three: dev.ClusterInfo) -> None:
    with pytest.raises(dev.DevError) as raised:
        dev.up(only=("primary",), primary_brokers=1)
    message = str(raised.value)
    assert "\n" not in message
    assert "runs 3 node(s), not 1; run `python -m gateway dev down` first" in message
    assert [n.pid for n in dev.nodes("primary")] == [n.pid for n in three.nodes]
