"""Policy files: every shipped example validates, and every mistake is reported with its
file, line and field, the whole set at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError, PolicyError
from gateway.policy import ResourceType
from gateway.policy.loader import build_policy, load_policy_dir, policy_version

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"

GOOD = b"""\
rules:
  - id: r1
    effect: allow
    subjects: {principals: [alice]}
    resources:
      - {type: topic, literal: orders}
    operations: [read]
"""


def problems(sources: dict[str, bytes]) -> tuple[str, ...]:
    with pytest.raises(PolicyError) as caught:
        build_policy(sources)
    return caught.value.problems


def one_problem(text: str, name: str = "policies/p.yaml") -> str:
    found = problems({name: text.encode()})
    assert len(found) == 1, found
    return found[0]


def rule(body: str) -> str:
    """A file with one rule whose first line is ``id: r1`` on line 2."""
    return "rules:\n  - id: r1\n" + body


VALID_BODY = (
    "    effect: allow\n"  # line 3
    "    subjects: {principals: [alice]}\n"  # line 4
    "    resources:\n"  # line 5
    "      - {type: topic, literal: orders}\n"  # line 6
    "    operations: [read]\n"  # line 7
)


@pytest.mark.parametrize("path", sorted(POLICIES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_policy_file_validates(path: Path) -> None:
    policy = build_policy({str(path): path.read_bytes()})
    assert policy.rules or policy.safeguards or policy.masking


def test_shipped_policy_directory_loads_whole_with_unique_ids() -> None:
    policy = load_policy_dir(POLICIES)
    names = {Path(f).name for f in policy.files}
    assert {"admins.yaml", "apps.yaml", "analysts.yaml", "masking.yaml", "safeguards.yaml"} <= names
    ids = [r.id for r in (*policy.rules, *policy.safeguards, *policy.masking)]
    assert len(ids) == len(set(ids))
    assert {s.id for s in policy.safeguards} >= {"demo-topic-bounds", "payments-protected"}


def test_valid_file_compiles_rules_with_their_source_line() -> None:
    policy = build_policy({"policies/a.yaml": GOOD})
    (compiled,) = policy.rules
    assert compiled.id == "r1"
    assert compiled.allow
    assert compiled.source == "policies/a.yaml:2"
    assert [r.id for r in policy.candidates(ResourceType.TOPIC, "orders")] == ["r1"]
    assert list(policy.candidates(ResourceType.TOPIC, "payments")) == []


def test_operations_and_types_accept_kafka_upper_case_names() -> None:
    text = rule(VALID_BODY.replace("[read]", "[READ, Describe]").replace("topic", "TOPIC"))
    policy = build_policy({"p.yaml": text.encode()})
    assert {op.value for op in policy.rules[0].operations} == {"read", "describe"}


def test_bad_effect_names_file_line_and_field() -> None:
    text = rule(VALID_BODY.replace("effect: allow", "effect: alow"))
    assert one_problem(text).startswith("policies/p.yaml:3: rules[0].effect: ")


def test_unknown_key_is_refused_at_its_line() -> None:
    text = rule(VALID_BODY + "    subject: {principals: [bob]}\n")
    found = one_problem(text)
    assert found.startswith("policies/p.yaml:8: rules[0].subject: ")
    assert "Extra inputs are not permitted" in found


def test_unknown_operation_names_its_list_position() -> None:
    text = rule(VALID_BODY.replace("[read]", "[read, fly]"))
    assert one_problem(text).startswith("policies/p.yaml:7: rules[0].operations[1]: ")


def test_unknown_resource_type_is_refused() -> None:
    text = rule(VALID_BODY.replace("type: topic", "type: queue"))
    assert one_problem(text).startswith("policies/p.yaml:6: rules[0].resources[0].type: ")


def test_resource_with_two_patterns_is_refused() -> None:
    text = rule(VALID_BODY.replace("literal: orders", "literal: orders, prefix: ord"))
    found = one_problem(text)
    assert found.startswith("policies/p.yaml:6: rules[0].resources[0]: ")
    assert "exactly one of literal, prefix, glob" in found


def test_resource_without_pattern_is_refused() -> None:
    text = rule(VALID_BODY.replace("{type: topic, literal: orders}", "{type: group}"))
    assert "exactly one of literal, prefix, glob" in one_problem(text)


def test_cluster_resource_needs_no_name_but_refuses_another_name() -> None:
    cluster = VALID_BODY.replace("{type: topic, literal: orders}", "{type: cluster}")
    assert build_policy({"p.yaml": rule(cluster).encode()}).rules
    named = VALID_BODY.replace("{type: topic, literal: orders}", "{type: cluster, literal: c1}")
    found = one_problem(rule(named))
    assert found.startswith("policies/p.yaml:6: rules[0].resources[0]: ")
    assert "kafka-cluster" in found


def test_rule_without_subjects_is_refused() -> None:
    text = rule(VALID_BODY.replace("{principals: [alice]}", "{}"))
    found = one_problem(text)
    assert found.startswith("policies/p.yaml:4: rules[0].subjects: ")
    assert "at least one of principals" in found


def test_empty_operations_are_refused_once() -> None:
    text = rule(VALID_BODY.replace("[read]", "[]"))
    assert one_problem(text) == "policies/p.yaml:7: rules[0].operations: list at least one"


def test_missing_field_is_reported_at_its_rule() -> None:
    text = rule(VALID_BODY.replace("    effect: allow\n", ""))
    found = one_problem(text)
    assert found.startswith("policies/p.yaml:2: rules[0].effect: ")
    assert "Field required" in found


def test_bad_rule_id_is_refused() -> None:
    text = "rules:\n  - id: 'has space'\n" + VALID_BODY
    assert one_problem(text).startswith("policies/p.yaml:2: rules[0].id: ")


def test_a_key_given_twice_is_refused_not_silently_overridden() -> None:
    text = rule(VALID_BODY + "    effect: deny\n")
    assert one_problem(text) == "policies/p.yaml:8: rules[0].effect: this key is given twice"


def test_policy_is_immutable() -> None:
    policy = build_policy({"a.yaml": GOOD})
    with pytest.raises(AttributeError):
        policy.version = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        policy.index[ResourceType.TOPIC] = policy.index[ResourceType.GROUP]  # type: ignore[index]
    with pytest.raises(AttributeError):
        policy.rules[0].allow = False  # type: ignore[misc]


def test_yaml_syntax_error_names_its_line() -> None:
    found = one_problem("rules:\n  - id: r1\n    effect: [allow\n")
    assert found.startswith("policies/p.yaml:4: not valid YAML: ")


def test_empty_file_is_refused() -> None:
    assert one_problem("") == (
        "policies/p.yaml:1: the file is empty; it needs a rules: or safeguards: list"
    )


def test_top_level_must_be_a_mapping_with_rules_or_safeguards() -> None:
    assert one_problem("- id: r1\n").startswith("policies/p.yaml:1: (top level): ")
    assert problems({"p.yaml": b"other: 1\n"}) == (
        "p.yaml:1: (top level): give a rules: list, a safeguards: list, a masking: list or more",
    )
    assert problems({"p.yaml": b"rules: []\nother: 1\n"}) == (
        "p.yaml:2: other: Extra inputs are not permitted",
    )


def test_non_utf8_file_is_refused() -> None:
    found = problems({"p.yaml": b"rules: \xff\n"})
    assert found[0].startswith("p.yaml: not UTF-8 text")


def test_duplicate_id_in_one_file_names_both_lines() -> None:
    text = rule(VALID_BODY) + "  - id: r1\n" + VALID_BODY
    assert one_problem(text) == (
        "policies/p.yaml:8: rules[1].id: rule id 'r1' is already used at policies/p.yaml:2"
    )


def test_duplicate_id_across_files_names_both_files() -> None:
    found = problems({"policies/b.yaml": GOOD, "policies/a.yaml": GOOD})
    assert found == (
        "policies/b.yaml:2: rules[0].id: rule id 'r1' is already used at policies/a.yaml:2",
    )


def test_every_problem_of_every_file_is_reported_together() -> None:
    found = problems(
        {
            "a.yaml": rule(VALID_BODY.replace("allow", "maybe")).encode(),
            "b.yaml": rule(VALID_BODY.replace("[read]", "[fly]")).encode(),
        }
    )
    assert [p.split(":")[0] for p in found] == ["a.yaml", "b.yaml"]


def test_policy_error_is_a_config_error_listing_every_problem() -> None:
    with pytest.raises(ConfigError, match=r"(?s)invalid policy:.*a\.yaml:3: rules\[0\]\.effect"):
        build_policy({"a.yaml": rule(VALID_BODY.replace("allow", "maybe")).encode()})


def test_version_is_a_content_hash_independent_of_directory() -> None:
    one = policy_version({"/etc/gw/policies/a.yaml": GOOD})
    assert one == policy_version({"policies/a.yaml": GOOD})
    assert one != policy_version({"policies/a.yaml": GOOD + b"\n# changed\n"})
    assert one != policy_version({"policies/b.yaml": GOOD})
    assert len(one) == 12
    assert build_policy({"a.yaml": GOOD}).version == one


def test_version_does_not_depend_on_the_order_files_are_given() -> None:
    other = GOOD.replace(b"r1", b"r2")
    assert policy_version({"a.yaml": GOOD, "b.yaml": other}) == policy_version(
        {"b.yaml": other, "a.yaml": GOOD}
    )


def test_load_dir_reads_only_yaml_files_sorted(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_bytes(GOOD.replace(b"r1", b"r2"))
    (tmp_path / "a.yaml").write_bytes(GOOD)
    (tmp_path / "notes.txt").write_text("not a policy")
    policy = load_policy_dir(tmp_path)
    assert [Path(f).name for f in policy.files] == ["a.yaml", "b.yaml"]
    assert [r.id for r in policy.rules] == ["r1", "r2"]


def test_load_dir_without_policy_files_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no \\*.yaml policy files"):
        load_policy_dir(tmp_path)


def test_load_missing_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="not a directory"):
        load_policy_dir(tmp_path / "absent")
