"""``python -m gateway policy check|explain``: exit codes, summaries, precise errors."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import policy_cli
from gateway.__main__ import main as gateway_main
from gateway.policy import CLUSTER_NAME, Action, ResourceType
from gateway.policy.operations import TABLE, required_actions
from gateway.policy_requests import TOPIC_ID, Names, request_body, version_for

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"

RULES = """\
rules:
  - id: read-orders
    effect: allow
    subjects: {groups: [analysts]}
    resources: [{type: topic, literal: orders}]
    operations: [read]
"""


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = policy_cli.main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    (tmp_path / "a.yaml").write_text(RULES)
    return tmp_path


def test_check_valid_dir_exits_0_with_files_rules_and_version(policy_dir: Path) -> None:
    code, out, _ = run("check", str(policy_dir))
    assert code == 0
    assert "ok, policy " in out
    assert "1 files, 1 rules" in out
    assert f"{policy_dir / 'a.yaml'}: 1 rules" in out


def test_check_counts_safeguards_per_file(policy_dir: Path) -> None:
    (policy_dir / "b.yaml").write_text(
        "safeguards:\n  - id: bounds\n    create_topics: {max_partitions: 12}\n"
    )
    code, out, _ = run("check", str(policy_dir))
    assert code == 0
    assert "2 files, 1 rules, 1 safeguards" in out
    assert f"{policy_dir / 'a.yaml'}: 1 rules, 0 safeguards" in out
    assert f"{policy_dir / 'b.yaml'}: 0 rules, 1 safeguards" in out


def test_check_invalid_dir_exits_1_naming_file_line_and_field(policy_dir: Path) -> None:
    (policy_dir / "b.yaml").write_text(RULES.replace("read-orders", "b1").replace("read]", "rd]"))
    code, out, err = run("check", str(policy_dir))
    assert code == 1
    assert out == ""
    assert f"{policy_dir / 'b.yaml'}:6: rules[0].operations[0]: " in err


def test_check_reports_duplicate_ids_across_files(policy_dir: Path) -> None:
    (policy_dir / "b.yaml").write_text(RULES)
    code, _, err = run("check", str(policy_dir))
    assert code == 1
    assert f"already used at {policy_dir / 'a.yaml'}:2" in err


def test_check_shipped_policies_through_the_gateway_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "policy", "check", str(POLICIES)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "analysts.yaml" in result.stdout


def test_gateway_main_dispatches_policy(
    policy_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert gateway_main(["policy", "check", str(policy_dir)]) == 0
    assert "ok, policy" in capsys.readouterr().out


def test_explain_allowed_by_api_names_the_rule(policy_dir: Path) -> None:
    code, out, _ = run(
        "explain", "--dir", str(policy_dir), "--principal", "ann", "--group", "analysts",
        "--api", "Fetch", "--topic", "orders",
    )  # fmt: skip
    assert code == 0
    assert "ALLOW read on topic 'orders' allowed by rule read-orders" in out
    assert out.rstrip().endswith("Fetch: ALLOWED")


def test_explain_denied_exits_1_and_says_no_rule_allows(policy_dir: Path) -> None:
    code, out, _ = run(
        "explain", "--dir", str(policy_dir), "--principal", "ann", "--group", "analysts",
        "--api", "Produce", "--topic", "orders",
    )  # fmt: skip
    assert code == 1
    assert "DENY  write on topic 'orders': no rule allows it for 'ann'" in out
    assert out.rstrip().endswith("Produce: DENIED")


def test_explain_api_with_two_resources_checks_both(policy_dir: Path) -> None:
    code, out, _ = run(
        "explain", "--dir", str(policy_dir), "--principal", "ann", "--group", "analysts",
        "--api", "OffsetCommit", "--topic", "orders", "--consumer-group", "g",
    )  # fmt: skip
    assert code == 1
    assert "DENY  read on group 'g'" in out
    assert "ALLOW read on topic 'orders'" in out


def test_explain_by_resource_type_and_operation(policy_dir: Path) -> None:
    code, out, _ = run(
        "explain", "--dir", str(policy_dir), "--principal", "ann", "--group", "analysts",
        "--resource-type", "topic", "--name", "orders", "--operation", "describe",
    )  # fmt: skip
    assert code == 0
    assert "describe on topic 'orders' allowed by rule read-orders" in out


def test_explain_deny_wins_in_the_shipped_policy() -> None:
    code, out, _ = run(
        "explain", "--dir", str(POLICIES), "--principal", "ann", "--group", "analysts",
        "--api", "Produce", "--topic", "orders",
    )  # fmt: skip
    assert code == 1
    assert "denied by rule analysts-never-write" in out


def test_explain_missing_resource_name_is_a_usage_error(policy_dir: Path) -> None:
    code, _, err = run(
        "explain", "--dir", str(policy_dir), "--principal", "ann", "--api", "OffsetCommit",
        "--topic", "orders",
    )  # fmt: skip
    assert code == 2
    assert "--api OffsetCommit needs --consumer-group" in err


def test_explain_with_an_invalid_policy_exits_2_with_its_errors(policy_dir: Path) -> None:
    (policy_dir / "a.yaml").write_text(RULES.replace("allow", "alow"))
    code, _, err = run(
        "explain", "--dir", str(policy_dir), "--principal", "ann", "--api", "Fetch",
        "--topic", "orders",
    )  # fmt: skip
    assert code == 2
    assert "a.yaml:3: rules[0].effect" in err


@pytest.mark.parametrize("api", sorted(policy_cli.API_KEYS))
def test_explain_every_api_in_the_table_is_allowed_for_the_admin_group(api: str) -> None:
    code, out, _ = run(
        "explain", "--dir", str(POLICIES), "--principal", "root", "--group", "dev-admins",
        "--api", api, "--topic", "t", "--consumer-group", "g", "--transactional-id", "x",
    )  # fmt: skip
    assert code == 0
    assert "DENY" not in out
    decisions = [line.strip() for line in out.splitlines() if line.strip().startswith("ALLOW ")]
    by_rule = [line for line in decisions if "allowed by rule admins-all" in line]
    either = [line for line in decisions if line.startswith("ALLOW any one of")]
    assert len(by_rule) + len(either) == len(decisions)


def test_explain_knows_every_api_the_gateway_authorizes() -> None:
    assert set(policy_cli.API_KEYS.values()) == set(TABLE)


GRANTS = """\
rules:
  - id: app-topics
    effect: allow
    subjects: {principals: [app]}
    resources: [{type: topic, prefix: app-}]
    operations: [read, write, create]
  - id: app-groups
    effect: allow
    subjects: {principals: [app]}
    resources: [{type: group, prefix: app-}]
    operations: [read]
  - id: ops-create
    effect: allow
    subjects: {principals: [ops]}
    resources: [{type: cluster}]
    operations: [create]
