"""Deciding a request item's checks: a conjunction of :class:`AnyOf` choices.

Shared by the request pipeline's policy stage and ``policy explain``, so that the CLI
explains exactly the decision the gateway makes. Pure, like :mod:`decide`.
"""

from __future__ import annotations

from gateway.identity import Identity
from gateway.policy import Action
from gateway.policy.decide import Decision, decide, decide_any
from gateway.policy.loader import Policy
from gateway.policy.operations import AnyOf, AnyResource

# The name shown for an AnyResource choice: some resource of the type, whatever its name.
ANY_NAME = "*"


def decide_checks(
    policy: Policy, identity: Identity, checks: tuple[AnyOf, ...]
) -> tuple[Decision, Action | None]:
    """Is every check satisfied (some choice of each allowed)? The deciding decision and
    the action it was about: for a failed check its last, most specific choice; None
    when a check has no choice at all (a topic id nobody can name)."""
    decision = Decision(True, None, policy.version, "nothing to check")
    action: Action | None = None
    for check in checks:
        if not check.choices:
            return Decision(False, None, policy.version, "an unknown topic id"), None
        failed: tuple[Decision, Action | None] | None = None
        for choice in check.choices:
            found, chosen = decide_choice(policy, identity, choice)
            if found.allowed:
                decision, action = found, chosen
                break
            failed = (found, chosen)
        else:
            assert failed is not None
            return failed
    return decision, action


def decide_choice(
    policy: Policy, identity: Identity, choice: Action | AnyResource
) -> tuple[Decision, Action]:
    """One choice of a check, and the action it stands for."""
    if isinstance(choice, AnyResource):
        found = decide_any(policy, identity, choice.resource_type, choice.operation)
        return found, Action(choice.resource_type, ANY_NAME, choice.operation)
    return decide(policy, identity, choice), choice
