"""Policy enforcement as real clients meet it: each identity reads, writes, lists and
joins only what a rule grants, every refusal is the client's own Kafka error, creates
stay within the safeguards' bounds, and a policy reloaded under load reaches open
connections without dropping anything.

Three gateways in front of the primary cluster, each with its own policy directory:

* one per module (:func:`policy_gateway`, policy from :func:`policy_files`): an
  analyst who may read one topic with groups named ``analysts...``, a producer who may
  write ``orders-...`` topics and use transactional ids ``granted-...``, and the
  anonymous (PLAINTEXT) listener, which may read and write ``anon-...`` topics;
* one per module (:func:`creator`): a principal who may create ``bounded-...`` topics
  within a safeguard's bounds;
* one per test (:func:`reload_gateway`), whose policy the test rewrites.

Every topic a test needs is created directly on the cluster with the upstream account
(no test identity may create topics), and what reached the cluster is read back from
it directly, never through the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import os
import struct
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kio.schema.errors import ErrorCode

from gateway import dev
from gateway.errors import PolicyError
from gateway.identity.passwords import hash_password
from gateway.policy.loader import load_policy_dir
from gateway.protocol import codec
from gateway.protocol.versions import SASL_AUTHENTICATE, SASL_HANDSHAKE
from tests.integration.clients import (
    JAVA_PRODUCER,
    ClientError,
    Endpoint,
    Record,
    aconsume,
    aconsume_group,
    acreate_topic,
    aproduce,
    arun_java_tool,
    committed_offsets,
    librdkafka_config,
    list_topics,
    unique_topic,
    watermarks,
)
from tests.integration.clients.probes import plain_login_frames, record_batch
from tests.integration.conftest import GatewayUnderTest, SessionLog, admin_get, running_gateway

pytestmark = pytest.mark.integration

TOPIC_COMMAND = "org.apache.kafka.tools.TopicCommand"
CONSUMER_GROUP_COMMAND = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"

ANALYST = "pe-analyst"
PRODUCER = "pe-producer"
PASSWORD = "pe-password-5d1c9a"  # noqa: S105 - a gateway test user, not a secret
ANALYST_GROUP_PREFIX = "analysts"

# Kafka's error codes as confluent-kafka's KafkaError and kio name them.
TOPIC_AUTHORIZATION_FAILED = ErrorCode.topic_authorization_failed
GROUP_AUTHORIZATION_FAILED = ErrorCode.group_authorization_failed
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = ErrorCode.transactional_id_authorization_failed


def policy_files(directory: Path, analyst_topic: str) -> None:
    """The module's policy: one file per role, as an operator would keep them."""
    (directory / "analysts.yaml").write_text(
        f"""\
rules:
  - id: it-analysts-read
    effect: allow
    subjects: {{groups: [analysts]}}
    resources: [{{type: topic, literal: {analyst_topic}}}]
    operations: [read]
  - id: it-analysts-groups
    effect: allow
    subjects: {{groups: [analysts]}}
    resources: [{{type: group, prefix: {ANALYST_GROUP_PREFIX}}}]
    operations: [read]
  - id: it-analysts-never-write
    effect: deny
    subjects: {{groups: [analysts]}}
    resources: [{{type: topic, literal: "*"}}]
    operations: [write, delete, alter, alter_configs]
""",
        encoding="utf-8",
    )
    (directory / "producers.yaml").write_text(
        f"""\
rules:
  - id: it-producer-orders
    effect: allow
    subjects: {{principals: [{PRODUCER}]}}
    resources: [{{type: topic, prefix: orders-}}]
    operations: [write]
  - id: it-producer-transactions
    effect: allow
    subjects: {{principals: [{PRODUCER}]}}
    resources: [{{type: transactional_id, prefix: granted-}}]
    operations: [write]
""",
        encoding="utf-8",
    )
    (directory / "anonymous.yaml").write_text(
        """\
rules:
  - id: it-anonymous-anon-topics
    effect: allow
    subjects: {listeners: [plain]}
    resources: [{type: topic, prefix: anon-}, {type: group, prefix: anon-}]
    operations: [read, write]
""",
        encoding="utf-8",
    )


@dataclass(frozen=True)
class PolicyGateway:
    running: GatewayUnderTest
    analyst: Endpoint
    producer: Endpoint
    anonymous: Endpoint
    analyst_topic: str  # holds ANALYST_RECORDS, written directly
    direct: Endpoint


