"""The one decision function: may this identity perform this action under this policy?

Kafka's authorizer semantics (``StandardAuthorizerData.findResult`` in Kafka 3/4):

- a matching deny rule wins over any allow rule;
- no matching allow rule means deny;
- ``all`` in a rule matches every operation, for allow and deny alike;
- an *allow* of read, write, delete or alter implies describe, and an allow of
  alter_configs implies describe_configs. Implication never applies to deny: denying
  read does not deny describe, exactly as in Kafka.

Pure: the answer depends only on the policy, the identity and the action. No I/O, no
clock, no state.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.identity import Identity
from gateway.policy import Action, Operation, ResourceType
from gateway.policy.loader import CompiledRule, Policy

# For an allow rule: the rule operations that grant the requested one, besides itself
# and ALL.
IMPLIED_BY: dict[Operation, frozenset[Operation]] = {
    Operation.DESCRIBE: frozenset(
        {Operation.READ, Operation.WRITE, Operation.DELETE, Operation.ALTER}
    ),
    Operation.DESCRIBE_CONFIGS: frozenset({Operation.ALTER_CONFIGS}),
}


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer, with the rule that made it (None when nothing allowed it)."""

    allowed: bool
    rule_id: str | None
    policy_version: str
    reason: str


def _denies(rule: CompiledRule, operation: Operation) -> bool:
    return Operation.ALL in rule.operations or operation in rule.operations


def _allows(rule: CompiledRule, operation: Operation) -> bool:
    ops = rule.operations
    return (
        Operation.ALL in ops
        or operation in ops
        or not ops.isdisjoint(IMPLIED_BY.get(operation, frozenset()))
    )


def _describe(action: Action) -> str:
    return f"{action.operation.value} on {action.resource_type.value} {action.name!r}"


def decide(policy: Policy, identity: Identity, action: Action) -> Decision:
    """Decide ``action`` for ``identity``; deny wins, and no allow means deny."""
    deny: CompiledRule | None = None
    allow: CompiledRule | None = None
    for rule in policy.candidates(action.resource_type, action.name):
        if not rule.matches(identity):
            continue
        if rule.allow:
            if _allows(rule, action.operation) and (allow is None or rule.order < allow.order):
                allow = rule
        elif _denies(rule, action.operation) and (deny is None or rule.order < deny.order):
            deny = rule
    what = _describe(action)
    if deny is not None:
        return Decision(
            False, deny.id, policy.version, f"{what} denied by rule {deny.id} ({deny.source})"
        )
    if allow is not None:
        return Decision(
            True, allow.id, policy.version, f"{what} allowed by rule {allow.id} ({allow.source})"
        )
    return Decision(
        False, None, policy.version, f"{what}: no rule allows it for {identity.principal!r}"
    )


def decide_any(
    policy: Policy, identity: Identity, resource_type: ResourceType, operation: Operation
) -> Decision:
    """May ``identity`` perform ``operation`` on at least one resource of this type,
    whatever its name (Kafka's ``authorizeByResourceType``)? Some allow rule for it
    must exist, and no deny rule for every name (a literal ``*``) may match."""
    allow: CompiledRule | None = None
    for rule, every_name in policy.rules_about(resource_type):
        if not rule.matches(identity):
            continue
        if rule.allow and _allows(rule, operation):
            if allow is None or rule.order < allow.order:
                allow = rule
        elif not rule.allow and every_name and _denies(rule, operation):
            return Decision(
                False,
                rule.id,
                policy.version,
                f"{operation.value} on every {resource_type.value} denied by rule {rule.id} "
                f"({rule.source})",
            )
    what = f"{operation.value} on some {resource_type.value}"
    if allow is None:
        return Decision(
            False, None, policy.version, f"{what}: no rule allows it for {identity.principal!r}"
        )
    return Decision(
        True, allow.id, policy.version, f"{what} allowed by rule {allow.id} ({allow.source})"
    )
