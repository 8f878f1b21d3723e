"""Every client produces and consumes in a consumer group through the gateway.

For each client in ``CLIENTS`` (Java 4.1 tools, confluent-kafka, kafka-python, aiokafka,
kcat): produce, read everything as the only member of a new group and commit, produce
more, then a new member of the same group reads exactly the new records. The client
versions are ``clients.client_versions()``.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from tests.integration.clients import (
    CLIENTS,
    Endpoint,
    Record,
    aconsume,
    aconsume_group,
    acreate_topic,
    aproduce,
    committed_offsets,
    list_topics,
    unique_topic,
    watermarks,
)
from tests.integration.conftest import GatewayUnderTest

pytestmark = pytest.mark.integration

PARTITIONS = 3


@pytest.fixture
def endpoint(gateway: GatewayUnderTest) -> Endpoint:
    return gateway.plain


def make_records(client: str, tag: str, count: int) -> list[Record]:
    # One header set per round: kcat applies -H to a whole run of records.
    return [
        Record(
            partition=i % PARTITIONS,
            offset=-1,
            key=f"{tag}-key-{i:03d}".encode(),
            value=f"{tag} value {i} from {client}".encode(),
            headers=(("round", tag.encode()),),
        )
        for i in range(count)
    ]


def payloads(records: list[Record], with_partition: bool) -> Counter[tuple[object, ...]]:
    return Counter(
        ((r.partition,) if with_partition else ()) + (r.key, r.value, r.headers) for r in records
    )


async def assert_committed_at_end(endpoint: Endpoint, group: str, topic: str) -> None:
    ends = await asyncio.to_thread(watermarks, endpoint, topic, PARTITIONS)
    committed = await asyncio.to_thread(committed_offsets, endpoint, group, topic, PARTITIONS)
    assert committed == {p: high for p, (_, high) in ends.items()}


@pytest.mark.parametrize("client", CLIENTS)
async def test_client_produces_and_group_consumes_resuming_from_committed_offsets(
    endpoint: Endpoint, client: str
) -> None:
    topic = unique_topic(f"mx-{client}")
    group = unique_topic(f"g-mx-{client}")
    await acreate_topic(endpoint, topic, PARTITIONS)
    # The Java console producer cannot choose a partition (its partitioner does).
    placed = client != "java"
    first, second = make_records(client, "first", 12), make_records(client, "second", 9)

    await aproduce(client, endpoint, topic, first)
    got_first = await aconsume_group(client, endpoint, topic, group, len(first))

    assert got_first == await aconsume("aiokafka", endpoint, topic, PARTITIONS, len(first))
    assert payloads(got_first, placed) == payloads(first, placed)
    await assert_committed_at_end(endpoint, group, topic)

    await aproduce(client, endpoint, topic, second)
    got_second = await aconsume_group(client, endpoint, topic, group, len(second))

    # A new member of the group starts at the committed offsets: only the new records.
    assert payloads(got_second, placed) == payloads(second, placed)
    await assert_committed_at_end(endpoint, group, topic)


@pytest.mark.parametrize("client", [c for c in CLIENTS if c != "java"])
async def test_client_lists_all_topics(endpoint: Endpoint, client: str) -> None:
    # (kafka-topics --list is in test_facade_clients.)
    topic = unique_topic(f"mx-list-{client}")
    await acreate_topic(endpoint, topic, 1)

    assert topic in await asyncio.to_thread(list_topics, client, endpoint)
