"""Field masking with real clients, a real registry (Karapace) and real Kafka.

A confluent-kafka producer with Confluent's ``AvroSerializer`` writes ``customers``
records (a nested address record, a nullable e-mail, an array of phones, a card number,
an int amount) whose schema it registers in Karapace. Through the gateway an analyst's
consumer with ``AvroDeserializer`` decodes every record with the masked fields in the
configured form and everything else as written, keys byte for byte; an exempt identity
reads everything in clear; the audit log records both reads, the analyst's with the
rule, fields and schema id that masked it. The same masked topic read with each
compression codec and with committed and aborted transactions keeps the offsets, keys,
visibility and codec on the wire that a direct read shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.structs import TopicPartition as TopicPartitionA
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from prometheus_client import REGISTRY

from gateway import dev, metrics
from gateway.audit import keys, read_events
from gateway.config import parse_config
from gateway.identity.passwords import hash_password
from gateway.masking import batches, keyfile
from gateway.server.app import Gateway
from tests.integration.clients import (
    Endpoint,
    Record,
    aconsume,
    aproduce,
    librdkafka_config,
    unique_topic,
)
from tests.integration.conftest import (
    CLIENT_USER,
    client_endpoint,
    free_port,
    gateway_config_data,
)

pytestmark = pytest.mark.integration

ANALYST, EXEMPT = "it-analyst", "it-dpo"
PASSWORDS = {ANALYST: "it-analyst-password", EXEMPT: "it-dpo-password"}
PARTITIONS = 2
RECORDS = 12

SCHEMA = {
    "type": "record",
    "name": "Customer",
    "namespace": "it.masking",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "name", "type": "string"},
        {"name": "email", "type": ["null", "string"], "default": None},
        {
            "name": "address",
            "type": {
                "type": "record",
                "name": "Address",
                "fields": [
                    {"name": "street", "type": "string"},
                    {"name": "city", "type": "string"},
                ],
            },
        },
        {"name": "phones", "type": {"type": "array", "items": "string"}},
        {"name": "card_number", "type": "string"},
        {"name": "amount", "type": "int"},
    ],
}

POLICY = """
rules:
  - id: it-everyone-reads-and-writes
    effect: allow
    subjects: {{principals: [{writer}, {analyst}, {exempt}]}}
    resources: [{{type: topic, prefix: it-mask-}}, {{type: group, prefix: it-mask-}}]
    operations: [all]
  - id: it-writer-transactions
    effect: allow
    subjects: {{principals: [{writer}]}}
    resources: [{{type: transactional_id, prefix: it-mask-}}]
    operations: [all]
masking:
  - id: it-customers-pii
    topics: [{{prefix: it-mask-customers-}}]
    subjects: {{principals: [{analyst}]}}
    exempt: &it-exempt {{principals: [{exempt}]}}
    value: &it-customer-fields
      format: avro
      fields:
        - {{path: email, method: hash}}
        - {{path: card_number, method: partial, keep_last: 4}}
        - {{path: address.street, method: redact, replacement: "(street)"}}
        - {{path: "phones[]", method: redact, replacement: "(phone)"}}
  - id: it-keyed-pii
    topics: [{{prefix: it-mask-keyed-}}]
    subjects: {{principals: [{analyst}]}}
    exempt: *it-exempt
    key:
      format: avro
      fields: [{{path: email, method: hash}}]
    value: *it-customer-fields
  - id: it-events-json
    topics: [{{prefix: it-mask-json-}}]
    subjects: {{principals: [{analyst}]}}
    value:
      format: json
      fields:
        - {{path: customer.email, method: redact, replacement: "(email)"}}
        - {{path: "cards[].number", method: partial, keep_last: 4}}
    headers: [{{name: x-ssn, method: drop}}]
  - id: it-notes-text
    topics: [{{prefix: it-mask-notes-}}]
    subjects: {{principals: [{analyst}]}}
    value: {{format: text, detectors: [card, email], method: partial, keep_last: 4}}
  - id: it-stored-masked
    topics: [{{prefix: it-mask-stored-}}]
    apply_on: [produce]
    value: {{format: text, detectors: [card], method: redact, replacement: "[card]"}}
  - id: it-ledger-schemas
    topics: [{{prefix: it-mask-ledger-}}]
    require_schema: true
