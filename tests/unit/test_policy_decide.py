"""decide(): Kafka's authorizer semantics over policy rules, by example."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.identity import Identity
from gateway.policy import CLUSTER_NAME, Action, Operation, ResourceType
from gateway.policy.decide import decide
from gateway.policy.loader import Policy, build_policy, load_policy_dir
from gateway.policy.model import Rule

T, G, X, C = (
    ResourceType.TOPIC,
    ResourceType.GROUP,
    ResourceType.TRANSACTIONAL_ID,
    ResourceType.CLUSTER,
)
O = Operation  # noqa: E741 - reads like Kafka's AclOperation in the tables below

ALICE = Identity(principal="alice", mechanism="SCRAM-SHA-256", listener="sasl")


def make_rule(
    rule_id: str,
    effect: str = "allow",
    *,
    subjects: dict[str, list[str]] | None = None,
    resources: list[dict[str, str]] | None = None,
    operations: list[str] | None = None,
) -> Rule:
    data: dict[str, Any] = {
        "id": rule_id,
        "effect": effect,
        "subjects": subjects or {"principals": ["alice"]},
        "resources": resources or [{"type": "topic", "literal": "orders"}],
        "operations": operations or ["read"],
    }
    return Rule.model_validate(data)


def policy(*rules: Rule) -> Policy:
    return Policy.from_rules(rules, version="v1")


def allowed(p: Policy, action: Action, identity: Identity = ALICE) -> bool:
    return decide(p, identity, action).allowed


def test_no_rule_means_deny_with_no_rule_id() -> None:
    decision = decide(policy(), ALICE, Action(T, "orders", O.READ))
    assert not decision.allowed
    assert decision.rule_id is None
    assert decision.policy_version == "v1"
    assert "no rule allows" in decision.reason


def test_matching_allow_grants_and_names_its_rule() -> None:
    decision = decide(policy(make_rule("r-read")), ALICE, Action(T, "orders", O.READ))
    assert decision.allowed
    assert decision.rule_id == "r-read"
    assert "allowed by rule r-read" in decision.reason


def test_deny_wins_over_allow_whatever_the_order() -> None:
    allow = make_rule("allow-all", operations=["all"])
    deny = make_rule("deny-read", "deny", operations=["read"])
    for rules in ((allow, deny), (deny, allow)):
        decision = decide(policy(*rules), ALICE, Action(T, "orders", O.READ))
        assert not decision.allowed
        assert decision.rule_id == "deny-read"


def test_allow_for_another_operation_does_not_grant() -> None:
    assert not allowed(policy(make_rule("r")), Action(T, "orders", O.WRITE))


@pytest.mark.parametrize("granted", ["read", "write", "delete", "alter", "describe"])
def test_describe_is_implied_by_read_write_delete_alter(granted: str) -> None:
    p = policy(make_rule("r", operations=[granted]))
    assert allowed(p, Action(T, "orders", O.DESCRIBE))


@pytest.mark.parametrize("granted", ["create", "alter_configs", "describe_configs"])
def test_describe_is_not_implied_by_other_operations(granted: str) -> None:
    p = policy(make_rule("r", operations=[granted]))
    assert not allowed(p, Action(T, "orders", O.DESCRIBE))


def test_describe_configs_is_implied_by_alter_configs_only() -> None:
    assert allowed(
        policy(make_rule("r", operations=["alter_configs"])),
        Action(T, "orders", O.DESCRIBE_CONFIGS),
    )
    assert not allowed(
        policy(make_rule("r", operations=["alter"])), Action(T, "orders", O.DESCRIBE_CONFIGS)
    )


def test_implication_does_not_run_backwards() -> None:
    p = policy(make_rule("r", operations=["describe"]))
    assert not allowed(p, Action(T, "orders", O.READ))


def test_idempotent_write_is_not_implied_by_write() -> None:
    # Kafka's authorizer implies only describe and describe_configs; whether WRITE on a
    # topic is enough for an idempotent producer is decided per API, not here.
    p = policy(make_rule("r", resources=[{"type": "cluster"}], operations=["write"]))
    assert not allowed(p, Action(C, CLUSTER_NAME, O.IDEMPOTENT_WRITE))


def test_deny_of_read_does_not_deny_describe() -> None:
    # As in Kafka: implication applies to allow rules only.
    p = policy(
        make_rule("allow", operations=["read"]),
        make_rule("deny", "deny", operations=["read"]),
    )
    assert not allowed(p, Action(T, "orders", O.READ))
    assert allowed(p, Action(T, "orders", O.DESCRIBE))


def test_deny_all_denies_every_operation() -> None:
    p = policy(
        make_rule("allow", operations=["all"]),
        make_rule("deny", "deny", operations=["all"]),
    )
    for op in Operation:
        assert not allowed(p, Action(T, "orders", op))


def test_allow_all_grants_every_operation() -> None:
    p = policy(make_rule("r", operations=["all"]))
    for op in Operation:
        assert allowed(p, Action(T, "orders", op))


def test_resource_type_must_match() -> None:
    p = policy(make_rule("r", resources=[{"type": "group", "literal": "orders"}]))
    assert not allowed(p, Action(T, "orders", O.READ))
    assert allowed(p, Action(G, "orders", O.READ))


def test_literal_matches_only_the_exact_name() -> None:
    p = policy(make_rule("r"))
    assert allowed(p, Action(T, "orders", O.READ))
    assert not allowed(p, Action(T, "orders2", O.READ))
    assert not allowed(p, Action(T, "Orders", O.READ))


def test_literal_wildcard_matches_every_name() -> None:
    p = policy(make_rule("r", resources=[{"type": "topic", "literal": "*"}]))
    assert allowed(p, Action(T, "anything", O.READ))
    assert allowed(p, Action(T, "*", O.READ))


def test_prefix_matches_names_that_start_with_it() -> None:
    p = policy(make_rule("r", resources=[{"type": "topic", "prefix": "demo"}]))
    for name in ("demo", "demo-1", "demos"):
        assert allowed(p, Action(T, name, O.READ)), name
    for name in ("dem", "my-demo", ""):
        assert not allowed(p, Action(T, name, O.READ)), name


def test_several_prefix_lengths_are_all_considered() -> None:
    p = policy(
        make_rule("short", resources=[{"type": "topic", "prefix": "a"}]),
        make_rule("long", "deny", resources=[{"type": "topic", "prefix": "a.secret"}]),
    )
    assert allowed(p, Action(T, "a.public", O.READ))
    assert decide(p, ALICE, Action(T, "a.secret.x", O.READ)).rule_id == "long"


def test_glob_is_anchored_and_case_sensitive() -> None:
    p = policy(make_rule("r", resources=[{"type": "topic", "glob": "orders.*.v[12]"}]))
    assert allowed(p, Action(T, "orders.eu.v1", O.READ))
    assert allowed(p, Action(T, "orders.eu.x.v2", O.READ))
    assert not allowed(p, Action(T, "orders.eu.v3", O.READ))
    assert not allowed(p, Action(T, "x.orders.eu.v1", O.READ))
    assert not allowed(p, Action(T, "orders.eu.v1.old", O.READ))
    assert not allowed(p, Action(T, "ORDERS.eu.v1", O.READ))


def test_cluster_rule_without_name_matches_the_cluster() -> None:
    p = policy(make_rule("r", resources=[{"type": "cluster"}], operations=["idempotent_write"]))
    assert allowed(p, Action(C, CLUSTER_NAME, O.IDEMPOTENT_WRITE))


@pytest.mark.parametrize(
    ("subjects", "identity"),
    [
        ({"principals": ["alice"]}, ALICE),
        ({"principals": ["*"]}, Identity("anyone", "none")),
        ({"groups": ["analysts"]}, Identity("bob", "PLAIN", groups=("x", "analysts"))),
        ({"listeners": ["plaintext"]}, Identity("anonymous", "none", listener="plaintext")),
        ({"mechanisms": ["scram-sha-256"]}, ALICE),
        ({"principals": ["carol"], "groups": ["g"]}, Identity("dave", "PLAIN", groups=("g",))),
    ],
)
def test_a_rule_matches_an_identity_if_any_subject_matches(
    subjects: dict[str, list[str]], identity: Identity
) -> None:
    p = policy(make_rule("r", subjects=subjects))
    assert allowed(p, Action(T, "orders", O.READ), identity)


@pytest.mark.parametrize(
    ("subjects", "identity"),
    [
        ({"principals": ["alice"]}, Identity("alice2", "PLAIN")),
        ({"groups": ["analysts"]}, Identity("analysts", "PLAIN")),
        ({"listeners": ["plaintext"]}, Identity("anonymous", "none", listener="sasl")),
        ({"mechanisms": ["PLAIN"]}, ALICE),
    ],
)
def test_a_rule_does_not_match_other_identities(
    subjects: dict[str, list[str]], identity: Identity
) -> None:
    p = policy(make_rule("r", subjects=subjects))
    assert not allowed(p, Action(T, "orders", O.READ), identity)


def test_deny_for_another_subject_does_not_deny() -> None:
    p = policy(
        make_rule("allow"),
        make_rule("deny-bob", "deny", subjects={"principals": ["bob"]}),
    )
    assert allowed(p, Action(T, "orders", O.READ))


def test_first_matching_rule_in_file_order_is_named() -> None:
    p = policy(make_rule("first"), make_rule("second"))
    assert decide(p, ALICE, Action(T, "orders", O.READ)).rule_id == "first"


def test_decision_carries_the_policy_content_version() -> None:
    text = b"""\
