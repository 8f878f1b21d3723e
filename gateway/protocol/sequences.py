"""Keep an idempotent producer's batches in sequence when the upstream fails.

Talking to a broker directly, a producer's batches for a partition share one
connection: when it breaks, every batch in flight fails with it and the producer
sends them again, in order. Through the gateway, one batch can fail (its leader was
unreachable, or its answer never came) while the next batch of the same partition,
already on its way, finds the leader back and is written: the broker then sees a gap
in the producer's sequence numbers (OUT_OF_ORDER_SEQUENCE_NUMBER), and the producer
starts a new epoch, which can write a batch whose first attempt did land a second
time. :class:`SequenceGuard` prevents that gap: after a batch failed unwritten or with
an unknown outcome, later batches of the same producer for that partition are held
back (answered as not written) until the producer sends the failed one again.

Pure: record batch headers in, decisions out.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Hashable

# Record batch v2 header: magic at byte 16; producer id, epoch and base sequence at 43.
_MAGIC_AT = 16
_PRODUCER = struct.Struct(">qhi")
_PRODUCER_AT = 43
MAX_TRACKED = 10_000

BatchId = tuple[int, int, int]  # producer id, producer epoch, base sequence


def batch_id(records: bytes | memoryview | None) -> BatchId | None:
    """The idempotent producer's id, epoch and base sequence of a partition's first
    batch; None when it is not an idempotent v2 batch."""
    if records is None or len(records) < _PRODUCER_AT + _PRODUCER.size:
        return None
    if records[_MAGIC_AT] != 2:
        return None
    producer_id, epoch, sequence = _PRODUCER.unpack_from(records, _PRODUCER_AT)
    if producer_id < 0 or sequence < 0:
        return None
    return int(producer_id), int(epoch), int(sequence)


class SequenceGuard:
    """Per client connection: per partition, the first batch that failed."""

    def __init__(self, max_tracked: int = MAX_TRACKED) -> None:
        self._failed: OrderedDict[Hashable, BatchId] = OrderedDict()
        self._max_tracked = max_tracked

    def __bool__(self) -> bool:
        return bool(self._failed)

    def holds(self, partition: Hashable, records: bytes | memoryview | None) -> bool:
        """True when this batch must not be sent yet: an earlier batch of the same
        producer and epoch failed and has not been sent again."""
        failed = self._failed.get(partition)
        if failed is None:
            return False
        found = batch_id(records)
        if found is not None and found[:2] == failed[:2] and found[2] > failed[2]:
            return True
        # The failed batch again (or earlier), a new epoch, or another producer.
        del self._failed[partition]
        return False

    def failed(self, partition: Hashable, records: bytes | memoryview | None) -> None:
        """A batch was not written, or may not have been."""
        found = batch_id(records)
        if found is None:
            return
        known = self._failed.get(partition)
        if known is not None and known[:2] == found[:2] and known[2] <= found[2]:
            return
        self._failed[partition] = found
        while len(self._failed) > self._max_tracked:
            self._failed.popitem(last=False)
