"""Kafka's own admin command line tools (4.1) work through the gateway.

kafka-topics (CreateTopics, CreatePartitions, DeleteTopics), kafka-configs
(IncrementalAlterConfigs, DescribeConfigs), kafka-delete-records (DeleteRecords),
kafka-consumer-groups --reset-offsets (OffsetFetch, OffsetCommit), kafka-transactions
(ListTransactions, DescribeTransactions, DescribeProducers), kafka-log-dirs
(DescribeLogDirs) and kafka-leader-election (ElectLeaders). Results are checked with a
second client where the tool's own output is not the point.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

from tests.integration.clients import (
    Endpoint,
    Record,
    aconsume,
    aconsume_group,
    acreate_topic,
    aproduce,
    arun_java_tool,
    committed_offsets,
    librdkafka_config,
    python_client_config,
    unique_topic,
    watermarks,
)
from tests.integration.conftest import GatewayUnderTest

pytestmark = pytest.mark.integration

T = TypeVar("T")

TOPIC_COMMAND = "org.apache.kafka.tools.TopicCommand"
CONFIG_COMMAND = "kafka.admin.ConfigCommand"
DELETE_RECORDS_COMMAND = "org.apache.kafka.tools.DeleteRecordsCommand"
CONSUMER_GROUP_COMMAND = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
TRANSACTIONS_COMMAND = "org.apache.kafka.tools.TransactionsCommand"
LOG_DIRS_COMMAND = "org.apache.kafka.tools.LogDirsCommand"
LEADER_ELECTION_COMMAND = "org.apache.kafka.tools.LeaderElectionCommand"


@pytest.fixture
def endpoint(gateway: GatewayUnderTest) -> Endpoint:
    return gateway.plain


def records_for(partitions: int, per_partition: int, tag: str = "r") -> list[Record]:
    return [
        Record(p, -1, f"{tag}-{p}-{i}".encode(), f"{tag} value {p}/{i}".encode())
        for p in range(partitions)
        for i in range(per_partition)
    ]


def listed_partitions(endpoint: Endpoint, topic: str) -> int | None:
    """Partitions of ``topic`` in the endpoint's metadata; None if it lists no such topic."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def ask() -> int | None:
        admin = AIOKafkaAdminClient(**python_client_config(endpoint))
        await admin.start()
        try:
            if topic not in await admin.list_topics():
                return None
            (meta,) = await admin.describe_topics([topic])
            return len(meta["partitions"])
        finally:
            await admin.close()

    return asyncio.run(ask())


def broker_ids(endpoint: Endpoint) -> set[int]:
    admin = AdminClient(librdkafka_config(endpoint))  # must outlive the request
    return {node.id for node in admin.describe_cluster(request_timeout=30).result(30).nodes}


async def eventually(probe: Callable[[], T], done: Callable[[T], bool], timeout: float = 30) -> T:
    """Run ``probe()`` in a thread until ``done(result)`` or ``timeout``; the last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = await asyncio.to_thread(probe)
        if done(result) or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.2)


def tab_table(output: str) -> list[dict[str, str]]:
    """Rows of kafka-transactions' tab-separated tables, keyed by column name."""
    lines = [line for line in output.splitlines() if "\t" in line]
    if not lines:
        return []
    header = [col.strip() for col in lines[0].split("\t")]
    return [
        dict(zip(header, (col.strip() for col in line.split("\t")), strict=False))
        for line in lines[1:]
    ]


# --------------------------------------------------------------------------- kafka-topics


async def test_kafka_topics_creates_adds_partitions_to_and_deletes_a_topic(
    endpoint: Endpoint,
) -> None:
    topic = unique_topic("adm-topics")
    common = ("--bootstrap-server", endpoint.bootstrap, "--topic", topic)

    await arun_java_tool(
        endpoint, TOPIC_COMMAND, *common, "--create", "--partitions", "2",
        "--replication-factor", "1",
    )  # fmt: skip
    listed = await eventually(lambda: listed_partitions(endpoint, topic), lambda n: n == 2)
    assert listed == 2

    await arun_java_tool(endpoint, TOPIC_COMMAND, *common, "--alter", "--partitions", "5")
    listed = await eventually(lambda: listed_partitions(endpoint, topic), lambda n: n == 5)
    assert listed == 5
    # The new partitions take records.
    added = [Record(4, -1, b"k", b"in partition 4")]
    await aproduce("confluent", endpoint, topic, added)
    assert [r.value for r in await aconsume("confluent", endpoint, topic, 5, 1)] == [
        b"in partition 4"
    ]

    await arun_java_tool(endpoint, TOPIC_COMMAND, *common, "--delete")
    listed = await eventually(lambda: listed_partitions(endpoint, topic), lambda n: n is None)
    assert listed is None