"""


def customer(n: int) -> dict[str, Any]:
    return {
        "id": n,
        "name": f"Customer {n}",
        "email": None if n % 3 == 0 else f"customer{n}@example.com",
        "address": {"street": f"{n} Canal Street", "city": "Amsterdam"},
        "phones": [f"+31 20 555 {n:04d}", "+31 6 0000 0000"],
        "card_number": "4111 1111 1111 1111",
        "amount": 1000 + n,
    }


def check_masked(got: dict[str, Any], sent: dict[str, Any]) -> None:
    assert got["id"] == sent["id"] and got["name"] == sent["name"]
    assert got["amount"] == sent["amount"]
    assert got["address"]["city"] == sent["address"]["city"]
    assert got["address"]["street"] == "(street)"
    assert got["phones"] == ["(phone)", "(phone)"]
    assert got["card_number"] == "**** **** **** 1111"
    if sent["email"] is None:
        assert got["email"] is None
    else:
        # Format-preserving: same length, '@' and '.' where they were.
        assert got["email"] != sent["email"] and len(got["email"]) == len(sent["email"])
        assert [c for c in got["email"] if not c.isalnum()] == [
            c for c in sent["email"] if not c.isalnum()
        ]


@contextlib.asynccontextmanager
async def masking_gateway(
    primary: dev.ClusterInfo, tmp_path: Path, registry_url: str
) -> AsyncIterator[tuple[Endpoint, Path]]:
    policy_dir = tmp_path / "policy"
    policy_dir.mkdir()
    (policy_dir / "masking.yaml").write_text(
        POLICY.format(writer=CLIENT_USER, analyst=ANALYST, exempt=EXEMPT), encoding="utf-8"
    )
    mask_key = tmp_path / "masking.key"
    keyfile.generate(mask_key)
    audit_key = tmp_path / "audit.key"
    keys.generate(audit_key)
    users = [
        {"name": name, "password_hash": hash_password(password, 20_000)}
        for name, password in PASSWORDS.items()
    ]
    data, ports = gateway_config_data(primary, users=users, policy_dir=policy_dir)
    data["masking"] = {"key_file": str(mask_key), "registry": {"url": registry_url}}
    audit_dir = tmp_path / "audit"
    data["audit"] = {"dir": str(audit_dir), "key_file": str(audit_key), "instance_id": "it-mask"}
    gateway = Gateway(parse_config(data, "integration-test", environ={}))
    await gateway.start()
    try:
        yield client_endpoint(ports["sasl"]), audit_dir
    finally:
        await gateway.stop()


def as_user(endpoint: Endpoint, name: str) -> Endpoint:
    return dataclasses.replace(endpoint, username=name, password=PASSWORDS[name])


def produce_customers(
    endpoint: Endpoint,
    registry_url: str,
    topic: str,
    values: list[dict[str, Any]],
    extra: dict[str, Any] | None = None,
) -> list[tuple[int, int]]:
    with SchemaRegistryClient({"url": registry_url}) as registry:
        return _produce_customers(registry, endpoint, topic, values, extra)


def _produce_customers(
    registry: SchemaRegistryClient,
    endpoint: Endpoint,
    topic: str,
    values: list[dict[str, Any]],
    extra: dict[str, Any] | None,
) -> list[tuple[int, int]]:
    serialize = AvroSerializer(registry, json.dumps(SCHEMA))
    producer = Producer(librdkafka_config(endpoint) | {"acks": "all"} | (extra or {}))
    delivered: list[tuple[int, int]] = []

    def done(err: Any, msg: Any) -> None:
        assert err is None, err
        delivered.append((msg.partition(), msg.offset()))

    try:
        for n, value in enumerate(values):
            producer.produce(
                topic,
                key=f"customer-{value['id']}".encode(),
                value=serialize(value, SerializationContext(topic, MessageField.VALUE)),
                partition=n % PARTITIONS,
                on_delivery=done,
            )
        assert producer.flush(60) == 0
    finally:
        producer.close()
    return delivered


def consume(
    endpoint: Endpoint,
    registry_url: str,
    topic: str,
    count: int,
    extra: dict[str, Any] | None = None,
) -> list[tuple[int, int, bytes, dict[str, Any]]]:
    """(partition, offset, key, decoded value) of every record of ``topic``, read from
    the start with Confluent's AvroDeserializer until ``count`` arrived."""
    with SchemaRegistryClient({"url": registry_url}) as registry:
        return _consume(registry, endpoint, topic, count, extra)


