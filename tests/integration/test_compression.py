"""Compressed record batches through the gateway: gzip, snappy, lz4 and zstd.

Each codec round-trips (the client produces compressed, then reads back through the
gateway) with confluent-kafka, the Java console tools and kcat; gzip also with
kafka-python and aiokafka (the others need codec packages these two do not bundle).
The batches the broker stored are checked with ``kafka.tools.DumpLogSegments``: the
gateway forwards them without recompressing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import dev
from tests.integration.clients import (
    COMPRESSION_CODECS,
    Endpoint,
    Record,
    aconsume,
    acreate_topic,
    aproduce,
    arun_java_tool,
    unique_topic,
)
from tests.integration.conftest import GatewayUnderTest

pytestmark = pytest.mark.integration

COUNT = 200
ROUND_TRIPS = [
    *((codec, client) for codec in COMPRESSION_CODECS for client in ("confluent", "java", "kcat")),
    ("gzip", "kafka-python"),
    ("gzip", "aiokafka"),
]


@pytest.fixture
def endpoint(gateway: GatewayUnderTest) -> Endpoint:
    return gateway.plain


def make_records(codec: str) -> list[Record]:
    """Compressible records, all with the same header (kcat sets headers per run)."""
    return [
        Record(
            partition=0,
            offset=-1,
            key=f"key-{i:04d}".encode(),
            value=f"{codec} record {i:04d} ".encode() + b"abcdefgh" * (i % 16),
            headers=(("codec", codec.encode()),),
        )
        for i in range(COUNT)
    ]


def content(records: list[Record]) -> list[tuple[bytes, bytes, tuple[tuple[str, bytes], ...]]]:
    return [(r.key, r.value, r.headers) for r in records]


@pytest.mark.parametrize(("codec", "client"), ROUND_TRIPS)
async def test_compressed_records_round_trip_through_the_gateway(
    endpoint: Endpoint, codec: str, client: str
) -> None:
    topic = unique_topic(f"cmp-{codec}-{client}")
    await acreate_topic(endpoint, topic, 1)
    sent = make_records(codec)

    await aproduce(client, endpoint, topic, sent, compression=codec)
    got = await aconsume(client, endpoint, topic, 1, COUNT)

    assert content(got) == content(sent)  # one partition: same order
    assert [r.offset for r in got] == list(range(COUNT))


def codecs_in_segment(dump: str, segment: Path) -> set[str]:
    """The ``compresscodec`` of every batch DumpLogSegments printed for ``segment``."""
    codecs: set[str] = set()
    current = None
    for line in dump.splitlines():
        if line.startswith("Dumping "):
            current = Path(line.removeprefix("Dumping ").strip())
        elif current == segment and line.startswith("baseOffset:"):
            fields = line.split()
            codecs.add(fields[fields.index("compresscodec:") + 1])
    return codecs


def first_segment(cluster: dev.ClusterInfo, partition_dir: str) -> Path:
    """The first log segment of a partition, on whichever node of the cluster holds it."""
    found = [
        Path(node.data_dir) / partition_dir / f"{0:020d}.log"
        for node in cluster.nodes
        if (Path(node.data_dir) / partition_dir).is_dir()
    ]
    assert found, f"no node of {cluster.name} holds {partition_dir}"
    return found[0]


async def test_batches_stored_in_kafka_keep_the_producers_codec(
    endpoint: Endpoint, primary: dev.ClusterInfo
) -> None:
    segments: dict[str, Path] = {}
    for codec in COMPRESSION_CODECS:
        topic = unique_topic(f"cmp-stored-{codec}")
        await acreate_topic(endpoint, topic, 1)
        await aproduce("confluent", endpoint, topic, make_records(codec), compression=codec)
        segments[codec] = first_segment(primary, f"{topic}-0")

    dump = await arun_java_tool(
        endpoint,
        "kafka.tools.DumpLogSegments",
        "--files", ",".join(str(path) for path in segments.values()),
        config_option=None,
    )  # fmt: skip

    for codec, segment in segments.items():
        assert codecs_in_segment(dump, segment) == {codec}, dump
