"""The drivers by client name: produce, consume and list with any client.

Every function takes the client's name (one of ``CLIENTS``) and hands the work to
that client's module; the ``a...`` variants run it in a worker thread for async tests.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from typing import Protocol

from tests.integration.clients import aiokafka, confluent, java, kafka_python, kcat
from tests.integration.clients.common import (
    CLIENTS,
    COMPRESSION_CODECS,
    GROUP_PROTOCOLS,
    Endpoint,
    Record,
    client_errors,
)


class _Driver(Protocol):
    """What each client's module offers."""

    def produce(
        self,
        ep: Endpoint,
        topic: str,
        records: list[Record],
        timeout: float,
        compression: str | None,
    ) -> None: ...

    def consume(
        self, ep: Endpoint, topic: str, partitions: int, expected: int, timeout: float
    ) -> list[Record]: ...

    def consume_group(
        self,
        ep: Endpoint,
        topic: str,
        group: str,
        expected: int,
        timeout: float,
        group_protocol: str,
    ) -> list[Record]: ...

    def version(self) -> str: ...


_DRIVERS: dict[str, _Driver] = {
    "java": java,
    "confluent": confluent,
    "kafka-python": kafka_python,
    "aiokafka": aiokafka,
    "kcat": kcat,
}

# ``kafka-topics --list`` is run as a tool: java has no ``list_topics`` here.
_LISTERS: dict[str, Callable[[Endpoint, float], set[str]]] = {
    "confluent": confluent.list_topics,
    "kafka-python": kafka_python.list_topics,
    "aiokafka": aiokafka.list_topics,
    "kcat": kcat.list_topics,
}


def _driver(client: str) -> _Driver:
    driver = _DRIVERS.get(client)
    if driver is None:
        raise ValueError(f"unknown client {client!r}; expected one of {CLIENTS}")
    return driver


def produce(
    client: str,
    ep: Endpoint,
    topic: str,
    records: Sequence[Record],
    *,
    timeout: float = 120,
    compression: str | None = None,
) -> None:
    """Send every record with ``client`` and wait until all are acknowledged.

    Each record goes to ``record.partition``, except with ``java``: the console producer
    has no way to choose a partition, so the default partitioner places each record by
    its key (murmur2(key) % partitions). Callers then compare against what a reference
    consumer reads. ``compression`` (one of ``COMPRESSION_CODECS``) is the producer's
    ``compression.type``; kafka-python and aiokafka only have gzip without extra
    packages. Raises ``ClientError`` on any delivery error; ``ValueError`` if a text tool
    cannot carry a record.
    """
    if not records:
        return
    driver = _driver(client)
    if compression is not None and compression not in COMPRESSION_CODECS:
        raise ValueError(f"unknown compression {compression!r}; expected {COMPRESSION_CODECS}")
    with client_errors(client, ep):
        driver.produce(ep, topic, list(records), timeout, compression)


def consume(
    client: str, ep: Endpoint, topic: str, partitions: int, expected: int, timeout: float = 60
) -> list[Record]:
    """Read partitions ``0..partitions-1`` of ``topic`` from their earliest offset.

    No consumer group is used. Stops once at least ``expected`` records were read or
    ``timeout`` seconds passed, whichever comes first (so a short read is returned, not
    raised: the caller's assertion shows what is missing). Returns the records sorted by
    (partition, offset). ``expected <= 0`` returns ``[]`` at once.
    """
    driver = _driver(client)
    if expected <= 0:
        return []
    with client_errors(client, ep):
        return sorted(driver.consume(ep, topic, partitions, expected, timeout))


def create_topic(
    ep: Endpoint,
    name: str,
    partitions: int,
    replication_factor: int = 1,
    *,
    timeout: float = 30,
) -> None:
    """Create ``name`` and wait until every partition has a leader."""
    with client_errors("aiokafka admin", ep):
        aiokafka.create_topic(ep, name, partitions, replication_factor, timeout)


async def aproduce(
    client: str,
    ep: Endpoint,
    topic: str,
    records: Sequence[Record],
    *,
    timeout: float = 120,
    compression: str | None = None,
) -> None:
    """``produce`` in a worker thread, for async tests."""
    await asyncio.to_thread(
        functools.partial(
            produce, client, ep, topic, records, timeout=timeout, compression=compression
        )
    )


async def aconsume(
    client: str, ep: Endpoint, topic: str, partitions: int, expected: int, timeout: float = 60
) -> list[Record]:
    """``consume`` in a worker thread, for async tests."""
    return await asyncio.to_thread(consume, client, ep, topic, partitions, expected, timeout)


async def acreate_topic(
    ep: Endpoint, name: str, partitions: int, replication_factor: int = 1
) -> None:
    """``create_topic`` in a worker thread, for async tests."""
    await asyncio.to_thread(create_topic, ep, name, partitions, replication_factor)


def consume_group(
    client: str,
    ep: Endpoint,
    topic: str,
    group: str,
    expected: int,
    timeout: float = 60,
    *,
    group_protocol: str = "classic",
) -> list[Record]:
    """Read ``topic`` as the only member of consumer group ``group``, then commit.

    The client subscribes to the topic (the group coordinator assigns the partitions),
    starts at the group's committed offsets or, where there are none, at the earliest
    offset, and stops once at least ``expected`` records were read or ``timeout``
    seconds passed. Before leaving the group it commits the offset after the last
    record it read in each partition (java: the tool's auto-commit on exit commits the
    consumer's position, which is the same when ``expected`` is what there is to read;
    kcat: auto-commit of the records it printed). Everything read is returned, sorted
    by (partition, offset), even beyond ``expected``: a consumer that starts from the
    wrong offset shows up in the result. ``group_protocol`` is ``"classic"`` or
    ``"consumer"`` (KIP-848; see ``GROUP_PROTOCOLS``).
    """
    driver = _driver(client)
    if group_protocol not in GROUP_PROTOCOLS[client]:
        raise ValueError(f"{client} does not speak group protocol {group_protocol!r}")
    if expected <= 0:
        return []
    with client_errors(client, ep):
        return sorted(driver.consume_group(ep, topic, group, expected, timeout, group_protocol))


async def aconsume_group(
    client: str,
    ep: Endpoint,
    topic: str,
    group: str,
    expected: int,
    timeout: float = 60,
    *,
    group_protocol: str = "classic",
) -> list[Record]:
    """``consume_group`` in a worker thread, for async tests."""
    return await asyncio.to_thread(
        functools.partial(
            consume_group,
            client,
            ep,
            topic,
            group,
            expected,
            timeout,
            group_protocol=group_protocol,
        )
    )


def list_topics(client: str, ep: Endpoint, *, timeout: float = 30) -> set[str]:
    """The names of all topics, as ``client`` lists them (a Metadata request for all topics).

    ``java`` is not offered here: ``kafka-topics --list`` is run as a tool.
    """
    lister = _LISTERS.get(client)
    if lister is None:
        raise ValueError(f"list_topics: unsupported client {client!r}")
    with client_errors(f"{client} list topics", ep):
        return lister(ep, timeout)


def client_versions() -> dict[str, str]:
    """The version of every client the drivers use (for a compatibility table)."""
    return {client: driver.version() for client, driver in _DRIVERS.items()}