def _consume(
    registry: SchemaRegistryClient,
    endpoint: Endpoint,
    topic: str,
    count: int,
    extra: dict[str, Any] | None,
) -> list[tuple[int, int, bytes, dict[str, Any]]]:
    deserialize = AvroDeserializer(registry)
    got = [
        (
            msg.partition(),
            msg.offset(),
            msg.key(),
            deserialize(msg.value(), SerializationContext(topic, MessageField.VALUE)),
        )
        for msg in read_all(endpoint, topic, count, extra)
    ]
    return sorted(got, key=lambda r: (r[0], r[1]))


def read_all(
    endpoint: Endpoint, topic: str, count: int, extra: dict[str, Any] | None = None
) -> list[Any]:
    """The first ``count`` records of ``topic``'s partitions, read from the start."""
    consumer = Consumer(
        librdkafka_config(endpoint)
        | {"group.id": unique_topic("it-mask-g"), "enable.auto.commit": False}
        | (extra or {})
    )
    got: list[Any] = []
    deadline = time.monotonic() + 60
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        while len(got) < count:
            assert time.monotonic() < deadline, f"read {len(got)} of {count} records"
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append(msg)
    finally:
        consumer.close()
    return got


def fetch_events(audit_dir: Path, principal: str, topic: str) -> list[dict[str, Any]]:
    return [
        e
        for e in read_events(audit_dir)
        if e.get("api") == "Fetch"
        and e.get("principal") == principal
        and any(p["topic"] == topic and p["records"] for p in e.get("fetch") or ())
    ]


async def test_an_analyst_decodes_every_record_masked_and_an_exempt_identity_reads_clear(
    primary: dev.ClusterInfo, direct: Endpoint, tmp_path: Path, schema_registry: str
) -> None:
    topic = unique_topic("it-mask-customers-")
    sent = [customer(n) for n in range(RECORDS)]
    async with masking_gateway(primary, tmp_path, schema_registry) as (endpoint, audit_dir):
        await asyncio.to_thread(create_topic, direct, topic)
        delivered = await asyncio.to_thread(
            produce_customers, endpoint, schema_registry, topic, sent
        )
        assert len(delivered) == RECORDS
        analyst = await asyncio.to_thread(
            consume, as_user(endpoint, ANALYST), schema_registry, topic, RECORDS
        )
        exempt = await asyncio.to_thread(
            consume, as_user(endpoint, EXEMPT), schema_registry, topic, RECORDS
        )
    by_key = {f"customer-{c['id']}".encode(): c for c in sent}
    assert len(analyst) == len(exempt) == RECORDS
    # Same records at the same offsets with the same keys, byte for byte.
    assert [(p, o, k) for p, o, k, _ in analyst] == [(p, o, k) for p, o, k, _ in exempt]
    for _, _, key, value in analyst:
        check_masked(value, by_key[key])
    for _, _, key, value in exempt:
        assert value == by_key[key]
    # The hash is deterministic: the same e-mail masks to the same text every time.
    masked = [v for _, _, _, v in analyst]
    assert len({v["email"] for v in masked if v["email"]}) == sum(1 for c in sent if c["email"])

    analyst_reads = fetch_events(audit_dir, ANALYST, topic)
    exempt_reads = fetch_events(audit_dir, EXEMPT, topic)
    assert analyst_reads and exempt_reads
    assert not any(e.get("masking") for e in exempt_reads)
    evidence = [m for e in analyst_reads for m in e.get("masking") or ()]
    assert sum(m["records"] for m in evidence) >= RECORDS
    rules = {r["rule"] for m in evidence for r in m["rules"]}
    assert rules == {"it-customers-pii"}
    fields = {f for m in evidence for r in m["rules"] for f in r["fields"]}
    assert fields == {"email", "card_number", "address.street", "phones[]"}
    assert len({i for m in evidence for i in m["schema_ids"]}) == 1


KEY_SCHEMA = {
    "type": "record",
    "name": "CustomerKey",
    "namespace": "it.masking",
    "fields": [{"name": "tenant", "type": "string"}, {"name": "email", "type": "string"}],
}


def _keyed(endpoint: Endpoint, registry_url: str, topic: str, sent: list[dict[str, Any]]) -> None:
    """Customers with Avro keys (subject <topic>-key) and Avro values."""
    with SchemaRegistryClient({"url": registry_url}) as registry:
        serialize_key = AvroSerializer(registry, json.dumps(KEY_SCHEMA))
        serialize = AvroSerializer(registry, json.dumps(SCHEMA))
        producer = Producer(librdkafka_config(endpoint) | {"acks": "all"})
        try:
            for n, value in enumerate(sent):
                key = {"tenant": "acme", "email": f"owner{value['id']}@example.com"}
                producer.produce(
                    topic,
                    key=serialize_key(key, SerializationContext(topic, MessageField.KEY)),
                    value=serialize(value, SerializationContext(topic, MessageField.VALUE)),
                    partition=n % PARTITIONS,
                )
            assert producer.flush(60) == 0
        finally:
            producer.close()