rules:
  - id: r
    effect: allow
    subjects: {principals: [alice]}
    resources: [{type: topic, literal: orders}]
    operations: [read]
"""
    p = build_policy({"a.yaml": text})
    decision = decide(p, ALICE, Action(T, "orders", O.READ))
    assert decision.policy_version == p.version
    assert "(a.yaml:2)" in decision.reason


def test_example_policy_grants_each_role_what_it_says() -> None:
    p = load_policy_dir(Path(__file__).resolve().parents[2] / "policies")
    admin = Identity("root", "SCRAM-SHA-256", groups=("dev-admins",))
    app = Identity("dev-client", "PLAIN", listener="sasl")
    analyst = Identity("ann", "OAUTHBEARER", groups=("analysts",))
    anonymous = Identity("anonymous", "none", listener="plaintext")
    assert allowed(p, Action(C, CLUSTER_NAME, O.ALTER_CONFIGS), admin)
    assert allowed(p, Action(T, "demo-events", O.WRITE), app)
    assert allowed(p, Action(G, "demo-consumers", O.READ), app)
    assert not allowed(p, Action(T, "orders", O.READ), app)
    assert allowed(p, Action(T, "orders", O.READ), analyst)
    assert allowed(p, Action(T, "orders", O.DESCRIBE), analyst)
    assert decide(p, analyst, Action(T, "orders", O.WRITE)).rule_id == "analysts-never-write"
    assert not allowed(p, Action(T, "payments", O.DESCRIBE), analyst)
    assert allowed(p, Action(T, "demo", O.WRITE), anonymous)
    assert not allowed(p, Action(T, "orders", O.DESCRIBE), anonymous)
    assert not allowed(p, Action(T, "demo", O.WRITE), Identity("anonymous", "none"))


def _claims_rule(claims: dict[str, list[str]]) -> Rule:
    return Rule.model_validate(
        {
            "id": "by-claim",
            "effect": "allow",
            "subjects": {"claims": claims},
            "resources": [{"type": "topic", "literal": "orders"}],
            "operations": ["read"],
        }
    )


def test_a_claims_subject_matches_a_token_claim_value() -> None:
    read = Action(T, "orders", O.READ)
    p = policy(_claims_rule({"department": ["payments", "sre"]}))
    payments = Identity("svc", "OAUTHBEARER", claims=(("department", "payments"),))
    other = Identity("svc", "OAUTHBEARER", claims=(("department", "marketing"),))
    assert allowed(p, read, payments)
    assert not allowed(p, read, other)
    # Same name and value from another source (a group) is not a claim.
    assert not allowed(p, read, Identity("svc", "PLAIN", groups=("payments",)))


def test_a_claims_wildcard_accepts_any_value_of_a_claim_the_token_has() -> None:
    read = Action(T, "orders", O.READ)
    p = policy(_claims_rule({"tenant": ["*"]}))
    assert allowed(p, read, Identity("svc", "OAUTHBEARER", claims=(("tenant", "t1"),)))
    assert not allowed(p, read, Identity("svc", "OAUTHBEARER", claims=(("other", "t1"),)))


def test_a_claims_subject_needs_accepted_values() -> None:
    with pytest.raises(ValueError, match="claims.department: list at least one"):
        _claims_rule({"department": []})