# --------------------------------------------------------------------------- kafka-configs


async def test_kafka_configs_alters_a_topic_config_and_describes_it(endpoint: Endpoint) -> None:
    topic = unique_topic("adm-configs")
    await acreate_topic(endpoint, topic, 1)
    entity = (
        "--bootstrap-server", endpoint.bootstrap,
        "--entity-type", "topics", "--entity-name", topic,
    )  # fmt: skip

    await arun_java_tool(
        endpoint, CONFIG_COMMAND, *entity,
        "--alter", "--add-config", "retention.ms=3600000,max.message.bytes=2000000",
    )  # fmt: skip
    described = await arun_java_tool(endpoint, CONFIG_COMMAND, *entity, "--describe")

    settings = {
        line.split()[0].partition("=")[0]: line.split()[0].partition("=")[2]
        for line in described.splitlines()
        if line.startswith("  ") and "=" in line
    }
    assert settings.get("retention.ms") == "3600000", described
    assert settings.get("max.message.bytes") == "2000000", described


# --------------------------------------------------------------------------- kafka-delete-records


async def test_kafka_delete_records_moves_the_low_watermark(
    endpoint: Endpoint, tmp_path: Path
) -> None:
    topic = unique_topic("adm-delete-records")
    await acreate_topic(endpoint, topic, 2)
    await aproduce("confluent", endpoint, topic, records_for(2, 10))
    offsets_file = tmp_path / "offsets.json"
    offsets_file.write_text(
        json.dumps(
            {
                "version": 1,
                "partitions": [
                    {"topic": topic, "partition": 0, "offset": 4},
                    {"topic": topic, "partition": 1, "offset": 7},
                ],
            }
        ),
        encoding="utf-8",
    )

    output = await arun_java_tool(
        endpoint, DELETE_RECORDS_COMMAND,
        "--bootstrap-server", endpoint.bootstrap, "--offset-json-file", str(offsets_file),
    )  # fmt: skip

    assert f"partition: {topic}-0\tlow_watermark: 4" in output, output
    assert f"partition: {topic}-1\tlow_watermark: 7" in output, output
    assert await asyncio.to_thread(watermarks, endpoint, topic, 2) == {0: (4, 10), 1: (7, 10)}
    remaining = await aconsume("aiokafka", endpoint, topic, 2, 9)
    assert [(r.partition, r.offset) for r in remaining] == [
        *((0, o) for o in range(4, 10)),
        *((1, o) for o in range(7, 10)),
    ]


# --------------------------------------------------------------------------- kafka-consumer-groups


async def test_kafka_consumer_groups_reset_offsets_to_earliest_rewinds_committed_offsets(
    endpoint: Endpoint,
) -> None:
    topic = unique_topic("adm-reset")
    group = unique_topic("g-reset")
    await acreate_topic(endpoint, topic, 3)
    sent = records_for(3, 4)
    await aproduce("confluent", endpoint, topic, sent)
    assert len(await aconsume_group("confluent", endpoint, topic, group, len(sent))) == len(sent)
    assert await asyncio.to_thread(committed_offsets, endpoint, group, topic, 3) == dict.fromkeys(
        range(3), 4
    )

    output = await arun_java_tool(
        endpoint, CONSUMER_GROUP_COMMAND,
        "--bootstrap-server", endpoint.bootstrap,
        "--reset-offsets", "--group", group, "--topic", topic, "--to-earliest", "--execute",
    )  # fmt: skip

    assert topic in output, output
    assert await asyncio.to_thread(committed_offsets, endpoint, group, topic, 3) == dict.fromkeys(
        range(3), 0
    )
    # The group reads everything again.
    again = await aconsume_group("confluent", endpoint, topic, group, len(sent))
    assert sorted(r.value for r in again) == sorted(r.value for r in sent)


# --------------------------------------------------------------------------- kafka-transactions