def _keyed_read(
    endpoint: Endpoint, registry_url: str, topic: str, count: int
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(key, value) of every record, both decoded with Confluent's AvroDeserializer."""
    with SchemaRegistryClient({"url": registry_url}) as registry:
        deserialize = AvroDeserializer(registry)
        return [
            (
                deserialize(msg.key(), SerializationContext(topic, MessageField.KEY)),
                deserialize(msg.value(), SerializationContext(topic, MessageField.VALUE)),
            )
            for msg in read_all(endpoint, topic, count)
        ]


async def test_avro_keys_are_masked_like_values_and_still_decode(
    primary: dev.ClusterInfo, direct: Endpoint, tmp_path: Path, schema_registry: str
) -> None:
    topic = unique_topic("it-mask-keyed-")
    sent = [customer(n) for n in range(RECORDS)]
    async with masking_gateway(primary, tmp_path, schema_registry) as (endpoint, _):
        await asyncio.to_thread(create_topic, direct, topic)
        await asyncio.to_thread(_keyed, endpoint, schema_registry, topic, sent)
        analyst = await asyncio.to_thread(
            _keyed_read, as_user(endpoint, ANALYST), schema_registry, topic, RECORDS
        )
        exempt = await asyncio.to_thread(
            _keyed_read, as_user(endpoint, EXEMPT), schema_registry, topic, RECORDS
        )
    by_id = {c["id"]: c for c in sent}
    clear_keys = {f"owner{c['id']}@example.com" for c in sent}
    assert {k["email"] for k, _ in exempt} == clear_keys
    assert all(v == by_id[v["id"]] for _, v in exempt)
    for key, value in analyst:
        check_masked(value, by_id[value["id"]])
        clear = f"owner{value['id']}@example.com"
        # The key decodes with its own schema: the tenant as written, the e-mail
        # hashed in the same shape.
        assert key["tenant"] == "acme"
        assert key["email"] != clear and len(key["email"]) == len(clear)
        assert [c for c in key["email"] if not c.isalnum()] == ["@", "."]
    assert not {k["email"] for k, _ in analyst} & clear_keys


def create_topic(
    endpoint: Endpoint,
    topic: str,
    config: dict[str, str] | None = None,
    partitions: int = PARTITIONS,
) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(librdkafka_config(endpoint))
    new = NewTopic(topic, num_partitions=partitions, replication_factor=-1, config=config or {})
    admin.create_topics([new])[topic].result(60)


CODECS = ("gzip", "snappy", "lz4", "zstd")


def produce_mixed(endpoint: Endpoint, registry_url: str, topic: str) -> int:
    """Customers in batches of each codec, then a committed and an aborted transaction:
    how many records a read_committed reader sees."""
    n = 0
    for codec in CODECS:
        values = [customer(n + i) for i in range(6)]
        produce_customers(
            endpoint, registry_url, topic, values, {"compression.type": codec, "linger.ms": 50}
        )
        n += len(values)
    with SchemaRegistryClient({"url": registry_url}) as registry:
        return n + _transactions(registry, endpoint, topic, n)


def _transactions(registry: SchemaRegistryClient, endpoint: Endpoint, topic: str, n: int) -> int:
    """A committed and an aborted transaction of 4 customers each: 4 visible records."""
    serialize = AvroSerializer(registry, json.dumps(SCHEMA))
    visible = 0
    producer = Producer(
        librdkafka_config(endpoint)
        | {"transactional.id": unique_topic("it-mask-txn-"), "compression.type": "lz4"}
    )
    try:
        producer.init_transactions(30)
        for commit in (True, False):
            producer.begin_transaction()
            for i in range(4):
                value = customer(100 + n + i)
                data = serialize(value, SerializationContext(topic, MessageField.VALUE))
                producer.produce(topic, key=f"customer-{value['id']}".encode(), value=data,
                                 partition=i % PARTITIONS)  # fmt: skip
            assert producer.flush(30) == 0
            if commit:
                producer.commit_transaction(30)
                visible += 4
            else:
                producer.abort_transaction(30)
    finally:
        producer.close()
    return visible


async def raw_read(
    bootstrap: str, mechanism: str, user: str, password: str, topic: str, isolation: int
) -> dict[int, list[tuple[Any, ...]]]:
    """Every batch of every partition of ``topic`` as a Fetch answers it (aiokafka's own
    client, raw record bytes): per partition (base offset, codec, transactional, control,
    [(offset, key, value)]) in order."""
    from aiokafka import AIOKafkaClient
    from aiokafka.protocol.fetch import FetchRequest

    client = AIOKafkaClient(
        bootstrap_servers=bootstrap,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=mechanism,
        sasl_plain_username=user,
        sasl_plain_password=password,
    )
    await client.bootstrap()
    found: dict[int, list[tuple[Any, ...]]] = {p: [] for p in range(PARTITIONS)}
    try:
        await client.force_metadata_update()
        for partition in range(PARTITIONS):
            leader = client.cluster.leader_for_partition(TopicPartitionA(topic, partition))
            offset, high = 0, None
            while high is None or offset < high:
                request = FetchRequest(
                    500, 1, 4 << 20, isolation, [(topic, [(partition, offset, 1 << 20)])]
                )
                response = await client.send(leader, request)
                ((_, parts),) = response.topics
                # (partition, error, high watermark, ..., records) in every version.
                ((_, error, high, *_, records),) = parts
                assert error == 0, error
                run = batches.decode(records)
                for item in run.batches:
                    b = item.batch
                    rows = [
                        (b.base_offset + r.offset_delta, r.key, r.value) for r in item.records or ()
                    ]
                    found[partition].append(
                        (b.base_offset, b.codec, b.is_transactional, b.is_control, rows)
                    )
                    offset = b.base_offset + b.last_offset_delta + 1
    finally:
        await client.close()
    return found


async def test_masked_batches_keep_offsets_keys_codecs_and_transactions_as_direct(
    primary: dev.ClusterInfo, direct: Endpoint, tmp_path: Path, schema_registry: str
) -> None:
    topic = unique_topic("it-mask-customers-wire-")
    async with masking_gateway(primary, tmp_path, schema_registry) as (endpoint, _):
        await asyncio.to_thread(create_topic, direct, topic)
        visible = await asyncio.to_thread(produce_mixed, endpoint, schema_registry, topic)
        password = Path(primary.password_file).read_text(encoding="utf-8").strip()
        direct = await raw_read(
            primary.bootstrap_servers, primary.sasl_mechanism, primary.username, password,
            topic, 1,
        )  # fmt: skip
        masked = await raw_read(endpoint.bootstrap, "PLAIN", ANALYST, PASSWORDS[ANALYST], topic, 1)
        read = await asyncio.to_thread(
            consume,
            as_user(endpoint, ANALYST),
            schema_registry,
            topic,
            visible,
            {"isolation.level": "read_committed"},
        )
    # Batch for batch: the same base offsets, codecs, transactional and control flags,
    # and record offsets and keys; values differ exactly where a record has data.
    for partition in range(PARTITIONS):
        assert [b[:4] for b in masked[partition]] == [b[:4] for b in direct[partition]]
        for got, want in zip(masked[partition], direct[partition], strict=True):
            assert [(o, k) for o, k, _ in got[4]] == [(o, k) for o, k, _ in want[4]]
            if not want[3]:  # data batch
                assert all(v != w for (_, _, v), (_, _, w) in zip(got[4], want[4], strict=True))
    codecs_seen = {b[1] for p in direct.values() for b in p}
    assert {batches.GZIP, batches.SNAPPY, batches.LZ4, batches.ZSTD} <= codecs_seen
    assert any(b[3] for p in direct.values() for b in p)  # transaction markers
    # read_committed through the gateway: the committed records only, all masked.
    assert len(read) == visible
    assert all(value["card_number"] == "**** **** **** 1111" for *_, value in read)


class OwnRegistry:
    """A Karapace of this test's own (its own port and schemas topic on the primary), so
    that stopping it leaves the session's registry alone."""

    def __init__(self, primary: dev.ClusterInfo, topic: str) -> None:
        self.primary, self.topic = primary, topic
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        folder = dev.karapace_dir()
        assert folder is not None
        self.proc = subprocess.Popen(
            [
                str(folder / "run"),
                "--bootstrap",
                self.primary.bootstrap_servers,
                "--port",
                str(self.port),
                "--topic",
                self.topic,
                "--replication-factor",
                str(len(self.primary.nodes)),
                "--sasl-mechanism",
                self.primary.sasl_mechanism,
                "--sasl-username",
                self.primary.username,
                "--sasl-password-file",
                self.primary.password_file,
            ],  # fmt: skip
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        assert line.startswith("karapace ready"), line

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None


class RawReader:
    """A confluent-kafka consumer assigned to every partition from offset 0, kept open
    across polls, returning raw (partition, offset, value) as they arrive."""

    def __init__(self, endpoint: Endpoint, topic: str, partitions: int = PARTITIONS) -> None:
        self.consumer = Consumer(
            librdkafka_config(endpoint)
            | {"group.id": unique_topic("it-mask-g"), "enable.auto.commit": False}
        )
        self.consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])

    def read_for(self, seconds: float, until: int | None = None) -> list[tuple[int, int, bytes]]:
        got: list[tuple[int, int, bytes]] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and (until is None or len(got) < until):
            msg = self.consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                got.append((msg.partition(), msg.offset(), msg.value()))
        return got

    def close(self) -> None:
        self.consumer.close()


