"""MirrorMaker 2's records decoded from bytes as it writes them, and what the
replication status concludes from them (the integration test `test_replication_status.py`
reads a real MirrorMaker's)."""

from __future__ import annotations

import struct

import pytest

from gateway.failover.mirror_records import (
    Checkpoint,
    MirrorRecordError,
    OffsetSync,
    checkpoints_topic,
    decode_checkpoint,
    decode_offset_sync,
    offset_syncs_topic,
)
from gateway.failover.replication import (
    GroupSync,
    PartitionLag,
    ReplicationStatus,
    keep_last,
    mirrored,
)
from gateway.failover_cli import status_text


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw


def test_an_offset_sync_decodes_from_kafka_protocol_types() -> None:
    key = _string("orders") + struct.pack(">i", 3)
    value = struct.pack(">qq", 1200, 1159)
    assert decode_offset_sync(key, value) == OffsetSync("orders", 3, 1200, 1159)


def test_a_checkpoint_decodes_with_its_version_and_metadata() -> None:
    key = _string("billing") + _string("orders") + struct.pack(">i", 0)
    value = struct.pack(">hqq", 0, 600, 405) + _string("")
    assert decode_checkpoint(key, value) == Checkpoint("billing", "orders", 0, 600, 405, "")
    named = struct.pack(">hqq", 0, 7, 7) + _string("pos=7 ü")
    assert decode_checkpoint(key, named).metadata == "pos=7 ü"


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        (None, b"x", "no key"),
        (_string("orders"), struct.pack(">qq", 1, 1), "ends after"),
        (_string("orders") + struct.pack(">i", 0), struct.pack(">q", 1), "ends after"),
        (_string("orders") + struct.pack(">i", 0) + b"!", struct.pack(">qq", 1, 1), "left over"),
        (struct.pack(">h", 40) + b"short", struct.pack(">qq", 1, 1), "does not fit"),
        (
            struct.pack(">h", 2) + b"\xff\xfe" + struct.pack(">i", 0),
            struct.pack(">qq", 1, 1),
            "UTF-8",
        ),
    ],
)
def test_a_record_that_is_not_an_offset_sync_is_named(
    key: bytes | None, value: bytes, problem: str
) -> None:
    with pytest.raises(MirrorRecordError, match=problem):
        decode_offset_sync(key, value)


def test_a_checkpoint_of_an_unknown_version_is_refused() -> None:
    key = _string("g") + _string("t") + struct.pack(">i", 0)
    with pytest.raises(MirrorRecordError, match="version 1, not 0"):
        decode_checkpoint(key, struct.pack(">hqq", 1, 1, 1) + _string(""))


def test_topic_names_follow_mirrormakers_defaults() -> None:
    assert offset_syncs_topic("secondary") == "mm2-offset-syncs.secondary.internal"
    assert checkpoints_topic("primary") == "primary.checkpoints.internal"


def test_only_data_topics_on_both_clusters_count_as_mirrored() -> None:
    internal = ["__consumer_offsets", "__gateway-canary", "heartbeats", "x.replica"]
    source = ["orders", "payments", "only-here", "mm2-offset-syncs.secondary.internal"]
    target = ["orders", "payments", "primary.heartbeats", "primary.checkpoints.internal"]
    source, target = source + internal, target + internal + ["mm2-configs.primary.internal"]
    assert mirrored(source, target) == ["orders", "payments"]


def test_the_last_record_per_key_wins_as_in_a_compacted_topic() -> None:
    syncs = [OffsetSync("t", 0, 1, 1), OffsetSync("t", 1, 5, 5), OffsetSync("t", 0, 9, 8)]
    latest: dict[tuple[str, int], OffsetSync] = {}
    keep_last(latest, (((s.topic, s.partition), s) for s in syncs))
    assert latest == {
        ("t", 0): OffsetSync("t", 0, 9, 8),
        ("t", 1): OffsetSync("t", 1, 5, 5),
    }


def test_a_partition_is_caught_up_only_with_nothing_pending_and_the_synced_record_there() -> None:
    synced = OffsetSync("t", 0, 19, 14)
    assert PartitionLag("t", 0, 20, 15, synced, 0, True).caught_up
    # Pending records, a bound instead of a count, the target behind its own sync.
    assert not PartitionLag("t", 0, 25, 15, synced, 5, True).caught_up
    assert not PartitionLag("t", 0, 20_000, 15, synced, 19_980, False).caught_up
    assert not PartitionLag("t", 0, 20, 14, synced, 0, True).caught_up
    # A partition that never held a committed record has nothing to copy.
    assert PartitionLag("t", 1, 0, 0, None, 0, True).caught_up


def test_a_group_is_synced_when_the_checkpoint_is_for_its_current_commit() -> None:
    point = Checkpoint("g", "t", 0, 600, 405, "")
    assert GroupSync("g", "t", 0, 600, point, 405).synced
    assert not GroupSync("g", "t", 0, 640, point, 405).synced
    assert not GroupSync("g", "t", 0, None, point, None).synced


def test_the_status_sums_pending_records_and_prints_every_partition_and_group() -> None:
    status = ReplicationStatus(
        "primary",
        "secondary",
        0.0,
        (
            PartitionLag("orders", 0, 20, 15, OffsetSync("orders", 0, 19, 14), 0, True),
            PartitionLag("orders", 1, 30, 12, OffsetSync("orders", 1, 12, 11), 17, True),
        ),
        (
            GroupSync(
                "billing", "orders", 0, 20, Checkpoint("billing", "orders", 0, 20, 15, ""), 15
            ),
        ),
    )
    assert not status.caught_up and status.pending == 17
    doc = status.as_json()
    assert doc["partitions"][1]["synced"] == {"source": 12, "target": 11}
    assert doc["groups"][0]["synced"] is True
    text = status_text(status)
    assert text.splitlines()[0] == (
        "replication primary -> secondary at 1970-01-01T00:00:00Z: 17 record(s) pending"
    )
    assert "orders  1          30          12          12->11  17" in text
    assert "billing  orders  0          20      20->15      15      yes" in text
