"""What a drill's dry run concludes from the replication state: which partitions hold
the same offsets on both clusters, each group's handoff and the records it would read
again (the integration test `test_replication_status.py` reads real clusters)."""

from __future__ import annotations

from gateway.failover.drill import DrillPlan, handoffs, holds_same_offsets
from gateway.failover.mirror_records import Checkpoint, OffsetSync
from gateway.failover.replication import PartitionLag, ReplicationStatus
from gateway.failover_cli import drill_text

# orders/0: a transaction's markers on the source (19 offsets, 14 records copied);
# orders/1: plain records, copied at the same offsets; orders/2: 5 records still to copy.
GAPPED = PartitionLag("orders", 0, 19, 14, OffsetSync("orders", 0, 18, 13), 0, True)
PLAIN = PartitionLag("orders", 1, 6, 6, OffsetSync("orders", 1, 5, 5), 0, True)
BEHIND = PartitionLag("orders", 2, 15, 10, OffsetSync("orders", 2, 9, 9), 5, True)


def test_only_a_caught_up_partition_with_equal_ends_holds_the_same_offsets() -> None:
    assert holds_same_offsets(PLAIN)
    assert not holds_same_offsets(GAPPED)  # the markers' offsets are not on the target
    assert not holds_same_offsets(BEHIND)  # not caught up: nothing can be said yet
    assert holds_same_offsets(PartitionLag("empty", 0, 0, 0, None, 0, True))


def test_a_group_moves_exactly_where_offsets_match_and_by_checkpoint_elsewhere() -> None:
    commits = {
        "billing": {("orders", 0): 19, ("orders", 1): 6, ("other", 0): 3},
        "new": {("orders", 1): 4, ("orders", 0): 7},
    }
    checkpoints = {("billing", "orders", 0): Checkpoint("billing", "orders", 0, 18, 13, "")}
    synced = {"billing": {("orders", 0): 13, ("orders", 1): 1}}
    found = {
        (h.group, h.partition): h for h in handoffs([GAPPED, PLAIN], commits, checkpoints, synced)
    }
    # 'other' is not a mirrored partition asked about: not listed.
    assert set(found) == {("billing", 0), ("billing", 1), ("new", 0), ("new", 1)}
    exact = found[("billing", 1)]
    assert (exact.handoff, exact.reread, exact.same_offsets) == (6, 0, True)
    # What MirrorMaker synced (1) would have made the group read 5 records again.
    assert exact.reread_from_synced == 5
    by_checkpoint = found[("billing", 0)]
    assert (by_checkpoint.handoff, by_checkpoint.reread) == (13, 1)
    assert by_checkpoint.reread_from_synced is None  # offsets differ: not comparable
    # No checkpoint for the group's commit: its position on the target is unknown.
    unknown = found[("new", 0)]
    assert (unknown.handoff, unknown.reread, unknown.target_committed) == (None, None, None)
    assert found[("new", 1)].reread == 0


def test_the_plan_sums_rereads_and_says_what_is_not_mirrored_and_not_built() -> None:
    status = ReplicationStatus("primary", "secondary", 0.0, (GAPPED, PLAIN, BEHIND), ())
    checkpoint = Checkpoint("billing", "orders", 0, 18, 13, "")
    plan = DrillPlan(
        status,
        tuple(
            handoffs(
                status.partitions,
                {"billing": {("orders", 0): 19, ("orders", 1): 6}},
                {("billing", "orders", 0): checkpoint},
                {},
            )
        ),
        ("audit-only",),
    )
    assert plan.reread == 1
    assert [(p.topic, p.partition) for p in plan.same_offsets] == [("orders", 1)]
    doc = plan.as_json()
    assert (doc["pending"], doc["pending_partitions"], doc["partitions"]) == (5, 1, 3)
    assert doc["not_mirrored"] == ["audit-only"]
    text = drill_text(plan)
    assert "5 record(s) on 1 partition(s)" in text
    assert "1 of 3 mirrored partition(s) hold the same offsets" in text
    assert "UNKNOWN_TOPIC_OR_PARTITION): audit-only" in text
    assert (
        text.splitlines()[-1]
        == "The drill itself (fence writes, switch, release) is not built yet."
    )