def failures(cause: str, topic: str) -> float:
    assert metrics.MASKING_FAILURES is not None  # registered with the default registry
    sample = REGISTRY.get_sample_value(
        "gateway_masking_failures_total", {"topic": topic, "cause": cause}
    )
    return sample or 0.0


async def test_no_clear_value_leaves_while_the_registry_is_down_and_every_record_arrives_once_after(
    primary: dev.ClusterInfo, direct: Endpoint, tmp_path: Path, schema_registry: str
) -> None:
    own = OwnRegistry(primary, unique_topic("_schemas_it_mask_"))
    await asyncio.to_thread(own.start)
    topic = unique_topic("it-mask-customers-down-")
    sent = [customer(n) for n in range(RECORDS)]
    try:
        async with masking_gateway(primary, tmp_path, own.url) as (endpoint, audit_dir):
            await asyncio.to_thread(create_topic, direct, topic)
            await asyncio.to_thread(produce_customers, endpoint, own.url, topic, sent)
            # The gateway has not read a schema yet (a cold cache); the registry goes.
            await asyncio.to_thread(own.stop)
            reader = await asyncio.to_thread(RawReader, as_user(endpoint, ANALYST), topic)
            try:
                during = await asyncio.to_thread(reader.read_for, 6.0)
                assert during == []
                assert failures("registry_unavailable", topic) > 0
                await asyncio.to_thread(own.start)
                after = await asyncio.to_thread(reader.read_for, 60.0, RECORDS)
                late = await asyncio.to_thread(reader.read_for, 2.0)
            finally:
                await asyncio.to_thread(reader.close)
            clear = await asyncio.to_thread(
                consume, as_user(endpoint, EXEMPT), own.url, topic, RECORDS
            )
    finally:
        await asyncio.to_thread(own.stop)
    # Every record exactly once, masked: no offset twice, none missing.
    assert sorted((p, o) for p, o, _ in after) == sorted((p, o) for p, o, _, _ in clear)
    assert late == []
    for _, _, value in after:
        assert b"4111 1111 1111 1111" not in value and b"Canal Street" not in value
    refused = [
        f
        for e in read_events(audit_dir)
        if e.get("principal") == ANALYST
        for f in e.get("masking_failed") or ()
    ]
    assert refused and {f["cause"] for f in refused} == {"registry_unavailable"}