async def test_kafka_transactions_lists_and_describes_an_open_transaction_and_its_producer(
    endpoint: Endpoint,
) -> None:
    topic = unique_topic("adm-txn")
    transactional_id = unique_topic("adm-txn-id")
    await acreate_topic(endpoint, topic, 1)
    bootstrap = ("--bootstrap-server", endpoint.bootstrap)

    producer = Producer({**librdkafka_config(endpoint), "transactional.id": transactional_id})

    def open_transaction() -> None:
        producer.init_transactions(30)
        producer.begin_transaction()
        for i in range(5):
            producer.produce(topic, value=f"open-{i}".encode(), partition=0)
        assert producer.flush(30) == 0

    try:
        await asyncio.to_thread(open_transaction)
        listed = await arun_java_tool(endpoint, TRANSACTIONS_COMMAND, *bootstrap, "list")
        described = await arun_java_tool(
            endpoint, TRANSACTIONS_COMMAND, *bootstrap,
            "describe", "--transactional-id", transactional_id,
        )  # fmt: skip
        producers = await arun_java_tool(
            endpoint, TRANSACTIONS_COMMAND, *bootstrap,
            "describe-producers", "--topic", topic, "--partition", "0",
        )  # fmt: skip
        await asyncio.to_thread(producer.commit_transaction, 30)
    finally:
        producer.purge()
        with warnings.catch_warnings(), contextlib.suppress(KafkaException):
            # After a failed transaction close() complains that it cannot abort it;
            # the failure itself has already been raised.
            warnings.simplefilter("ignore", RuntimeWarning)
            await asyncio.to_thread(producer.close)

    (listing,) = [r for r in tab_table(listed) if r["TransactionalId"] == transactional_id]
    assert listing["TransactionState"] == "Ongoing"
    (txn,) = tab_table(described)
    assert txn["TransactionalId"] == transactional_id
    assert txn["TransactionState"] == "Ongoing"
    assert txn["TopicPartitions"] == f"{topic}-0"
    assert txn["ProducerId"] == listing["ProducerId"]
    (state,) = tab_table(producers)
    assert state["ProducerId"] == listing["ProducerId"]
    assert state["LastSequence"] == "4"  # five records, sequence numbers 0..4
    assert state["CurrentTransactionStartOffset"] == "0"


async def test_kafka_transactions_describe_producers_shows_an_idempotent_producer(
    endpoint: Endpoint,
) -> None:
    topic = unique_topic("adm-producers")
    await acreate_topic(endpoint, topic, 1)

    def send_idempotent() -> None:
        producer = Producer({**librdkafka_config(endpoint), "enable.idempotence": True})
        for i in range(30):
            producer.produce(topic, value=f"idempotent-{i}".encode(), partition=0)
        assert producer.flush(30) == 0
        producer.close()

    await asyncio.to_thread(send_idempotent)
    output = await arun_java_tool(
        endpoint, TRANSACTIONS_COMMAND, "--bootstrap-server", endpoint.bootstrap,
        "describe-producers", "--topic", topic, "--partition", "0",
    )  # fmt: skip

    (state,) = tab_table(output)
    assert int(state["ProducerId"]) >= 0
    assert state["LastSequence"] == "29"
    assert state["CurrentTransactionStartOffset"] == "None"


# --------------------------------------------------------------------------- other tools


async def test_kafka_log_dirs_describes_the_topics_partitions(endpoint: Endpoint) -> None:
    topic = unique_topic("adm-log-dirs")
    await acreate_topic(endpoint, topic, 2)
    await aproduce("confluent", endpoint, topic, records_for(1, 10))  # partition 0 only

    output = await arun_java_tool(
        endpoint, LOG_DIRS_COMMAND,
        "--bootstrap-server", endpoint.bootstrap, "--describe", "--topic-list", topic,
    )  # fmt: skip

    (report,) = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    # The brokers the endpoint names (for the gateway: itself alone).
    assert {b["broker"] for b in report["brokers"]} == await asyncio.to_thread(broker_ids, endpoint)
    sizes = {
        part["partition"]: part["size"]
        for broker in report["brokers"]
        for log_dir in broker["logDirs"]
        for part in log_dir["partitions"]
    }
    assert set(sizes) == {f"{topic}-0", f"{topic}-1"}
    assert sizes[f"{topic}-0"] > 0
    assert sizes[f"{topic}-1"] == 0


async def test_kafka_leader_election_reports_the_preferred_leader_already_elected(
    endpoint: Endpoint,
) -> None:
    topic = unique_topic("adm-elect")
    await acreate_topic(endpoint, topic, 1)

    output = await arun_java_tool(
        endpoint, LEADER_ELECTION_COMMAND,
        "--bootstrap-server", endpoint.bootstrap,
        "--election-type", "preferred", "--topic", topic, "--partition", "0",
        config_option="--admin.config",
    )  # fmt: skip

    assert f"Valid replica already elected for partitions {topic}-0" in output, output
