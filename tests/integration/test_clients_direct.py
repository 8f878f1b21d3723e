"""The client drivers against a real broker: each client reads back what it wrote.

``direct`` (from conftest) is the primary dev cluster reached with its SCRAM admin login.
"""

from __future__ import annotations

import dataclasses
import gc
import warnings
from collections import Counter

import pytest

from tests.integration.clients import (
    CLIENTS,
    ClientError,
    Endpoint,
    Record,
    aconsume,
    acreate_topic,
    aproduce,
    java_default_partition,
    produce,
    unique_topic,
)

pytestmark = pytest.mark.integration

PARTITIONS = 3
COUNT = 30


def make_records(client: str) -> list[Record]:
    """Printable ASCII using the characters the text tools treat specially elsewhere."""
    records = []
    for i in range(COUNT):
        headers: tuple[tuple[str, bytes], ...] = (("trace-id", f"t-{i:03d}".encode()),)
        if i % 2:
            headers += (("origin", f"{client}:x=y,z {i}".encode()),)
        records.append(
            Record(
                partition=i % PARTITIONS,
                offset=-1,
                key=f"key-{i:02d}".encode(),
                value=f"value {i}: a,b=c;d|e".encode(),
                headers=headers,
            )
        )
    return records


def content(records: list[Record]) -> Counter[tuple[bytes, bytes, tuple[tuple[str, bytes], ...]]]:
    return Counter((r.key, r.value, r.headers) for r in records)


def assert_dense_offsets(records: list[Record]) -> None:
    for partition in range(PARTITIONS):
        offsets = [r.offset for r in records if r.partition == partition]
        assert offsets == list(range(len(offsets))), f"partition {partition}: {offsets}"


@pytest.mark.parametrize("client", CLIENTS)
async def test_client_reads_back_what_it_wrote(client: str, direct: Endpoint) -> None:
    topic = unique_topic(f"direct-{client}")
    await acreate_topic(direct, topic, PARTITIONS)
    produced = make_records(client)

    await aproduce(client, direct, topic, produced)
    consumed = await aconsume(client, direct, topic, PARTITIONS, COUNT, timeout=60)
    reference = await aconsume("aiokafka", direct, topic, PARTITIONS, COUNT, timeout=60)

    assert len(consumed) == COUNT
    assert consumed == reference  # same partitions, offsets, keys, values and headers
    assert content(consumed) == content(produced)
    assert_dense_offsets(consumed)
    if client == "java":
        # The console producer cannot pick a partition: the default partitioner hashes the key.
        for rec in consumed:
            assert rec.partition == java_default_partition(rec.key, PARTITIONS)
    else:
        placed = Counter((r.partition, r.key, r.value, r.headers) for r in produced)
        assert Counter((r.partition, r.key, r.value, r.headers) for r in consumed) == placed


@pytest.mark.parametrize("client", CLIENTS)
async def test_wrong_password_raises_without_leaking_it(client: str, direct: Endpoint) -> None:
    wrong = dataclasses.replace(direct, password="not-the-password-0123456789")
    records = [Record(0, -1, b"k", b"v", (("h", b"x"),))]
    with pytest.raises(ClientError) as caught:
        await aproduce(client, wrong, unique_topic("direct-badpw"), records, timeout=5)
    assert "not-the-password-0123456789" not in str(caught.value)
    # The Python client libraries can leave the socket of a refused SASL login to the
    # broker unclosed (their bug, not under test here: the gateway is not involved).
    # Collect it now, so that its ResourceWarning does not fail a later test at a
    # random garbage collection.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


async def test_sync_call_on_the_event_loop_is_refused(direct: Endpoint) -> None:
    with pytest.raises(ClientError, match="asyncio.to_thread"):
        produce("aiokafka", direct, unique_topic("direct-loop"), [Record(0, -1, b"k", b"v")])