def _produce_bad(endpoint: Endpoint, registry_url: str, topic: str) -> None:
    """Partition 0: good records; 1: a good one, then a schema id no registry knows;
    2: a good one, then an Avro body cut short; one batch each."""
    with SchemaRegistryClient({"url": registry_url}) as registry:
        real = AvroSerializer(registry, json.dumps(SCHEMA))(
            customer(9), SerializationContext(topic, MessageField.VALUE)
        )
    unknown = b"\x00" + (2**31 - 7).to_bytes(4, "big") + real[5:]
    raw = Producer(librdkafka_config(endpoint))
    failed: list[str] = []

    def done(err: Any, msg: Any) -> None:
        if err is not None:
            failed.append(f"{msg.partition()}: {err}")

    try:
        for value, partition in [
            (real, 0), (real, 0), (real, 1), (unknown, 1), (real, 2), (real[:9], 2)
        ]:  # fmt: skip
            raw.produce(topic, value=value, partition=partition, on_delivery=done)
            assert raw.flush(30) == 0
    finally:
        raw.close()
    # Every record is written: what the test then misses, the gateway withheld.
    assert failed == []


async def test_an_unknown_schema_id_or_a_corrupt_body_blocks_only_its_partition(
    primary: dev.ClusterInfo, direct: Endpoint, tmp_path: Path, schema_registry: str
) -> None:
    topic = unique_topic("it-mask-customers-bad-")
    async with masking_gateway(primary, tmp_path, schema_registry) as (endpoint, _):
        await asyncio.to_thread(create_topic, direct, topic, None, 3)
        await asyncio.to_thread(_produce_bad, endpoint, schema_registry, topic)
        reader = await asyncio.to_thread(RawReader, as_user(endpoint, ANALYST), topic, 3)
        try:
            # Until partition 0's two records arrived and the gateway has refused the
            # other two (on a busy machine the first fetches can take a while), then a
            # few seconds more in which those two must stay silent.
            got: list[tuple[int, int, bytes]] = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not (
                len(got) >= 2
                and failures("schema_not_found", topic) > 0
                and failures("undecodable", topic) > 0
            ):
                got += await asyncio.to_thread(reader.read_for, 0.5)
            got += await asyncio.to_thread(reader.read_for, 4.0)
        finally:
            await asyncio.to_thread(reader.close)
    # Partition 0 is delivered, masked; 1 and 2 deliver nothing at all, not even their
    # good first record, while a batch of the same fetch cannot be masked.
    assert sorted((p, o) for p, o, _ in got) == [(0, 0), (0, 1)]
    assert all(b"4111 1111 1111 1111" not in v for _, _, v in got)
    assert failures("schema_not_found", topic) > 0
    assert failures("undecodable", topic) > 0