ANALYST_RECORDS = [Record(0, -1, f"k{i}".encode(), f"reading {i}".encode()) for i in range(5)]


@pytest.fixture(scope="module")
async def policy_gateway(
    primary: dev.ClusterInfo,
    direct: Endpoint,
    session_log: SessionLog,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[PolicyGateway]:
    analyst_topic = unique_topic("analytics")
    await acreate_topic(direct, analyst_topic, 1)
    await aproduce("confluent", direct, analyst_topic, ANALYST_RECORDS)
    policy_dir = tmp_path_factory.mktemp("policies")
    policy_files(policy_dir, analyst_topic)
    password_hash = hash_password(PASSWORD, 20_000)
    users = [
        {"name": ANALYST, "password_hash": password_hash, "groups": ["analysts"]},
        {"name": PRODUCER, "password_hash": password_hash, "groups": ["apps"]},
    ]
    async with running_gateway(primary, users=users, policy_dir=policy_dir) as running:
        yield PolicyGateway(
            running=running,
            analyst=dataclasses.replace(running.sasl, username=ANALYST, password=PASSWORD),
            producer=dataclasses.replace(running.sasl, username=PRODUCER, password=PASSWORD),
            anonymous=running.plain,
            analyst_topic=analyst_topic,
            direct=direct,
        )


# --- raw requests: one request carrying exactly what the test names ---------------


def _frame(body: Any, correlation_id: int) -> bytes:
    payload = codec.encode_request_header(
        body.__api_key__, body.__version__, correlation_id, "policy-it"
    ) + codec.encode_body(body)
    return struct.pack(">i", len(payload)) + payload


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    size = struct.unpack(">i", await asyncio.wait_for(reader.readexactly(4), 30))[0]
    return await asyncio.wait_for(reader.readexactly(size), 30)


def _decode(api_key: int, version: int, frame: bytes) -> Any:
    return codec.decode_response(
        api_key, version, frame, codec.response_header_size(api_key, version, frame)
    )


class RawSession:
    """One client connection speaking raw requests: logged in as the endpoint's user
    (SASL/PLAIN) when it has one, then one request at a time. A connection the gateway
    closes raises IncompleteReadError."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._correlation_id = 100

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, ep: Endpoint) -> AsyncIterator[RawSession]:
        host, port = ep.bootstrap.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            if ep.uses_sasl:
                writer.write(plain_login_frames(ep.username or "", ep.password or ""))
                for api_key, version in ((SASL_HANDSHAKE, 1), (SASL_AUTHENTICATE, 2)):
                    answer = _decode(api_key, version, await _read_frame(reader))
                    assert answer.error_code == ErrorCode.none, f"login refused: {answer}"
            yield cls(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def request(self, body: Any) -> Any:
        self._correlation_id += 1
        self._writer.write(_frame(body, self._correlation_id))
        await self._writer.drain()
        frame = await _read_frame(self._reader)
        assert codec.read_correlation_id(frame) == self._correlation_id
        return _decode(body.__api_key__, body.__version__, frame)


async def exchange(ep: Endpoint, body: Any) -> Any:
    """Send ``body`` as ``ep``'s user on a new connection; the decoded answer."""
    async with RawSession.open(ep) as session:
        return await session.request(body)


def produce_request(batches: dict[str, bytes]) -> Any:
    """Produce v9 (acks all) of one batch to partition 0 of each topic, in one request."""
    cls = codec.request_schema(0, 9)
    module = codec.entity_module(cls)
    return codec.build(
        cls,
        transactional_id=None,
        acks=-1,
        timeout=datetime.timedelta(seconds=30),
        topic_data=tuple(
            codec.build(
                module.TopicProduceData,
                name=topic,
                partition_data=(module.PartitionProduceData(index=0, records=batch),),
            )
            for topic, batch in batches.items()
        ),
    )


def metadata_request(*topics: str) -> Any:
    """Metadata v12 for ``topics``, asking the broker to create missing ones."""
    cls = codec.request_schema(3, 12)
    module = codec.entity_module(cls)
    return codec.build(
        cls,
        topics=tuple(
            codec.build(module.MetadataRequestTopic, topic_id=uuid.UUID(int=0), name=name)
            for name in topics
        ),
        allow_auto_topic_creation=True,
        include_topic_authorized_operations=False,
    )


# --- client helpers -------------------------------------------------------------------


def confluent_produce_error(ep: Endpoint, topic: str) -> int | None:
    """Produce one record with confluent-kafka; the delivery report's error code (None:
    delivered)."""
    from confluent_kafka import KafkaError, Message, Producer

    reports: list[KafkaError | None] = []

    def delivered(err: KafkaError | None, _: Message) -> None:
        reports.append(err)

    producer = Producer({**librdkafka_config(ep), "acks": "all", "message.timeout.ms": 30000})
    try:
        producer.produce(topic, key=b"k", value=b"not allowed", on_delivery=delivered)
        producer.flush(60)
    finally:
        producer.purge()
        producer.flush(0)
    assert len(reports) == 1, "no delivery report"
    err = reports[0]
    return None if err is None else int(err.code())


def confluent_join_error(ep: Endpoint, topic: str, group: str, timeout: float = 60) -> int | None:
    """Subscribe to ``topic`` in ``group`` with confluent-kafka; the first error code the
    consumer reports (None if it got an assignment without one)."""
    from confluent_kafka import Consumer, KafkaError, KafkaException

    consumer = Consumer(
        {
            **librdkafka_config(ep),
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    deadline = time.monotonic() + timeout
    try:
        consumer.subscribe([topic])
        while time.monotonic() < deadline:
            try:
                msg = consumer.poll(0.5)
            except KafkaException as exc:
                return int(exc.args[0].code())
            if msg is not None and msg.error() is not None:
                err: KafkaError = msg.error()
                return int(err.code())
            if consumer.assignment():
                return None
        raise AssertionError(f"neither an error nor an assignment within {timeout}s")
    finally:
        consumer.close()


def confluent_init_transactions_error(ep: Endpoint, transactional_id: str) -> int | None:
    """``init_transactions`` with confluent-kafka; the error code it raises (None: it
    succeeded)."""
    from confluent_kafka import KafkaException, Producer

    producer = Producer({**librdkafka_config(ep), "transactional.id": transactional_id})
    try:
        producer.init_transactions(60)
    except KafkaException as exc:
        return int(exc.args[0].code())
    return None


def init_producer_id_request(transactional_id: str) -> Any:
    return codec.build(
        codec.request_schema(22, 4),
        transactional_id=transactional_id,
        transaction_timeout=datetime.timedelta(seconds=60),
        producer_id=-1,
        producer_epoch=-1,
    )


async def upstream_topics(direct: Endpoint) -> set[str]:
    return await asyncio.to_thread(list_topics, "confluent", direct)


async def listed_through(ep: Endpoint, topic: str, tries: int = 150) -> None:
    """Wait until ``ep`` lists ``topic``: with several brokers, the one the gateway asks
    may learn of a new topic a moment after the one that created it."""
    for _ in range(tries):
        if topic in await asyncio.to_thread(list_topics, "confluent", ep):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{topic} never listed through {ep.bootstrap}")


def upstream_partitions(direct: Endpoint, topic: str, tries: int = 100) -> int:
    """How many partitions ``topic`` has on the cluster, once every one has a leader (a
    topic just created may be listed before its leaders are)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(librdkafka_config(direct))
    for _ in range(tries):
        found = admin.list_topics(topic, timeout=10).topics[topic]
        if found.error is None and all(p.leader >= 0 for p in found.partitions.values()):
            return len(found.partitions)
        time.sleep(0.1)
    raise AssertionError(f"{topic} has no leader for every partition on the cluster")


# --- the analyst ----------------------------------------------------------------------


async def test_analyst_consumes_the_topic_it_may_read_in_its_own_group(
    policy_gateway: PolicyGateway,
) -> None:
    gw = policy_gateway
    group = f"{ANALYST_GROUP_PREFIX}-{uuid.uuid4().hex[:8]}"

    consumed = await aconsume_group(
        "confluent", gw.analyst, gw.analyst_topic, group, len(ANALYST_RECORDS)
    )

    assert [r.value for r in consumed] == [r.value for r in ANALYST_RECORDS]


async def test_analyst_produce_fails_with_topic_authorization_failed_in_confluent_kafka(
    policy_gateway: PolicyGateway,
) -> None:
    gw = policy_gateway
    before = await asyncio.to_thread(watermarks, gw.direct, gw.analyst_topic, 1)

    code = await asyncio.to_thread(confluent_produce_error, gw.analyst, gw.analyst_topic)

    assert code == TOPIC_AUTHORIZATION_FAILED.value
    assert await asyncio.to_thread(watermarks, gw.direct, gw.analyst_topic, 1) == before


async def test_analyst_produce_fails_with_topic_authorization_failed_in_kcat(
    policy_gateway: PolicyGateway,
) -> None:
    gw = policy_gateway
    before = await asyncio.to_thread(watermarks, gw.direct, gw.analyst_topic, 1)

    with pytest.raises(ClientError) as refused:
        await aproduce("kcat", gw.analyst, gw.analyst_topic, [Record(0, -1, b"k", b"no")])

    # kcat prints librdkafka's delivery report and exits non-zero.
    assert "Topic authorization failed" in str(refused.value)
    assert await asyncio.to_thread(watermarks, gw.direct, gw.analyst_topic, 1) == before


async def java_console_produce(ep: Endpoint, topic: str, *producer_properties: str) -> str:
    """One record with Kafka's console producer (``--sync``: a failed send ends the
    tool with the exception the send raised); its output."""
    properties = [a for p in producer_properties for a in ("--producer-property", p)]
    return await arun_java_tool(
        ep,
        JAVA_PRODUCER,
        "--bootstrap-server", ep.bootstrap, "--topic", topic, "--sync", *properties,
        config_option="--producer.config",
        stdin="not allowed\n",
    )  # fmt: skip


async def test_analyst_produce_fails_with_topic_authorization_failed_in_the_java_producer(
    policy_gateway: PolicyGateway,
) -> None:
    gw = policy_gateway
    before = await asyncio.to_thread(watermarks, gw.direct, gw.analyst_topic, 1)

    # Not idempotent: the default (idempotent) producer is refused one step earlier,
    # see the next test.
    with pytest.raises(ClientError) as refused:
        await java_console_produce(gw.analyst, gw.analyst_topic, "enable.idempotence=false")

    assert (
        f"TopicAuthorizationException: Not authorized to access topics: [{gw.analyst_topic}]"
        in (str(refused.value))
    )
    assert await asyncio.to_thread(watermarks, gw.direct, gw.analyst_topic, 1) == before


async def test_analyst_idempotent_java_producer_is_refused_its_producer_id_as_by_kafka(
    policy_gateway: PolicyGateway,
) -> None:
    """Kafka grants an idempotent producer id to who may WRITE some topic (KIP-679) or
    holds IDEMPOTENT_WRITE on the cluster; the analyst has neither, so Java's default
    producer fails InitProducerId with CLUSTER_AUTHORIZATION_FAILED before any Produce,
    exactly as against a broker with ACLs."""
    gw = policy_gateway
    before = await asyncio.to_thread(watermarks, gw.direct, gw.analyst_topic, 1)

    with pytest.raises(ClientError) as refused:
        await java_console_produce(gw.analyst, gw.analyst_topic)

    assert "ClusterAuthorizationException" in str(refused.value)
    assert await asyncio.to_thread(watermarks, gw.direct, gw.analyst_topic, 1) == before


async def test_analyst_lists_only_its_topic(policy_gateway: PolicyGateway) -> None:
    gw = policy_gateway
    hidden = unique_topic("hidden")
    await acreate_topic(gw.direct, hidden, 1)
    assert {gw.analyst_topic, hidden} <= await upstream_topics(gw.direct)

    listed_by_confluent = await asyncio.to_thread(list_topics, "confluent", gw.analyst)
    listed_by_java = await arun_java_tool(
        gw.analyst, TOPIC_COMMAND, "--bootstrap-server", gw.analyst.bootstrap, "--list"
    )

    assert listed_by_confluent == {gw.analyst_topic}
    assert set(listed_by_java.split()) == {gw.analyst_topic}


async def test_forbidden_and_missing_topics_get_the_same_metadata_answer_and_none_is_created(
    policy_gateway: PolicyGateway,
) -> None:
    gw = policy_gateway
    forbidden, missing = unique_topic("secret"), unique_topic("missing")
    await acreate_topic(gw.direct, forbidden, 1)

    answer = await exchange(gw.analyst, metadata_request(forbidden, missing))

    by_name = {t.name: t for t in answer.topics}
    assert set(by_name) == {forbidden, missing}
    assert by_name[forbidden].error_code == TOPIC_AUTHORIZATION_FAILED
    # Everything but the name is the same: nothing tells which of the two exists.
    assert dataclasses.replace(by_name[forbidden], name=missing) == by_name[missing]
    assert missing not in await upstream_topics(gw.direct)


# --- one Produce, two topics ----------------------------------------------------------


async def test_one_produce_writes_the_allowed_topic_and_refuses_the_other(
    policy_gateway: PolicyGateway,
) -> None:
    gw = policy_gateway
    suffix = uuid.uuid4().hex[:12]
    orders, payments = f"orders-{suffix}", f"payments-{suffix}"
    await acreate_topic(gw.direct, orders, 1)
    await acreate_topic(gw.direct, payments, 1)
    await listed_through(gw.producer, orders)
    values = [b"order-1", b"order-2"]

    answer = await exchange(
        gw.producer,
        produce_request({orders: record_batch(values), payments: record_batch([b"payment-1"])}),
    )

    errors = {t.name: [p.error_code for p in t.partition_responses] for t in answer.responses}
    assert errors == {orders: [ErrorCode.none], payments: [TOPIC_AUTHORIZATION_FAILED]}
    stored = await aconsume("kafka-python", gw.direct, orders, 1, len(values))
    assert [r.value for r in stored] == values
    assert await asyncio.to_thread(watermarks, gw.direct, payments, 1) == {0: (0, 0)}


# --- consumer groups ------------------------------------------------------------------


async def test_consumer_without_read_on_its_group_cannot_join(
    policy_gateway: PolicyGateway,
) -> None:
    gw = policy_gateway

    code = await asyncio.to_thread(
        confluent_join_error, gw.analyst, gw.analyst_topic, unique_topic("finance")
    )

    assert code == GROUP_AUTHORIZATION_FAILED.value


async def _forbidden_group_with_offsets(gw: PolicyGateway) -> tuple[str, dict[int, int]]:
    """A group that committed offsets on the analyst's topic, upstream, directly."""
    group = unique_topic("payroll")
    await aconsume_group("confluent", gw.direct, gw.analyst_topic, group, len(ANALYST_RECORDS))
    offsets = await asyncio.to_thread(committed_offsets, gw.direct, group, gw.analyst_topic, 1)
    assert offsets == {0: len(ANALYST_RECORDS)}
    return group, offsets


async def test_kafka_consumer_groups_cannot_describe_a_forbidden_group(
    policy_gateway: PolicyGateway,
) -> None:
    gw = policy_gateway
    group, _ = await _forbidden_group_with_offsets(gw)

    output = await arun_java_tool(
        gw.analyst,
        CONSUMER_GROUP_COMMAND,
        "--bootstrap-server", gw.analyst.bootstrap,
        "--describe", "--group", group,
    )  # fmt: skip

    # The tool reports a failed command on its output (and exits 0), as against Kafka.
    assert "Error: Executing consumer group command failed" in output
    assert "GroupAuthorizationException" in output
    assert gw.analyst_topic not in output  # no partition, offset or lag row


async def test_kafka_consumer_groups_cannot_reset_offsets_of_a_forbidden_group(
    policy_gateway: PolicyGateway,
) -> None:
    gw = policy_gateway
    group, offsets = await _forbidden_group_with_offsets(gw)

    output = await arun_java_tool(
        gw.analyst,
        CONSUMER_GROUP_COMMAND,
        "--bootstrap-server", gw.analyst.bootstrap,
        "--reset-offsets", "--group", group, "--topic", gw.analyst_topic,
        "--to-earliest", "--execute",
    )  # fmt: skip

    assert "Error: Executing consumer group command failed" in output
    assert "GroupAuthorizationException" in output
    assert (
        await asyncio.to_thread(committed_offsets, gw.direct, group, gw.analyst_topic, 1) == offsets
    )


# --- transactions ---------------------------------------------------------------------


async def test_transactional_producer_without_write_on_its_id_fails_init_transactions(
    policy_gateway: PolicyGateway,
) -> None:
    gw = policy_gateway
    forbidden = unique_topic("forbidden")

    # librdkafka asks for the transaction coordinator first (DESCRIBE on the id), so
    # the id's InitProducerId itself is also sent raw.
    refused = await asyncio.to_thread(confluent_init_transactions_error, gw.producer, forbidden)
    raw = await exchange(gw.producer, init_producer_id_request(forbidden))
    granted = await asyncio.to_thread(
        confluent_init_transactions_error, gw.producer, unique_topic("granted")
    )

    assert refused == TRANSACTIONAL_ID_AUTHORIZATION_FAILED.value
    assert raw.error_code == TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    assert granted is None


# --- the anonymous listener -----------------------------------------------------------


async def test_anonymous_listener_gets_only_what_its_listener_rule_grants(
    policy_gateway: PolicyGateway,
) -> None:
    gw = policy_gateway
    granted = unique_topic("anon")
    await acreate_topic(gw.direct, granted, 1)
    records = [Record(0, -1, b"a", b"anonymous 1"), Record(0, -1, b"b", b"anonymous 2")]

    await aproduce("confluent", gw.anonymous, granted, records)
    consumed = await aconsume("kafka-python", gw.anonymous, granted, 1, len(records))
    refused = await asyncio.to_thread(confluent_produce_error, gw.anonymous, gw.analyst_topic)
    listed = await asyncio.to_thread(list_topics, "confluent", gw.anonymous)
    listed_by_analyst = await asyncio.to_thread(list_topics, "confluent", gw.analyst)

    assert [r.value for r in consumed] == [r.value for r in records]
    assert refused == TOPIC_AUTHORIZATION_FAILED.value
    assert granted in listed
    assert all(name.startswith("anon-") for name in listed), listed
    # The listener rule is about the listener, not about everyone.
    assert granted not in listed_by_analyst


# --- hot reload under load ------------------------------------------------------------

LOADER = "pe-loader"
LOADER_FILE = "loader.yaml"


def loader_policy(*topics: str, operation: str = "write") -> str:
    """The loader may ``operation`` on exactly ``topics``."""
    resources = ", ".join(f"{{type: topic, literal: {topic}}}" for topic in topics)
    return f"""\
rules:
  - id: it-loader-writes
    effect: allow
    subjects: {{principals: [{LOADER}]}}
    resources: [{resources}]
    operations: [{operation}]
"""


def replace_policy_file(directory: Path, text: str) -> str | None:
    """Replace the loader's file in one step, as a deployment tool would; the version
    the directory's policy now has (None when it is invalid)."""
    tmp = directory / f".{LOADER_FILE}.tmp"  # not *.yaml: the watcher never reads it
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, directory / LOADER_FILE)
    try:
        return load_policy_dir(directory).version
    except PolicyError:
        return None


def policy_status(gw: GatewayUnderTest) -> dict[str, Any]:
    status, _, body = admin_get(f"{gw.admin_url}/policy", gw.admin_token)
    assert status == 200, body
    answer: dict[str, Any] = json.loads(body)
    return answer


def request_reload(gw: GatewayUnderTest) -> tuple[int, dict[str, Any]]:
    """POST /policy/reload: the status and the answer."""
    request = urllib.request.Request(  # noqa: S310 - a test URL
        f"{gw.admin_url}/policy/reload", method="POST", data=b""
    )
    request.add_header("Authorization", f"Bearer {gw.admin_token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def wait_for_version(gw: GatewayUnderTest, version: str | None, timeout: float = 30) -> None:
    """Wait until the admin API says ``version`` is in force (the watcher found it)."""
    assert version is not None
    deadline = time.monotonic() + timeout
    while (await asyncio.to_thread(policy_status, gw))["version"] != version:
        assert time.monotonic() < deadline, f"policy {version} never took effect"
        await asyncio.sleep(0.1)


class LoadProducer:
    """A confluent-kafka producer writing numbered records to ``topic`` from its own
    thread until stopped, keeping every acknowledged value and every error it saw (a
    dropped connection shows up as a transport error)."""

    def __init__(self, ep: Endpoint, topic: str) -> None:
        self._ep, self._topic = ep, topic
        self._lock = threading.Lock()
        self._acked: list[bytes] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from confluent_kafka import KafkaError, Message, Producer

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                self.errors.append(f"delivery: {err}")
                return
            with self._lock:
                self._acked.append(msg.value())

        def on_error(err: KafkaError) -> None:
            self.errors.append(f"client: {err}")

        producer = Producer(
            {
                **librdkafka_config(self._ep),
                "acks": "all",
                "linger.ms": 0,
                "message.timeout.ms": 60000,
                "error_cb": on_error,
            }
        )
        sequence = 0
        try:
            while not self._stop.is_set():
                value = b"load-%07d" % sequence
                producer.produce(self._topic, value=value, on_delivery=delivered)
                sequence += 1
                producer.poll(0.005)
        finally:
            if producer.flush(60):
                self.errors.append("records still unacknowledged after 60 s")

    def start(self) -> None:
        self._thread.start()

    def acked(self) -> list[bytes]:
        with self._lock:
            return list(self._acked)

    async def wait_for_more(self, count: int, timeout: float = 60) -> None:
        """Wait until ``count`` more records than now are acknowledged."""
        target = len(self.acked()) + count
        deadline = time.monotonic() + timeout
        while len(self.acked()) < target:
            assert not self.errors, self.errors
            assert time.monotonic() < deadline, f"fewer than {count} records acknowledged"
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 90)


@dataclass(frozen=True)
class ReloadGateway:
    running: GatewayUnderTest
    policy_dir: Path
    loader: Endpoint
    steady: str  # the loader may always write it
    toggled: str  # the loader may write it only while a test's policy says so


@pytest.fixture
async def reload_gateway(
    primary: dev.ClusterInfo, direct: Endpoint, session_log: SessionLog, tmp_path: Path
) -> AsyncIterator[ReloadGateway]:
    steady, toggled = unique_topic("steady"), unique_topic("toggled")
    await acreate_topic(direct, steady, 1)
    await acreate_topic(direct, toggled, 1)
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    replace_policy_file(policy_dir, loader_policy(steady))
    users = [{"name": LOADER, "password_hash": hash_password(PASSWORD, 20_000)}]
    async with running_gateway(primary, users=users, policy_dir=policy_dir) as running:
        yield ReloadGateway(
            running=running,
            policy_dir=policy_dir,
            loader=dataclasses.replace(running.sasl, username=LOADER, password=PASSWORD),
            steady=steady,
            toggled=toggled,
        )


async def produce_error(session: RawSession, topic: str, value: bytes) -> ErrorCode:
    """One Produce of ``value`` to partition 0 of ``topic`` on ``session``; its error."""
    answer = await session.request(produce_request({topic: record_batch([value])}))
    ((partition,),) = [t.partition_responses for t in answer.responses]
    return ErrorCode(partition.error_code)


async def assert_every_ack_stored(load: LoadProducer, direct: Endpoint, topic: str) -> None:
    acked = load.acked()
    stored = await aconsume("kafka-python", direct, topic, 1, len(acked))
    assert not load.errors, load.errors
    assert set(acked) <= {r.value for r in stored}


async def test_policy_change_under_load_takes_effect_on_the_next_request_and_drops_nothing(
    reload_gateway: ReloadGateway, direct: Endpoint
) -> None:
    gw = reload_gateway
    load = LoadProducer(gw.loader, gw.steady)
    load.start()
    try:
        await load.wait_for_more(20)
        # One connection, open before and after every change: the change reaches it on
        # its next request, and it is never closed for it.
        async with RawSession.open(gw.loader) as session:
            before = await produce_error(session, gw.toggled, b"before the grant")

            granted = replace_policy_file(gw.policy_dir, loader_policy(gw.steady, gw.toggled))
            await wait_for_version(gw.running, granted)
            after_grant = await produce_error(session, gw.toggled, b"after the grant")
            await load.wait_for_more(20)

            revoked = replace_policy_file(gw.policy_dir, loader_policy(gw.steady))
            await wait_for_version(gw.running, revoked)
            after_revoke = await produce_error(session, gw.toggled, b"after the revocation")
            await load.wait_for_more(20)
    finally:
        await load.stop()

    assert (before, after_grant, after_revoke) == (
        TOPIC_AUTHORIZATION_FAILED,
        ErrorCode.none,
        TOPIC_AUTHORIZATION_FAILED,
    )
    toggled = await aconsume("kafka-python", direct, gw.toggled, 1, 1, timeout=10)
    assert [r.value for r in toggled] == [b"after the grant"]
    await assert_every_ack_stored(load, direct, gw.steady)


async def test_invalid_policy_file_is_refused_and_the_old_policy_keeps_working(
    reload_gateway: ReloadGateway, direct: Endpoint
) -> None:
    gw = reload_gateway
    in_force = (await asyncio.to_thread(policy_status, gw.running))["version"]
    load = LoadProducer(gw.loader, gw.steady)
    load.start()
    try:
        await load.wait_for_more(20)
        async with RawSession.open(gw.loader) as session:
            # Would let the loader also write the toggled topic, if it were valid.
            invalid = loader_policy(gw.steady, gw.toggled, operation="write, teleport")
            assert replace_policy_file(gw.policy_dir, invalid) is None
            status, answer = await asyncio.to_thread(request_reload, gw.running)
            refused = await produce_error(session, gw.toggled, b"under the invalid file")
            await load.wait_for_more(20)
    finally:
        await load.stop()

    assert status == 422
    assert answer["version"] == in_force
    assert answer["last_reload"]["result"] == "failure"
    assert LOADER_FILE in " ".join(answer["last_reload"]["error"])
    assert (await asyncio.to_thread(policy_status, gw.running))["version"] == in_force
    assert refused == TOPIC_AUTHORIZATION_FAILED
    await assert_every_ack_stored(load, direct, gw.steady)


# --- safeguards on topic creation -----------------------------------------------------

CREATOR = "pe-creator"
BOUND_ID = "it-bounded-topics"
BOUNDED_POLICY = f"""\
rules:
  - id: it-creator-bounded
    effect: allow
    subjects: {{principals: [{CREATOR}]}}
    resources: [{{type: topic, prefix: bounded-}}]
    operations: [create, describe]
safeguards:
  - id: {BOUND_ID}
    description: bounded topics stay small and expire
    subjects: {{principals: [{CREATOR}]}}
    topics: [{{prefix: bounded-}}]
    create_topics:
      max_partitions: 12
      min_replication_factor: 1
      max_replication_factor: 3
      configs:
        retention.ms: {{min: 3600000, max: 604800000}}
"""

# What each refused create asks for beyond the bound, as kafka-topics options, and the
# bound the refusal must name.
BEYOND_BOUNDS = {
    "1000-partitions": (("--partitions", "1000"), "max_partitions"),
    "infinite-retention": (("--partitions", "1", "--config", "retention.ms=-1"), "retention.ms"),
}


@pytest.fixture(scope="module")
async def creator(
    primary: dev.ClusterInfo, session_log: SessionLog, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Endpoint]:
    policy_dir = tmp_path_factory.mktemp("bounded-policies")
    (policy_dir / "bounded.yaml").write_text(BOUNDED_POLICY, encoding="utf-8")
    users = [{"name": CREATOR, "password_hash": hash_password(PASSWORD, 20_000)}]
    async with running_gateway(primary, users=users, policy_dir=policy_dir) as running:
        yield dataclasses.replace(running.sasl, username=CREATOR, password=PASSWORD)


async def kafka_topics_create(ep: Endpoint, topic: str, *options: str) -> str:
    return await arun_java_tool(
        ep,
        TOPIC_COMMAND,
        "--bootstrap-server", ep.bootstrap,
        "--create", "--topic", topic, "--replication-factor", "1", *options,
    )  # fmt: skip


def confluent_validate_only_create(ep: Endpoint, topic: str, options: tuple[str, ...]) -> Any:
    """CreateTopics with validate_only through confluent-kafka's admin client (Kafka's
    kafka-topics has no validate-only option); the KafkaError it fails with, or None."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    partitions = int(options[options.index("--partitions") + 1])
    config = dict(
        options[i + 1].split("=", 1) for i, option in enumerate(options) if option == "--config"
    )
    admin = AdminClient(librdkafka_config(ep))
    new = NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config)
    (future,) = admin.create_topics([new], validate_only=True, request_timeout=30).values()
    try:
        future.result(40)
    except KafkaException as exc:
        return exc.args[0]
    return None


@pytest.mark.parametrize(("beyond", "bound"), BEYOND_BOUNDS.values(), ids=BEYOND_BOUNDS.keys())
async def test_kafka_topics_create_beyond_a_bound_gets_policy_violation_naming_the_safeguard(
    creator: Endpoint, direct: Endpoint, beyond: tuple[str, ...], bound: str
) -> None:
    topic = unique_topic("bounded")

    with pytest.raises(ClientError) as refused:
        await kafka_topics_create(creator, topic, *beyond)

    assert f"PolicyViolationException: rule {BOUND_ID}" in str(refused.value)
    assert bound in str(refused.value)
    assert topic not in await upstream_topics(direct)


@pytest.mark.parametrize(("beyond", "bound"), BEYOND_BOUNDS.values(), ids=BEYOND_BOUNDS.keys())
async def test_validate_only_create_beyond_a_bound_gets_the_same_policy_violation(
    creator: Endpoint, direct: Endpoint, beyond: tuple[str, ...], bound: str
) -> None:
    topic = unique_topic("bounded")

    error = await asyncio.to_thread(confluent_validate_only_create, creator, topic, beyond)

    assert error is not None
    assert error.code() == ErrorCode.policy_violation.value
    assert error.str().startswith(f"rule {BOUND_ID}")
    assert bound in error.str()
    assert topic not in await upstream_topics(direct)


async def test_kafka_topics_create_within_the_bounds_succeeds(
    creator: Endpoint, direct: Endpoint
) -> None:
    topic = unique_topic("bounded")

    await kafka_topics_create(
        creator, topic, "--partitions", "3", "--config", "retention.ms=86400000"
    )

    assert await asyncio.to_thread(upstream_partitions, direct, topic) == 3
