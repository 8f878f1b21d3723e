"""Holding an idempotent producer's later batches while an earlier one failed upstream."""

from __future__ import annotations

import struct

from gateway.protocol.sequences import SequenceGuard, batch_id

PARTITION = ("orders", 0)


def batch(sequence: int, producer_id: int = 42, epoch: int = 0, magic: int = 2) -> bytes:
    """A record batch v2 header (61 bytes) with the producer fields set."""
    header = bytearray(61)
    header[16] = magic
    struct.pack_into(">qhi", header, 43, producer_id, epoch, sequence)
    return bytes(header)


def test_batch_id_reads_producer_epoch_and_base_sequence_of_idempotent_v2_batches() -> None:
    assert batch_id(batch(7, producer_id=1000, epoch=3)) == (1000, 3, 7)
    assert batch_id(batch(7, producer_id=-1)) is None  # not idempotent
    assert batch_id(batch(7, magic=1)) is None
    assert batch_id(b"short") is None
    assert batch_id(None) is None


def test_later_batches_wait_until_the_failed_one_is_sent_again() -> None:
    guard = SequenceGuard()
    assert not guard.holds(PARTITION, batch(10))
    guard.failed(PARTITION, batch(10))
    assert guard.holds(PARTITION, batch(20))  # would leave a gap at 10
    assert guard.holds(("orders", 0), batch(30))
    assert not guard.holds(("orders", 1), batch(20))  # another partition
    assert not guard.holds(PARTITION, batch(10))  # the retry goes, and clears the hold
    assert not guard.holds(PARTITION, batch(20))
    assert not guard


def test_the_earliest_failure_is_kept() -> None:
    guard = SequenceGuard()
    guard.failed(PARTITION, batch(20))
    guard.failed(PARTITION, batch(10))
    guard.failed(PARTITION, batch(30))
    assert guard.holds(PARTITION, batch(15))
    assert not guard.holds(PARTITION, batch(10))


def test_a_new_epoch_or_producer_is_never_held() -> None:
    guard = SequenceGuard()
    guard.failed(PARTITION, batch(10, epoch=0))
    assert not guard.holds(PARTITION, batch(0, epoch=1))
    guard.failed(PARTITION, batch(10, producer_id=1))
    assert not guard.holds(PARTITION, batch(50, producer_id=2))


def test_batches_of_producers_without_idempotence_are_not_tracked() -> None:
    guard = SequenceGuard()
    guard.failed(PARTITION, batch(10, producer_id=-1))
    assert not guard


def test_tracked_partitions_are_bounded() -> None:
    guard = SequenceGuard(max_tracked=2)
    for i in range(5):
        guard.failed(("t", i), batch(1))
    assert not guard.holds(("t", 0), batch(9))
    assert guard.holds(("t", 4), batch(9))
