"""``audit fetch``: reads every audit line back from an audit topic and writes each
instance's chain as segment files that ``audit verify`` checks.

Records are grouped by key (the instance id), de-duplicated (a line re-sent after a
crash is kept once; two different lines for one instance and seq are reported as
tampering) and written under the segment name in their ``segment`` header. Reads the
topic from its beginning to the end offsets seen at start, with no consumer group (it
commits nothing). This module writes only the output directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from gateway.audit import shipping


class FetchError(Exception):
    """The topic could not be read back (a precise message, no stack trace)."""


@dataclass(frozen=True, slots=True)
class FetchResult:
    lines: dict[str, int]  # per instance
    records: int
    duplicates: int


async def fetch(settings: dict[str, Any], topic: str, out: Path) -> FetchResult:
    """Read ``topic`` (``settings``: aiokafka connection keywords) into ``out``. Raises
    FetchError, or shipping.ConflictingDuplicate on tampering."""
    consumer = AIOKafkaConsumer(
        **settings, enable_auto_commit=False, auto_offset_reset="earliest", group_id=None
    )
    try:
        await consumer.start()
    except Exception as exc:
        await consumer.stop()
        raise FetchError(f"cannot reach the cluster: {type(exc).__name__}: {exc}") from None
    collector = shipping.Collector()
    records = 0
    try:
        # The consumer's own cache knows only subscribed topics; ask the cluster.
        metadata = await consumer._client.fetch_all_metadata()
        partitions = metadata.partitions_for_topic(topic)
        if not partitions:
            raise FetchError(f"topic {topic} does not exist")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        ends = await consumer.end_offsets(assigned)
        remaining = {tp: end for tp, end in ends.items() if end > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, messages in batch.items():
                for message in messages:
                    if message.offset >= ends[tp]:
                        continue
                    records += 1
                    _add(collector, message)
            for tp in list(remaining):
                if await consumer.position(tp) >= remaining[tp]:
                    del remaining[tp]
    finally:
        await consumer.stop()
    return FetchResult(collector.write(out), records, collector.duplicates)


def _add(collector: shipping.Collector, message: Any) -> None:
    where = f"partition {message.partition} offset {message.offset}"
    if message.key is None or message.value is None:
        raise FetchError(f"record at {where} has no key or value")
    headers = dict(message.headers or ())
    segment = headers.get("segment")
    if segment is None:
        raise FetchError(f"record at {where} has no segment header")
    try:
        collector.add(message.key.decode(), segment.decode(), message.value, torn="torn" in headers)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FetchError(f"record at {where}: {exc}") from None
