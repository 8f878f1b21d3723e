"""``python -m gateway policy check|explain``: exit codes, summaries, precise errors."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import policy_cli
from gateway.__main__ import main as gateway_main

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


@pytest.mark.parametrize("api", sorted(policy_cli.API_CHECKS))
def test_explain_every_api_in_the_table_is_allowed_for_the_admin_group(api: str) -> None:
    code, out, _ = run(
        "explain", "--dir", str(POLICIES), "--principal", "root", "--group", "dev-admins",
        "--api", api, "--topic", "t", "--consumer-group", "g", "--transactional-id", "x",
    )  # fmt: skip
    assert code == 0
    # One line per choice of every check, each decided by the admins' rule.
    choices = sum(len(check) for check in policy_cli.API_CHECKS[api])
    assert out.count("allowed by rule admins-all") == choices


def test_explain_a_check_is_met_by_any_one_of_its_choices(policy_dir: Path) -> None:
    (policy_dir / "a.yaml").write_text(
        """
rules:
  - id: create-on-cluster
    effect: allow
    subjects: {principals: [ops]}
    resources: [{type: cluster}]
    operations: [create]
"""
    )
    code, out, _ = run(
        "explain", "--dir", str(policy_dir), "--principal", "ops", "--api", "CreateTopics",
        "--topic", "anything",
    )  # fmt: skip
    assert code == 0
    assert "ALLOW create on the cluster" in out or "ALLOW create on cluster" in out
    assert "   or DENY  create on topic 'anything'" in out
    assert out.rstrip().endswith("CreateTopics: ALLOWED")
