"""Properties of decide() over generated policies, identities and actions: deny always
wins, taking away an allow or adding a deny never grants, the answer is a function of
(policy, identity, action) alone, and the index answers as a plain scan of every rule."""

from __future__ import annotations

import fnmatch
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.identity import Identity
from gateway.policy import CLUSTER_NAME, Action, Operation, ResourceType
from gateway.policy.decide import IMPLIED_BY, decide, decide_any
from gateway.policy.loader import Policy
from gateway.policy.model import Resource, Rule

# Small alphabets so that generated names, prefixes and globs collide often.
names = st.text(alphabet="ab.", min_size=0, max_size=4)
principals = st.sampled_from(["alice", "bob", "carol"])
groups = st.sampled_from(["g1", "g2"])
listeners = st.sampled_from(["l1", "l2"])
mechanisms = st.sampled_from(["PLAIN", "SCRAM-SHA-256"])
types = st.sampled_from(list(ResourceType))
operations = st.sampled_from(list(Operation))

identities = st.builds(
    Identity,
    principal=principals,
    mechanism=mechanisms,
    groups=st.lists(groups, max_size=2, unique=True).map(tuple),
    listener=listeners,
)


@st.composite
def actions(draw: st.DrawFn) -> Action:
    kind = draw(types)
    name = CLUSTER_NAME if kind is ResourceType.CLUSTER else draw(names)
    return Action(kind, name, draw(operations))


@st.composite
def resources(draw: st.DrawFn) -> dict[str, str]:
    kind = draw(types)
    if kind is ResourceType.CLUSTER:
        return {"type": "cluster"}
    pattern = draw(st.sampled_from(["literal", "prefix", "glob"]))
    if pattern == "literal":
        value = draw(st.one_of(st.just("*"), names.filter(bool)))
    elif pattern == "prefix":
        value = draw(names.filter(bool))
    else:
        value = draw(st.text(alphabet="ab.*?", min_size=1, max_size=4))
    return {"type": kind.value, pattern: value}


def with_star(values: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    return st.lists(st.one_of(values, st.just("*")), max_size=2, unique=True)


@st.composite
def subjects(draw: st.DrawFn) -> dict[str, list[str]]:
    found = {
        "principals": draw(with_star(principals)),
        "groups": draw(with_star(groups)),
        "listeners": draw(with_star(listeners)),
        "mechanisms": draw(with_star(mechanisms)),
    }
    if not any(found.values()):
        found["principals"] = [draw(principals)]
    return found


def rule_data(rule_id: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "id": st.just(rule_id),
            "effect": st.sampled_from(["allow", "deny"]),
            "subjects": subjects(),
            "resources": st.lists(resources(), min_size=1, max_size=2),
            "operations": st.lists(
                operations.map(lambda o: o.value), min_size=1, max_size=3, unique=True
            ),
        }
    )


@st.composite
def rule_lists(draw: st.DrawFn, max_size: int = 6) -> list[Rule]:
    count = draw(st.integers(0, max_size))
    return [Rule.model_validate(draw(rule_data(f"r{n}"))) for n in range(count)]


def build(rules: list[Rule]) -> Policy:
    return Policy.from_rules(rules, version="v")


def exact_deny(identity: Identity, action: Action) -> Rule:
    """A deny rule that names this identity and action (a resource name can't be empty,
    as in Kafka, so the empty name is denied through the wildcard)."""
    name = {"literal": action.name or "*"}
    if action.resource_type is ResourceType.CLUSTER:
        name = {}
    return Rule.model_validate(
        {
            "id": "exact-deny",
            "effect": "deny",
            "subjects": {"principals": [identity.principal]},
            "resources": [{"type": action.resource_type.value, **name}],
            "operations": [action.operation.value],
        }
    )


# A plain reading of the rules, independent of the index: the oracle.
def _resource_matches(resource: Resource, action: Action) -> bool:
    if resource.type is not action.resource_type:
        return False
    if resource.kind == "prefix":
        return action.name.startswith(resource.pattern)
    if resource.kind == "glob":
        return fnmatch.fnmatchcase(action.name, resource.pattern)
    return resource.pattern in ("*", action.name)


def _subject_matches(rule: Rule, identity: Identity) -> bool:
    s = rule.subjects
    return (
        any("*" in names for names in (s.principals, s.groups, s.listeners, s.mechanisms))
        or identity.principal in s.principals
        or identity.listener in s.listeners
        or identity.mechanism.upper() in {m.upper() for m in s.mechanisms}
        or bool(set(identity.groups) & set(s.groups))
    )


def _operation_matches(rule: Rule, op: Operation) -> bool:
    ops = set(rule.operations)
    if Operation.ALL in ops or op in ops:
        return True
    return rule.effect == "allow" and bool(ops & IMPLIED_BY.get(op, frozenset()))


