"""The audit chain on real files: sealing, checkpoints, rotation, restart, torn lines,
and the tamper matrix that ``verify`` must catch, naming the first bad line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit import chain, read_events, segments
from gateway.audit.canonical import encode
from gateway.audit.verify import ChainReport, verify
from gateway.audit.writer import ChainWriter
from tests.unit.audit_helpers import (
    INSTANCE,
    event,
    files,
    read_lines,
    rewrite,
    settings,
    write_lines,
    write_log,
)


@pytest.fixture
def private() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def only(reports: list[ChainReport]) -> ChainReport:
    assert len(reports) == 1
    return reports[0]


def problem_at(tmp_path: Path, private: Ed25519PrivateKey) -> tuple[Path, int, str]:
    report = only(verify([tmp_path], private.public_key()))
    assert report.problem is not None, "the tampered log verified"
    return report.problem.path, report.problem.line, report.problem.what


def test_canonical_encoding_sorts_keys_has_no_spaces_keeps_utf8_and_refuses_nan() -> None:
    assert encode({"b": 1, "a": [1.5, None, True], "é": "ü\n"}) == (
        '{"a":[1.5,null,true],"b":1,"é":"ü\\n"}'.encode()
    )
    with pytest.raises(ValueError):
        encode({"x": float("nan")})


def test_every_line_chains_to_the_previous_and_checkpoints_are_signed(
    tmp_path: Path, private: Ed25519PrivateKey
) -> None:
    write_log(tmp_path, private, events=12, segment_max_bytes=10**6)
    lines = list(read_events(tmp_path))
    assert [line["seq"] for line in lines] == list(range(len(lines)))
    assert lines[0]["prev"] == chain.GENESIS
    for before, line in zip(lines, lines[1:], strict=False):
        assert line["prev"] == before["hash"]
        assert line["hash"] == chain.line_hash(line)
    checkpoints = [line for line in lines if line["type"] == "checkpoint"]
    # Every 5 lines, within a batch too; the last one, at close, seals the rest.
    assert [(c["first_seq"], c["last_seq"]) for c in checkpoints] == [(0, 4), (6, 10), (12, 13)]
    assert lines[-1]["type"] == "checkpoint"
    report = only(verify([tmp_path], private.public_key()))
    assert report.ok and report.checkpoints == 3 and report.unsealed is None


def test_close_seals_the_last_lines_with_a_checkpoint(
    tmp_path: Path, private: Ed25519PrivateKey
) -> None:
    write_log(tmp_path, private, events=3, segment_max_bytes=10**6)
    lines = list(read_events(tmp_path))
    assert [line["type"] for line in lines] == ["request"] * 3 + ["checkpoint"]
    assert (lines[-1]["first_seq"], lines[-1]["last_seq"]) == (0, 2)


def test_segments_rotate_by_size_each_ending_in_a_checkpoint(
    tmp_path: Path, private: Ed25519PrivateKey
) -> None:
    write_log(tmp_path, private, events=40)
    paths = files(tmp_path)
    assert len(paths) > 2
    for path in paths:
        first = json.loads(read_lines(path)[0])
        assert segments.parse(path) == segments.Segment(path, INSTANCE, first["seq"])
        assert json.loads(read_lines(path)[-1])["type"] == "checkpoint"


def test_an_untouched_log_verifies_with_counts_and_its_last_checkpoint(
    tmp_path: Path, private: Ed25519PrivateKey
) -> None:
    writer = write_log(tmp_path, private, events=40)
    report = only(verify([tmp_path], private.public_key()))
    assert report.ok
    assert report.next_seq == writer.seq
    assert report.segments == len(files(tmp_path))
    assert report.last_checkpoint is not None
    assert report.last_checkpoint["seq"] == writer.seq - 1


def test_a_restart_continues_the_chain_in_a_new_segment(
    tmp_path: Path, private: Ed25519PrivateKey
) -> None:
    first = write_log(tmp_path, private, events=7, segment_max_bytes=10**6)
    second = ChainWriter(settings(tmp_path, segment_max_bytes=10**6), private)
    second.open()
    assert (second.seq, second.prev) == (first.seq, first.prev)
    second.write([event(100)])
    second.close()
    assert len(files(tmp_path)) == 2
    assert only(verify([tmp_path], private.public_key())).ok


def test_a_torn_last_line_is_sealed_on_restart_and_reported_by_verify(
    tmp_path: Path, private: Ed25519PrivateKey
) -> None:
    crashed = ChainWriter(settings(tmp_path, segment_max_bytes=10**6), private)
    crashed.open()
    crashed.write([event(0), event(1)])
    torn_file = files(tmp_path)[-1]
    with torn_file.open("ab") as out:  # a crash in the middle of a write
        out.write(b'{"api":"Produce","n":2,"princ')
    before = torn_file.read_bytes()

    report = only(verify([tmp_path], private.public_key(), allow_unsealed=True))
    assert report.problem is not None and "torn last line" in report.problem.what

    restarted = ChainWriter(settings(tmp_path, segment_max_bytes=10**6), private)
    restarted.open()
    restarted.write([event(3)])
    restarted.close()
    assert torn_file.read_bytes() == before  # sealed, not rewritten
    recovered = next(line for line in read_events(tmp_path) if line["type"] == "recovered")
    assert recovered["tears"][0]["segment"] == torn_file.name
    assert recovered["tears"][0]["torn_bytes"] == 29
    report = only(verify([tmp_path], private.public_key()))
    assert report.ok
    assert report.tears and torn_file.name in report.tears[0]


def test_a_tear_in_the_segment_opened_after_a_tear_is_sealed_with_it(
    tmp_path: Path, private: Ed25519PrivateKey
) -> None:
    crashed = ChainWriter(settings(tmp_path), private)
    crashed.open()
    crashed.write([event(0)])
    with files(tmp_path)[-1].open("ab") as out:
        out.write(b'{"torn":')
    # The restart's first write (its recovered line) was torn by a second crash.
    (tmp_path / segments.name(INSTANCE, crashed.seq)).write_bytes(b'{"v":1,"ty')
    restarted = ChainWriter(settings(tmp_path), private)
    restarted.open()
    restarted.close()
    recovered = next(line for line in read_events(tmp_path) if line["type"] == "recovered")
    assert len(recovered["tears"]) == 2
    report = only(verify([tmp_path], private.public_key()))
    assert report.ok and len(report.tears) == 2


# The tamper matrix: each case names the file and line verify must point at.


def test_verify_names_a_flipped_byte(tmp_path: Path, private: Ed25519PrivateKey) -> None:
    write_log(tmp_path, private)
    target = files(tmp_path)[1]
    lines = read_lines(target)
    lines[2] = lines[2].replace(b'"alice"', b'"alicf"')
    write_lines(target, lines)
    path, line, what = problem_at(tmp_path, private)
    assert (path, line) == (target, 3)
    assert what.startswith("changed")


def test_verify_names_a_deleted_event(tmp_path: Path, private: Ed25519PrivateKey) -> None:
    write_log(tmp_path, private)
    target = files(tmp_path)[1]
    lines = read_lines(target)
    del lines[1]
    write_lines(target, lines)
    path, line, what = problem_at(tmp_path, private)
    assert (path, line) == (target, 2)
    assert what.startswith("missing")


def test_verify_names_two_swapped_events(tmp_path: Path, private: Ed25519PrivateKey) -> None:
    write_log(tmp_path, private)
    target = files(tmp_path)[1]
    lines = read_lines(target)
    lines[1], lines[2] = lines[2], lines[1]
    write_lines(target, lines)
    path, line, what = problem_at(tmp_path, private)
    assert (path, line) == (target, 2)
    assert what.startswith("reordered")


def test_verify_names_a_tail_cut_in_the_middle_of_a_line(
    tmp_path: Path, private: Ed25519PrivateKey
) -> None:
    write_log(tmp_path, private)
    target = files(tmp_path)[-1]
    data = target.read_bytes()
    target.write_bytes(data[: len(data) - 40])
    path, line, what = problem_at(tmp_path, private)
    assert (path, line) == (target, len(read_lines(target)) + 1)
    assert what.startswith("truncated")


def test_verify_names_the_unsealed_lines_left_by_cutting_off_the_last_checkpoint(
    tmp_path: Path, private: Ed25519PrivateKey
) -> None:
    write_log(tmp_path, private)
    target = files(tmp_path)[-1]
    lines = read_lines(target)
    cut = lines[:-1]  # the closing checkpoint goes, the events it sealed stay
    write_lines(target, cut)
    checkpoints = [i for i, raw in enumerate(cut) if json.loads(raw)["type"] == "checkpoint"]
    first_unsealed = checkpoints[-1] + 2 if checkpoints else 1
    path, line, what = problem_at(tmp_path, private)
    assert (path, line) == (target, first_unsealed)
    assert what.startswith("unsealed")


def test_verify_names_the_line_after_a_dropped_segment(
    tmp_path: Path, private: Ed25519PrivateKey
) -> None:
    write_log(tmp_path, private)
    paths = files(tmp_path)
    paths[1].unlink()
    path, line, what = problem_at(tmp_path, private)
    assert (path, line) == (paths[2], 1)
    assert what.startswith("missing")


def test_verify_names_a_dropped_first_segment(tmp_path: Path, private: Ed25519PrivateKey) -> None:
    write_log(tmp_path, private)
    paths = files(tmp_path)
    paths[0].unlink()
    path, line, what = problem_at(tmp_path, private)
    assert (path, line) == (paths[1], 1)
    assert what.startswith("missing")


def test_verify_names_a_changed_event_whose_hashes_were_rebuilt_at_the_next_checkpoint(
    tmp_path: Path, private: Ed25519PrivateKey
) -> None:
    write_log(tmp_path, private)

    def change(parsed: list[list[dict[str, object]]]) -> None:
        parsed[1][0]["principal"] = "mallory"

    rewrite(tmp_path, change)
    target = files(tmp_path)[1]
    checkpoint_line = next(
        i + 1 for i, raw in enumerate(read_lines(target)) if b'"type":"checkpoint"' in raw
    )
    path, line, what = problem_at(tmp_path, private)
    assert (path, line) == (target, checkpoint_line)
    assert what == "bad signature"


def test_verify_names_a_replaced_checkpoint_signature(
    tmp_path: Path, private: Ed25519PrivateKey
) -> None:
    write_log(tmp_path, private)
    other = Ed25519PrivateKey.generate()

    def change(parsed: list[list[dict[str, object]]]) -> None:
        checkpoint = parsed[0][-1]
        checkpoint["signature"] = chain.keys.sign(other, chain.signed_part(checkpoint))

    rewrite(tmp_path, change)
    target = files(tmp_path)[0]
    path, line, what = problem_at(tmp_path, private)
    assert (path, line) == (target, len(read_lines(target)))
    assert what == "bad signature"


def test_verify_names_a_log_re_signed_with_another_key(
    tmp_path: Path, private: Ed25519PrivateKey
) -> None:
    write_log(tmp_path, private)
    forger = Ed25519PrivateKey.generate()

    def change(parsed: list[list[dict[str, object]]]) -> None:
        parsed[0][0]["principal"] = "mallory"

    rewrite(tmp_path, change, resign=forger)
    first_checkpoint = next(
        i + 1
        for i, raw in enumerate(read_lines(files(tmp_path)[0]))
        if b'"type":"checkpoint"' in raw
    )
    path, line, what = problem_at(tmp_path, private)
    assert (path, line) == (files(tmp_path)[0], first_checkpoint)
    assert what.startswith("wrong key")
    # Without the published key, the forged log is consistent with itself: this is why
    # verify warns when no public key is given.
    assert only(verify([tmp_path])).ok


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_checkpoint_is_due_after_checkpoint_every_seconds_while_lines_are_unsealed(
    tmp_path: Path, private: Ed25519PrivateKey
) -> None:
    clock = FakeClock()
    overrides = {"checkpoint_every_events": 1000, "checkpoint_every_seconds": 10.0}
    writer = ChainWriter(settings(tmp_path, **overrides), private, monotonic=clock)
    writer.open()
    assert writer.seconds_to_checkpoint() is None  # nothing to seal
    writer.write([event(0)])
    assert writer.seconds_to_checkpoint() == 10.0
    clock.now += 10.0
    assert writer.seconds_to_checkpoint() == 0.0
    writer.tick()
    assert writer.first_unsealed == writer.seq
    assert [line["type"] for line in read_events(tmp_path)] == ["request", "checkpoint"]


def test_an_old_segment_is_sealed_and_the_next_write_opens_a_new_one(
    tmp_path: Path, private: Ed25519PrivateKey
) -> None:
    clock = FakeClock()
    overrides = {"segment_max_seconds": 60.0, "segment_max_bytes": 10**6}
    writer = ChainWriter(settings(tmp_path, **overrides), private, monotonic=clock)
    writer.open()
    writer.write([event(0)])
    clock.now += 60.0
    writer.tick()
    writer.write([event(1)])
    writer.close()
    paths = files(tmp_path)
    assert len(paths) == 2
    assert [json.loads(raw)["type"] for raw in read_lines(paths[0])] == ["request", "checkpoint"]
    assert only(verify([tmp_path], private.public_key())).ok


def test_each_instances_chain_in_one_directory_is_verified_on_its_own(
    tmp_path: Path, private: Ed25519PrivateKey
) -> None:
    write_log(tmp_path, private, events=10)
    other = Ed25519PrivateKey.generate()
    write_log(tmp_path, other, events=10, instance="gw2")
    target = files(tmp_path)[-1]  # gw2's last segment
    lines = read_lines(target)
    del lines[0]
    write_lines(target, lines)
    reports = {r.instance: r for r in verify([tmp_path])}
    assert reports["gw1"].ok
    assert reports["gw2"].problem is not None and reports["gw2"].problem.path == target
