"""The benchmark's policy path: its policy grants the workloads what they do and nothing
to anyone else, a denial fails the run, and old result files still compare."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from gateway.identity import ANONYMOUS
from gateway.policy import Action, Operation, ResourceType
from gateway.policy.decide import decide, decide_any
from gateway.policy.loader import load_policy_dir
from tests.perf.bench import PolicyDenied, check_policy_path
from tests.perf.report import RunResult, compare_table, results_table, summarize
from tests.perf.targets import DIRECT, GATEWAY, GATEWAY_POLICY, bench_policy_dir

BENCH_CLIENT = dataclasses.replace(ANONYMOUS, listener="bench")
TOPIC = "bench-1a2b3c-produce-gateway-policy-r1"

# What ProducerPerformance, ConsumerPerformance and the latency probe ask of the policy.
WORKLOAD_ACTIONS = [
    Action(ResourceType.TOPIC, TOPIC, Operation.WRITE),
    Action(ResourceType.TOPIC, TOPIC, Operation.READ),
    Action(ResourceType.TOPIC, TOPIC, Operation.DESCRIBE),
    Action(ResourceType.TOPIC, TOPIC, Operation.CREATE),
    Action(ResourceType.GROUP, "bench-0123456789ab", Operation.READ),
    Action(ResourceType.GROUP, "bench-0123456789ab", Operation.DESCRIBE),
    Action(ResourceType.GROUP, f"bench-e2e-{TOPIC}", Operation.READ),
]


@pytest.mark.parametrize("action", WORKLOAD_ACTIONS, ids=str)
def test_bench_policy_allows_what_the_workloads_do_on_the_bench_listener(
    tmp_path: Path, action: Action
) -> None:
    policy = load_policy_dir(bench_policy_dir(tmp_path))
    decision = decide(policy, BENCH_CLIENT, action)
    assert decision.allowed, decision.reason


def test_bench_policy_lets_the_idempotent_producer_start(tmp_path: Path) -> None:
    # InitProducerId without a transactional id: IDEMPOTENT_WRITE on the cluster or
    # WRITE on some topic (KIP-679); the bench grants the latter.
    policy = load_policy_dir(bench_policy_dir(tmp_path))
    assert decide_any(policy, BENCH_CLIENT, ResourceType.TOPIC, Operation.WRITE).allowed


def test_bench_policy_is_loaded_beside_every_example_policy(tmp_path: Path) -> None:
    policy = load_policy_dir(bench_policy_dir(tmp_path))
    examples = {p.name for p in (Path(__file__).resolve().parents[2] / "policies").glob("*.yaml")}
    assert {Path(name).name for name in policy.files} == examples | {
        "zz-bench.yaml",
        "zz-bench-masking.yaml",
    }


def test_bench_policy_grants_nothing_on_other_listeners(tmp_path: Path) -> None:
    policy = load_policy_dir(bench_policy_dir(tmp_path))
    elsewhere = dataclasses.replace(ANONYMOUS, listener="plaintext")
    assert not decide(policy, elsewhere, WORKLOAD_ACTIONS[0]).allowed


def test_bench_policy_grants_no_other_topic(tmp_path: Path) -> None:
    policy = load_policy_dir(bench_policy_dir(tmp_path))
    action = Action(ResourceType.TOPIC, "orders", Operation.READ)
    assert not decide(policy, BENCH_CLIENT, action).allowed


class FakeGateway:
    def __init__(self, allowed: dict[str, float], denied: dict[str, float]) -> None:
        self._allowed, self._denied = allowed, denied

    def allowed(self) -> dict[str, float]:
        return self._allowed

    def denials(self) -> dict[str, float]:
        return self._denied


def check(allowed: dict[str, float], denied: dict[str, float]) -> None:
    gateway: Any = FakeGateway(allowed, denied)
    check_policy_path(gateway)


def test_a_refusal_on_the_policy_path_fails_the_run_naming_the_api() -> None:
    with pytest.raises(PolicyDenied, match=r"refused bench requests \(Fetch 1, Produce 2\)"):
        check({"Produce": 50.0}, {"Produce": 2.0, "Fetch": 1.0})


def test_topics_an_all_topics_metadata_answer_hid_are_no_refusal() -> None:
    check({"Produce": 50.0}, {"Metadata": 7.0})


def test_the_policy_path_without_decisions_fails_the_run() -> None:
    with pytest.raises(PolicyDenied, match="decided nothing"):
        check({}, {})


def runs(*paths: str) -> list[RunResult]:
    rates = {DIRECT: 100.0, GATEWAY: 80.0, GATEWAY_POLICY: 76.0}
    return [
        RunResult("produce", path, 1, metrics={"records_per_s": rates[path], "lat_p50_ms": 5.0})
        for path in paths
    ]


def test_summary_gives_the_policy_path_its_ratios() -> None:
    entry = summarize(runs(DIRECT, GATEWAY, GATEWAY_POLICY))["produce"]
    assert entry["ratio"] == pytest.approx(0.80)
    assert entry["ratio_policy"] == pytest.approx(0.76)
    assert entry["policy_vs_gateway"] == pytest.approx(0.95)


def test_results_table_shows_the_policy_path_beside_the_gateway() -> None:
    summary = summarize(runs(DIRECT, GATEWAY, GATEWAY_POLICY))
    table = results_table({"summary": summary, "settings": {}})
    policy_row = next(line for line in table.splitlines() if GATEWAY_POLICY in line)
    assert "0.76" in policy_row
    assert "x0.950 vs gateway without policy" in policy_row


def test_compare_with_a_file_from_before_the_policy_path_shows_it_missing() -> None:
    old = {"summary": summarize(runs(DIRECT, GATEWAY))}
    new = {"summary": summarize(runs(DIRECT, GATEWAY, GATEWAY_POLICY))}
    table = compare_table(old, new)
    rows = {line.split()[1]: line for line in table.splitlines()[2:]}
    assert set(rows) == {DIRECT, GATEWAY, GATEWAY_POLICY}
    assert rows[GATEWAY_POLICY].split()[2] == "missing"
    assert rows[GATEWAY_POLICY].split()[3] == "76"
    assert "missing" not in rows[GATEWAY]