def reference(rules: list[Rule], identity: Identity, action: Action) -> tuple[bool, set[str]]:
    """(allowed, the ids of the rules that could have made the decision)."""
    hits = [
        r
        for r in rules
        if _subject_matches(r, identity)
        and _operation_matches(r, action.operation)
        and any(_resource_matches(res, action) for res in r.resources)
    ]
    denies = {r.id for r in hits if r.effect == "deny"}
    if denies:
        return False, denies
    allows = {r.id for r in hits if r.effect == "allow"}
    return bool(allows), allows


@settings(max_examples=200, deadline=None)
@given(rule_lists(), identities, actions())
def test_index_answers_as_a_plain_scan_of_every_rule(
    rules: list[Rule], identity: Identity, action: Action
) -> None:
    decision = decide(build(rules), identity, action)
    expected, could_decide = reference(rules, identity, action)
    assert decision.allowed == expected
    if could_decide:
        assert decision.rule_id in could_decide
    else:
        assert decision.rule_id is None


@settings(max_examples=100, deadline=None)
@given(rule_lists(), identities, actions())
def test_deny_always_wins(rules: list[Rule], identity: Identity, action: Action) -> None:
    deny = exact_deny(identity, action)
    for ordered in ([deny, *rules], [*rules, deny]):
        decision = decide(build(ordered), identity, action)
        assert not decision.allowed
        assert decision.rule_id is not None
        assert decision.rule_id == "exact-deny" or any(
            r.id == decision.rule_id and r.effect == "deny" for r in rules
        )


@settings(max_examples=100, deadline=None)
@given(rule_lists(), identities, actions(), st.data())
def test_removing_an_allow_rule_never_grants_anything(
    rules: list[Rule], identity: Identity, action: Action, data: st.DataObject
) -> None:
    allows = [n for n, r in enumerate(rules) if r.effect == "allow"]
    if not allows:
        return
    drop = data.draw(st.sampled_from(allows))
    fewer = rules[:drop] + rules[drop + 1 :]
    if decide(build(fewer), identity, action).allowed:
        assert decide(build(rules), identity, action).allowed


@settings(max_examples=100, deadline=None)
@given(rule_lists(), identities, actions(), rule_data("added"), st.integers(0, 6))
def test_adding_a_deny_rule_never_grants_anything(
    rules: list[Rule], identity: Identity, action: Action, added: dict[str, Any], at: int
) -> None:
    deny = Rule.model_validate({**added, "effect": "deny"})
    more = rules[:at] + [deny] + rules[at:]
    if decide(build(more), identity, action).allowed:
        assert decide(build(rules), identity, action).allowed


@settings(max_examples=100, deadline=None)
@given(rule_lists(), identities, actions())
def test_decision_depends_only_on_policy_identity_and_action(
    rules: list[Rule], identity: Identity, action: Action
) -> None:
    first = decide(build(rules), identity, action)
    # Equal inputs built afresh (no shared objects) give an equal decision, every time.
    copies = [Rule.model_validate(r.model_dump(mode="json")) for r in rules]
    same_identity = Identity(**{f: getattr(identity, f) for f in identity.__slots__})
    same_action = Action(action.resource_type, action.name, action.operation)
    policy = build(copies)
    for _ in range(2):
        assert decide(policy, same_identity, same_action) == first


@settings(max_examples=100, deadline=None)
@given(rule_lists(), identities, actions(), st.randoms(use_true_random=False))
def test_whether_allowed_does_not_depend_on_rule_order(
    rules: list[Rule], identity: Identity, action: Action, random: Any
) -> None:
    shuffled = list(rules)
    random.shuffle(shuffled)
    assert (
        decide(build(shuffled), identity, action).allowed
        == decide(build(rules), identity, action).allowed
    )


@settings(max_examples=150, deadline=None)
@given(rule_lists(), identities, actions())
def test_a_grant_on_one_resource_is_a_grant_on_some_resource_of_its_type(
    rules: list[Rule], identity: Identity, action: Action
) -> None:
    # decide_any answers Kafka's authorizeByResourceType (an idempotent producer's
    # WRITE on any topic): whatever decide allows for one name, it must allow too.
    policy = build(rules)
    if decide(policy, identity, action).allowed:
        assert decide_any(policy, identity, action.resource_type, action.operation).allowed


@settings(max_examples=100, deadline=None)
@given(rule_lists(), identities, actions())
def test_a_deny_of_every_name_denies_every_resource_of_its_type(
    rules: list[Rule], identity: Identity, action: Action
) -> None:
    everything = Rule.model_validate(
        {
            "id": "deny-every-name",
            "effect": "deny",
            "subjects": {"principals": ["*"]},
            "resources": [
                {"type": action.resource_type.value}
                if action.resource_type.value == "cluster"
                else {"type": action.resource_type.value, "literal": "*"}
            ],
            "operations": [action.operation.value],
        }
    )
    policy = build([*rules, everything])
    assert not decide_any(policy, identity, action.resource_type, action.operation).allowed
