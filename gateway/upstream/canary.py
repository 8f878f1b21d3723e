"""The health check's canary: one record written to a small topic of the gateway's own
and read back, so a check proves the cluster takes writes and serves reads, not only
that it answers Metadata.

The topic (``clusters.*.health.canary_topic``) has one partition, the cluster's
replication (up to 3) and one hour's retention; it is created on first use. Each round
trip produces one record with ``acks=all`` and fetches it back from its offset, with
the gateway's own credentials, on connections of its own (kept between checks, and
dropped after a failure so the next check logs in afresh, with the secret as its
source holds it then). The record says only which
gateway wrote it and when: no client data, no secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from gateway.config import ClusterConfig
from gateway.errors import UpstreamUnavailable
from gateway.upstream.clients import client_settings

log = logging.getLogger(__name__)

RETENTION_MS = 3600 * 1000
MAX_REPLICATION = 3
_CLIENT_ID = "soc2-gateway-canary"


class CanaryFailed(UpstreamUnavailable):
    """The round trip failed: ``reason`` names the topic and the cause (for the
    cluster's health), the message names the cluster too (for logs)."""

    def __init__(self, cluster: str, topic: str, cause: str) -> None:
        self.reason = f"{topic}: {cause}"
        super().__init__(f"cluster {cluster}: canary {self.reason}")


class Canary:
    """Round trips of one record on ``topic`` of one cluster."""

    def __init__(self, cluster: str, config: ClusterConfig, topic: str) -> None:
        self.cluster = cluster
        self.config = config
        self.topic = topic
        self._producer: Any = None
        self._consumer: Any = None
        self._created = False
        self._sequence = 0
        self._origin = f"{socket.gethostname()}:{os.getpid()}".encode()

    async def round_trip(self, brokers: int, budget: float) -> float:
        """Write one record and read it back; its duration in seconds. Raises
        CanaryFailed (with the reason, never a secret) when either fails."""
        try:
            async with asyncio.timeout(budget):
                return await self._round_trip(brokers)
        except (KafkaError, OSError, TimeoutError, UpstreamUnavailable) as exc:
            await self.close()
            raise CanaryFailed(self.cluster, self.topic, str(exc) or type(exc).__name__) from exc

    async def _round_trip(self, brokers: int) -> float:
        if not self._created:
            await self._create_topic(brokers)
            self._created = True
        producer, consumer = await self._clients()
        self._sequence += 1
        value = b"%s %d %d" % (self._origin, self._sequence, time.time_ns())
        partition = TopicPartition(self.topic, 0)
        started = time.monotonic()
        written = await producer.send_and_wait(self.topic, value, partition=0)
        consumer.seek(partition, written.offset)
        consumer.resume(partition)
        try:
            while True:
                batches = await consumer.getmany(partition, timeout_ms=1000)
                for record in batches.get(partition, []):
                    if record.offset == written.offset:
                        if record.value != value:
                            raise UpstreamUnavailable(
                                f"offset {written.offset} holds another record than written"
                            )
                        return time.monotonic() - started
        finally:
            # No fetching in the background between checks.
            consumer.pause(partition)

    async def _clients(self) -> tuple[Any, Any]:
        if self._producer is None:
            producer = AIOKafkaProducer(
                **client_settings(self.config), client_id=_CLIENT_ID, acks="all", linger_ms=0
            )
            await producer.start()
            self._producer = producer
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                **client_settings(self.config),
                client_id=_CLIENT_ID,
                enable_auto_commit=False,
                group_id=None,
                fetch_max_wait_ms=100,  # the record is there once written
            )
            await consumer.start()
            partition = TopicPartition(self.topic, 0)
            consumer.assign([partition])
            consumer.pause(partition)
            self._consumer = consumer
        return self._producer, self._consumer

    async def _create_topic(self, brokers: int) -> None:
        admin: Any = AIOKafkaAdminClient(**client_settings(self.config), client_id=_CLIENT_ID)
        await admin.start()
        try:
            if self.topic in await admin.list_topics():
                return
            replication = max(1, min(MAX_REPLICATION, brokers))
            topic = NewTopic(
                self.topic,
                num_partitions=1,
                replication_factor=replication,
                topic_configs={"retention.ms": str(RETENTION_MS), "cleanup.policy": "delete"},
            )
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([topic])
                log.info(
                    "cluster %s: created the canary topic %s (replication %d)",
                    self.cluster,
                    self.topic,
                    replication,
                )
        finally:
            await admin.close()

    async def close(self) -> None:
        """Drop the canary's connections (the next round trip opens new ones)."""
        producer, consumer = self._producer, self._consumer
        self._producer = self._consumer = None
        for client in (producer, consumer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