JSON_VALUES = [
    {"customer": {"email": f"c{n}@example.com", "id": n}, "cards": [{"number": "4111111111111111"}]}
    for n in range(6)
]
NOTES = [
    f"order {n}: card 5500 0000 0000 0004, mail buyer{n}@example.org".encode() for n in range(6)
]


@pytest.mark.parametrize("client", ["kcat", "kafka-python"])
async def test_json_fields_and_text_detectors_are_masked_for_kcat_and_kafka_python(
    primary: dev.ClusterInfo, direct: Endpoint, tmp_path: Path, schema_registry: str, client: str
) -> None:
    json_topic = unique_topic("it-mask-json-")
    notes_topic = unique_topic("it-mask-notes-")
    async with masking_gateway(primary, tmp_path, schema_registry) as (endpoint, audit_dir):
        for topic in (json_topic, notes_topic):
            await asyncio.to_thread(create_topic, direct, topic)
        await aproduce(
            client,
            endpoint,
            json_topic,
            [
                Record(n % PARTITIONS, -1, f"k{n}".encode(), json.dumps(v).encode(),
                       (("x-ssn", b"123-45-6789"), ("trace", b"t1")))
                for n, v in enumerate(JSON_VALUES)
            ],
        )  # fmt: skip
        await aproduce(
            client,
            endpoint,
            notes_topic,
            [Record(n % PARTITIONS, -1, b"", v) for n, v in enumerate(NOTES)],
        )
        analyst = as_user(endpoint, ANALYST)
        got_json = await aconsume(client, analyst, json_topic, PARTITIONS, len(JSON_VALUES))
        got_notes = await aconsume(client, analyst, notes_topic, PARTITIONS, len(NOTES))
    assert len(got_json) == len(JSON_VALUES) and len(got_notes) == len(NOTES)
    for record in got_json:
        value = json.loads(record.value)
        assert value["customer"]["email"] == "(email)"
        assert value["customer"]["id"] in range(6)
        assert value["cards"] == [{"number": "************1111"}]
        assert dict(record.headers) == {"trace": b"t1"}  # x-ssn dropped
    for record in got_notes:
        assert b"5500 0000 0000 0004" not in record.value and b"@example.org" not in record.value
        assert b"**** **** **** 0004" in record.value
    masked = [
        m
        for e in read_events(audit_dir)
        if e.get("principal") == ANALYST
        for m in e.get("masking") or ()
    ]
    rules = {r["rule"] for m in masked for r in m["rules"]}
    assert rules == {"it-events-json", "it-notes-text"}


def _produce_notes(endpoint: Endpoint, topic: str, values: list[bytes]) -> list[str]:
    """Each value to partition 0, one at a time: the delivery error of each (or "")."""
    producer = Producer(librdkafka_config(endpoint) | {"message.send.max.retries": 0})
    errors: list[str] = []

    def done(err: Any, msg: Any) -> None:
        errors.append("" if err is None else err.name())

    try:
        for value in values:
            producer.produce(topic, value=value, partition=0, on_delivery=done)
            assert producer.flush(30) == 0
    finally:
        producer.close()
    return errors


