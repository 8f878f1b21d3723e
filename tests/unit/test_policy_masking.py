"""Masking rules in the policy files: validated with file, line and field; matched by
topic, side, subjects and exemptions."""

from __future__ import annotations

import pytest

from gateway.errors import PolicyError
from gateway.identity import Identity
from gateway.policy.loader import build_policy
from gateway.policy.masking import masking_for

CUSTOMERS = b"""
masking:
  - id: customers-pii
    topics: [{literal: customers}, {prefix: "pii."}]
    subjects: {groups: [analysts]}
    exempt: {principals: [dpo]}
    value:
      format: avro
      fields:
        - {path: email, method: hash}
        - {path: card_number, method: partial, keep_last: 4}
        - {path: address.street, method: redact, replacement: "(hidden)"}
    headers:
      - {name: x-ssn, method: drop}
  - id: notes-text
    topics: [{glob: "notes-*"}]
    apply_on: [fetch, produce]
    value: {format: text, detectors: [card, email], method: partial}
"""

ANALYST = Identity("ann", "PLAIN", groups=("analysts",))
DPO = Identity("dpo", "PLAIN", groups=("analysts",))
APP = Identity("app", "SCRAM-SHA-256")


def problems(text: bytes) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        build_policy({"policies/m.yaml": text})
    return list(caught.value.problems)


def test_masking_rules_load_with_their_source_line() -> None:
    policy = build_policy({"policies/m.yaml": CUSTOMERS})
    first, second = policy.masking
    assert first.id == "customers-pii" and first.source == "policies/m.yaml:3"
    assert second.source == "policies/m.yaml:15"
    assert first.rule.value is not None
    assert [f.path for f in first.rule.value.fields] == ["email", "card_number", "address.street"]


@pytest.mark.parametrize(
    ("who", "topic", "side", "expected"),
    [
        (ANALYST, "customers", "fetch", ["customers-pii"]),
        (ANALYST, "pii.cards", "fetch", ["customers-pii"]),
        (ANALYST, "customers", "produce", []),  # fetch only by default
        (DPO, "customers", "fetch", []),  # exempt
        (APP, "customers", "fetch", []),  # not a subject
        (APP, "notes-1", "produce", ["notes-text"]),  # no subjects: everyone
        (ANALYST, "orders", "fetch", []),
    ],
)
def test_a_rule_applies_by_topic_side_subjects_and_exemptions(
    who: Identity, topic: str, side: str, expected: list[str]
) -> None:
    policy = build_policy({"policies/m.yaml": CUSTOMERS})
    assert [r.id for r in masking_for(policy.masking, who, topic, side)] == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "value: {format: avro, fields: [{path: email, method: shred}]}",
            "policies/m.yaml:5: masking[0].value.fields[0].method: Input should be",
        ),
        (
            "value: {format: text, fields: [{path: email, method: hash}]}",
            "policies/m.yaml:5: masking[0].value: format text masks detectors, not fields",
        ),
        (
            "value: {format: json}",
            "policies/m.yaml:5: masking[0].value: format json: list at least one field",
        ),
        (
            "value: {format: text, custom: [{name: bad, pattern: '(['}]}",
            "policies/m.yaml:5: masking[0].value.custom[0].pattern: not a regular expression",
        ),
        ("apply_on: []", "policies/m.yaml:5: masking[0].apply_on: list at least one"),
        (
            "description: nothing",
            "policies/m.yaml:3: masking[0]: give at least one of value, key, headers",
        ),
    ],
)
def test_a_bad_masking_rule_names_file_line_and_field(body: str, expected: str) -> None:
    text = f"""
masking:
  - id: m1
    topics: [{{literal: t}}]
    {body}
""".encode()
    (found,) = problems(text)
    assert found.startswith(expected), found


def test_a_masking_id_may_not_repeat_a_rule_id() -> None:
    text = b"""
rules:
  - id: same
    effect: allow
    subjects: {principals: [a]}
    resources: [{type: topic, literal: t}]
    operations: [read]
masking:
  - id: same
    topics: [{literal: t}]
    require_schema: true
"""
    (found,) = problems(text)
    assert "masking[0].id: masking rule id 'same' is already used at policies/m.yaml:3" in found