"""


@pytest.fixture
def grants_dir(tmp_path: Path) -> Path:
    (tmp_path / "grants.yaml").write_text(GRANTS)
    return tmp_path


def test_explain_offset_commit_checks_the_group_for_the_request_and_the_topic_per_item(
    grants_dir: Path,
) -> None:
    code, out, _ = run(
        "explain", "--dir", str(grants_dir), "--principal", "app", "--api", "OffsetCommit",
        "--topic", "app-orders", "--consumer-group", "app-billing",
    )  # fmt: skip
    assert code == 0
    assert "OffsetCommit v10:" in out
    group_line = "  group 'app-billing' (a denial fails the whole request):\n"
    assert group_line + "    ALLOW read on group 'app-billing' allowed by rule app-groups" in out
    topic_line = "  topic 'app-orders' (a denial fails this item):\n"
    assert topic_line + "    ALLOW read on topic 'app-orders' allowed by rule app-topics" in out


def test_explain_offset_commit_denied_group_denies_the_request(grants_dir: Path) -> None:
    code, out, _ = run(
        "explain", "--dir", str(grants_dir), "--principal", "app", "--api", "OffsetCommit",
        "--topic", "app-orders", "--consumer-group", "billing",
    )  # fmt: skip
    assert code == 1
    assert "DENY  read on group 'billing': no rule allows it for 'app'" in out
    assert out.rstrip().endswith("OffsetCommit: DENIED")


def test_explain_create_topics_shows_the_topic_grant_that_allowed_it(grants_dir: Path) -> None:
    code, out, _ = run(
        "explain", "--dir", str(grants_dir), "--principal", "app", "--api", "CreateTopics",
        "--topic", "app-new",
    )  # fmt: skip
    assert code == 0
    assert (
        "ALLOW any one of: create on cluster 'kafka-cluster' or create on topic 'app-new'; "
        "allowed by create on topic 'app-new'"
    ) in out
    assert "DENY  create on cluster 'kafka-cluster': no rule allows it for 'app'" in out
    assert "ALLOW create on topic 'app-new' allowed by rule app-topics" in out


def test_explain_create_topics_shows_the_cluster_grant_that_allowed_it(grants_dir: Path) -> None:
    code, out, _ = run(
        "explain", "--dir", str(grants_dir), "--principal", "ops", "--api", "CreateTopics",
        "--topic", "anything",
    )  # fmt: skip
    assert code == 0
    assert "allowed by create on cluster 'kafka-cluster'" in out
    assert "ALLOW create on cluster 'kafka-cluster' allowed by rule ops-create" in out


def test_explain_create_topics_without_either_grant_lists_both_choices(grants_dir: Path) -> None:
    code, out, _ = run(
        "explain", "--dir", str(grants_dir), "--principal", "app", "--api", "CreateTopics",
        "--topic", "other",
    )  # fmt: skip
    assert code == 1
    assert (
        "DENY  any one of: create on cluster 'kafka-cluster' or create on topic 'other'; "
        "none is allowed"
    ) in out
    assert out.rstrip().endswith("CreateTopics: DENIED")


def test_explain_idempotent_init_producer_id_is_allowed_by_write_on_some_topic(
    grants_dir: Path,
) -> None:
    code, out, _ = run(
        "explain", "--dir", str(grants_dir), "--principal", "app", "--api", "InitProducerId"
    )  # fmt: skip
    assert code == 0
    assert "allowed by write on some topic" in out
    assert "ALLOW write on some topic allowed by rule app-topics" in out


def test_explain_transactional_init_producer_id_checks_the_transactional_id(
    grants_dir: Path,
) -> None:
    code, out, _ = run(
        "explain", "--dir", str(grants_dir), "--principal", "app", "--api", "InitProducerId",
        "--transactional-id", "app-tx",
    )  # fmt: skip
    assert code == 1
    assert "DENY  write on transactional_id 'app-tx': no rule allows it for 'app'" in out


def test_explain_describe_configs_without_topic_or_group_asks_about_the_broker(
    grants_dir: Path,
) -> None:
    code, out, _ = run(
        "explain", "--dir", str(grants_dir), "--principal", "app", "--api", "DescribeConfigs"
    )  # fmt: skip
    assert code == 1
    assert "  cluster '0' (a denial fails this item):" in out
    assert "DENY  describe_configs on cluster 'kafka-cluster'" in out


def test_explain_api_without_checks_is_allowed_and_says_so(grants_dir: Path) -> None:
    code, out, _ = run(
        "explain", "--dir", str(grants_dir), "--principal", "nobody", "--api", "DescribeCluster"
    )  # fmt: skip
    assert code == 0
    assert "DescribeCluster v2: nothing to check" in out


def test_explain_fetch_without_a_topic_is_a_usage_error(grants_dir: Path) -> None:
    code, out, err = run(
        "explain", "--dir", str(grants_dir), "--principal", "app", "--api", "Fetch"
    )  # fmt: skip
    assert code == 2
    assert out == ""
    assert "--api Fetch needs --topic" in err


@pytest.mark.parametrize("api", sorted(policy_cli.API_KEYS))
def test_request_bodies_name_only_the_given_resources(api: str) -> None:
    key = policy_cli.API_KEYS[api]
    names = Names("orders", "billing", "tx-1")
    body = request_body(key, version_for(key), names)
    items = required_actions(key, body, {TOPIC_ID: "orders"})
    named = {
        (choice.resource_type, choice.name)
        for item in items
        for check in item.checks
        for choice in check.choices
        if isinstance(choice, Action)
    }
    allowed = {
        (ResourceType.TOPIC, "orders"),
        (ResourceType.GROUP, "billing"),
        (ResourceType.TRANSACTIONAL_ID, "tx-1"),
        (ResourceType.CLUSTER, CLUSTER_NAME),
    }
    assert named <= allowed
