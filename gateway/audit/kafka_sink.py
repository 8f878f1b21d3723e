"""``KafkaSink``: copies this instance's durable audit chain to a Kafka topic.

Every line (events and checkpoints, the exact canonical bytes written) goes to
``audit.kafka.topic`` with an idempotent ``acks=all`` producer, keyed by the instance
id so one chain stays in one partition in order, with the segment file's name in the
``segment`` header (verify checks each segment's first seq against its name, so
``audit fetch`` rebuilds the same files). The local files stay the source of
durability: the sink never touches a client request. It reads only lines the writer
has fsynced (``ChainWriter.durable_seq``), from the segment files, at most
``batch_max_lines`` at a time, so falling behind costs disk reads, never memory. After
each acknowledged batch it saves its position (see :mod:`gateway.audit.shipping`); a
restart re-sends from there, and the reader drops identical duplicates.

An unreachable cluster is retried with backoff, logged once per outage and counted;
the lag grows until it answers. This module reads the audit directory, writes only its
position file there, and talks only to the audit cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from gateway import metrics
from gateway.audit import shipping
from gateway.config import AuditKafkaConfig, ClusterConfig
from gateway.upstream.clients import client_settings

log = logging.getLogger(__name__)

BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 30.0
RETENTION_MS = 400 * 24 * 3600 * 1000  # beyond a yearly audit period


class KafkaSink:
    def __init__(
        self,
        config: AuditKafkaConfig,
        cluster: ClusterConfig,
        directory: Path,
        instance: str,
        durable: Callable[[], int],
    ) -> None:
        self.config = config
        self.cluster = cluster
        self.directory = directory
        self.instance = instance
        self._durable = durable  # the first seq not yet fsynced
        self.position = shipping.read_position(directory, instance)
        self._producer: AIOKafkaProducer | None = None
        self._topic_ready = not config.create_topic
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._in_outage = False

    @property
    def lag(self) -> int:
        return max(0, self._durable() - 1 - self.position.seq)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-kafka-sink")

    async def stop(self) -> None:
        """Ship what is durable (within ``stop_timeout_seconds``), then close."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self.config.stop_timeout_seconds)
            except TimeoutError:
                log.warning(
                    "audit sink: %d lines not shipped at shutdown; they are sent at the next start",
                    self.lag,
                )
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
        await self._close_producer()

    async def _run(self) -> None:
        backoff = BACKOFF_INITIAL_S
        while True:
            metrics.AUDIT_SINK_LAG.set(self.lag)
            try:
                shipped = await self._ship_batch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._failed(exc)
                if self._stopping:
                    return  # no retries at shutdown: the next start re-sends
                await self._sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            backoff = BACKOFF_INITIAL_S
            if self._in_outage:
                log.info("audit sink: topic %s reachable again", self.config.topic)
                self._in_outage = False
            if shipped:
                continue
            metrics.AUDIT_SINK_LAG.set(self.lag)
            if self._stopping:
                return
            await self._sleep(self.config.poll_interval_ms / 1000)

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _failed(self, exc: Exception) -> None:
        reason = exc.reason if isinstance(exc, _SinkFailure) else "send"
        metrics.AUDIT_SINK_FAILURES.labels(reason).inc()
        if not self._in_outage:
            # Once per outage: a cluster down for hours must not flood the log.
            log.warning(
                "audit sink: cannot ship to topic %s (%s, %s); retrying, lag grows",
                self.config.topic,
                reason,
                exc,
            )
            self._in_outage = True
        await self._close_producer()

    async def _ship_batch(self) -> int:
        durable = self._durable()
        if durable - 1 <= self.position.seq:
            return 0
        try:
            lines = await asyncio.to_thread(
                shipping.pending,
                self.directory,
                self.instance,
                self.position.seq,
                durable,
                self.config.batch_max_lines,
            )
        except OSError as exc:
            raise _SinkFailure("read", exc) from exc
        if not lines:
            return 0
        producer = await self._ready_producer()
        key = self.instance.encode()
        try:
            futures = [
                await producer.send(
                    self.config.topic,
                    value=line.data,
                    key=key,
                    headers=_headers(line),
                )
                for line in lines
            ]
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise _SinkFailure("send", exc) from exc
        last = lines[-1]  # a line, never torn bytes (those precede a line)
        self.position = shipping.Position(last.seq, last.hash)
        await asyncio.to_thread(
            shipping.write_position, self.directory, self.instance, self.position
        )
        metrics.AUDIT_SINK_SENT.inc(sum(1 for line in lines if not line.torn))
        return len(lines)

    async def _ready_producer(self) -> AIOKafkaProducer:
        if not self._topic_ready:
            try:
                await self._create_topic()
            except KafkaError as exc:
                raise _SinkFailure("topic", exc) from exc
            self._topic_ready = True
        if self._producer is None:
            producer = AIOKafkaProducer(
                **client_settings(self.cluster),
                enable_idempotence=True,
                acks="all",
                request_timeout_ms=10_000,
                client_id=f"gateway-audit-{self.instance}",
            )
            try:
                await producer.start()
            except KafkaError as exc:
                await producer.stop()
                raise _SinkFailure("connect", exc) from exc
            self._producer = producer
        return self._producer

    async def _create_topic(self) -> None:
        admin = AIOKafkaAdminClient(**client_settings(self.cluster), request_timeout_ms=10_000)
        await admin.start()
        try:
            if self.config.topic in await admin.list_topics():
                return
            described = await admin.describe_cluster()
            brokers = max(1, len(described.get("brokers", [])))
            replication = min(3, brokers)
            topic = NewTopic(
                self.config.topic,
                num_partitions=self.config.partitions,
                replication_factor=replication,
                topic_configs={
                    "cleanup.policy": "delete",
                    "retention.ms": str(RETENTION_MS),
                    "min.insync.replicas": str(min(2, replication)),
                },
            )
            with contextlib.suppress(TopicAlreadyExistsError):  # another instance made it
                await admin.create_topics([topic])
            log.info(
                "audit sink: created topic %s (replication %d)", self.config.topic, replication
            )
        finally:
            await admin.close()

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await producer.stop()
            except Exception:  # closing a producer of a dead cluster must not stop us
                log.debug("audit sink: error closing the producer", exc_info=True)


def _headers(line: shipping.Line) -> list[tuple[str, bytes]]:
    headers = [("segment", line.segment.encode())]
    if line.torn:
        headers.append(("torn", b"1"))  # not a line: the crash-torn end of the segment
    return headers


class _SinkFailure(Exception):
    def __init__(self, reason: str, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.reason = reason