async def test_produce_side_rules_mask_what_is_stored_and_refuse_records_without_schemas(
    primary: dev.ClusterInfo, direct: Endpoint, tmp_path: Path, schema_registry: str
) -> None:
    stored = unique_topic("it-mask-stored-")
    ledger = unique_topic("it-mask-ledger-")
    async with masking_gateway(primary, tmp_path, schema_registry) as (endpoint, _):
        for topic in (stored, ledger):
            await asyncio.to_thread(create_topic, direct, topic)
        assert await asyncio.to_thread(_produce_notes, endpoint, stored, [NOTES[0]]) == [""]
        with SchemaRegistryClient({"url": schema_registry}) as registry:
            wire = AvroSerializer(registry, json.dumps(SCHEMA))(
                customer(1), SerializationContext(ledger, MessageField.VALUE)
            )
        unregistered = b"\x00" + (2**31 - 11).to_bytes(4, "big") + wire[5:]
        errors = await asyncio.to_thread(
            _produce_notes, endpoint, ledger, [wire, b"plain text", unregistered]
        )
    assert errors == ["", "INVALID_RECORD", "INVALID_RECORD"]
    # Read straight from the broker: the stored value is masked, the ledger holds only
    # the record with a registered schema.
    direct = Endpoint(
        primary.bootstrap_servers,
        "SASL_PLAINTEXT",
        primary.sasl_mechanism,
        primary.username,
        Path(primary.password_file).read_text(encoding="utf-8").strip(),
    )
    (kept,) = await aconsume("confluent", direct, stored, PARTITIONS, 1)
    assert kept.value == NOTES[0].replace(b"5500 0000 0000 0004", b"[card]")
    (written,) = await aconsume("confluent", direct, ledger, PARTITIONS, 1)
    assert written.value == wire


def _compacted(read: dict[int, list[tuple[Any, ...]]]) -> bool:
    """Whether the cleaner has removed records from every partition: its offsets no
    longer run 0, 1, 2, ... without a gap."""
    for found in read.values():
        offsets = [o for b in found for o, _, _ in b[4]]
        if offsets == list(range(len(offsets))):
            return False
    return True


async def test_a_compacted_topics_offset_gaps_and_keys_are_as_direct(
    primary: dev.ClusterInfo, direct: Endpoint, tmp_path: Path, schema_registry: str
) -> None:
    topic = unique_topic("it-mask-customers-compact-")
    compact = {
        "cleanup.policy": "compact",
        "segment.ms": "200",
        "min.cleanable.dirty.ratio": "0.001",
        "min.compaction.lag.ms": "0",
        "delete.retention.ms": "0",
    }
    # Six keys written four times over: compaction leaves the last of each.
    rounds = [[customer(n) for n in range(6)] for _ in range(4)]
    password = Path(primary.password_file).read_text(encoding="utf-8").strip()
    direct_read = functools.partial(
        raw_read,
        primary.bootstrap_servers,
        primary.sasl_mechanism,
        primary.username,
        password,
        topic,
        0,
    )
    async with masking_gateway(primary, tmp_path, schema_registry) as (endpoint, _):
        await asyncio.to_thread(create_topic, direct, topic, compact)
        for values in rounds:
            await asyncio.to_thread(produce_customers, endpoint, schema_registry, topic, values)
            await asyncio.sleep(0.5)  # each round in a segment of its own
        produced = 0
        deadline = time.monotonic() + 120
        direct = await direct_read()
        while not _compacted(direct):
            assert time.monotonic() < deadline, "the log cleaner did not compact the topic"
            # A later write rolls the active segment, so the older ones can be cleaned.
            extra = [customer(100 + produced), customer(101 + produced)]
            await asyncio.to_thread(produce_customers, endpoint, schema_registry, topic, extra)
            produced += len(extra)  # new keys each time
            await asyncio.sleep(2)
            direct = await direct_read()
        masked = await raw_read(endpoint.bootstrap, "PLAIN", ANALYST, PASSWORDS[ANALYST], topic, 0)
        direct = await direct_read()
    for partition in range(PARTITIONS):
        assert [b[:4] for b in masked[partition]] == [b[:4] for b in direct[partition]]
        for got, want in zip(masked[partition], direct[partition], strict=True):
            assert [(o, k) for o, k, _ in got[4]] == [(o, k) for o, k, _ in want[4]]
            assert all(v != w for (_, _, v), (_, _, w) in zip(got[4], want[4], strict=True))
    # What the cleaner removed is missing on both paths alike.
    assert _compacted(masked) and _compacted(direct)
