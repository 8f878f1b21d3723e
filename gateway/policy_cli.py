"""``python -m gateway policy check|explain``: validate policy files, explain a decision.

``check [DIR]`` validates a policy directory as the gateway would load it (exit 0 with a
summary, 1 with every problem's file, line and field). ``explain`` answers "may this
identity do this?" with the rule that decided, from the same decision functions the
gateway's policy stage uses (:func:`~gateway.policy.checks.decide_choice`); exit 0
allowed, 1 denied, 2 for a usage error or an invalid policy. Asked about
an API (``--api OffsetCommit --topic orders --consumer-group g``), it builds such a
request (:mod:`gateway.policy_requests`) and explains every check
:func:`~gateway.policy.operations.required_actions` says the gateway makes for it,
item by item; where Kafka accepts one of several grants it shows each and the one that
allowed it.

This module only parses arguments and prints; it reads the policy files through the
loader and never talks to Kafka.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from gateway.errors import PolicyError
from gateway.identity import Identity
from gateway.policy import CLUSTER_NAME, Action, Operation, ResourceType
from gateway.policy.checks import decide_choice
from gateway.policy.decide import Decision
from gateway.policy.loader import Policy, load_policy_dir
from gateway.policy.operations import AnyOf, AnyResource, ItemActions, Scope, required_actions
from gateway.policy_requests import (
    MISSING_GROUP,
    MISSING_TOPIC,
    MISSING_TRANSACTIONAL_ID,
    TOPIC_ID,
    Names,
    api_keys_by_name,
    request_body,
    version_for,
)

DEFAULT_DIR = Path("policies")

# Every API the gateway authorizes, by name: explain knows exactly the APIs it serves.
API_KEYS = api_keys_by_name()

# A placeholder in a check means the API names a resource the command line did not.
_MISSING_FLAG = {
    MISSING_TOPIC: "--topic",
    MISSING_GROUP: "--consumer-group",
    MISSING_TRANSACTIONAL_ID: "--transactional-id",
}


class UsageError(Exception):
    """The arguments do not describe one check."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gateway policy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate a policy directory")
    check.add_argument("dir", nargs="?", type=Path, default=DEFAULT_DIR)
    explain = sub.add_parser("explain", help="show the decision and the rule that made it")
    explain.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    who = explain.add_argument_group("identity")
    who.add_argument("--principal", required=True)
    who.add_argument("--group", action="append", default=[], dest="groups")
    who.add_argument("--listener", default="")
    who.add_argument("--mechanism", default="", help="PLAIN, SCRAM-SHA-256, ..., none")
    what = explain.add_argument_group(
        "what, by API",
        "a request of the API naming these resources, checked as the gateway checks it "
        "(config APIs ask about the topic, else the group, else broker 0)",
    )
    what.add_argument("--api", choices=sorted(API_KEYS), metavar="API")
    what.add_argument("--topic")
    what.add_argument("--consumer-group")
    what.add_argument("--transactional-id")
    raw = explain.add_argument_group("what, as a resource and an operation")
    raw.add_argument("--resource-type", choices=[t.value for t in ResourceType])
    raw.add_argument("--name")
    raw.add_argument("--operation", choices=[o.value for o in Operation])
    return parser


def _api_items(ns: argparse.Namespace) -> tuple[int, tuple[ItemActions, ...]]:
    """The version explained and what the gateway checks for such a request."""
    api_key = API_KEYS[ns.api]
    version = version_for(api_key)
    names = Names(ns.topic, ns.consumer_group, ns.transactional_id)
    body = request_body(api_key, version, names)
    items = required_actions(api_key, body, {TOPIC_ID: ns.topic or MISSING_TOPIC})
    for item in items:
        for check in item.checks:
            for choice in check.choices:
                flag = _MISSING_FLAG.get(getattr(choice, "name", ""))
                if flag is not None:
                    raise UsageError(f"--api {ns.api} needs {flag}")
    return version, items


def _raw_items(ns: argparse.Namespace) -> tuple[ItemActions, ...]:
    if ns.resource_type is None or ns.operation is None:
        raise UsageError("give --api, or --resource-type and --operation (and --name)")
    kind = ResourceType(ns.resource_type)
    name = CLUSTER_NAME if kind is ResourceType.CLUSTER else ns.name
    if name is None:
        raise UsageError(f"--resource-type {kind.value} needs --name")
    action = Action(kind, name, Operation(ns.operation))
    return (ItemActions(kind, name, Scope.ITEM, (AnyOf((action,)),)),)


def _summary(policy: Policy) -> str:
    return (
        f"policy {policy.version}: {len(policy.files)} files, {len(policy.rules)} rules, "
        f"{len(policy.safeguards)} safeguards"
    )


def _check(directory: Path, out: TextIO) -> int:
    policy = load_policy_dir(directory)
    print(f"{directory}: ok, {_summary(policy)}", file=out)
    for name in policy.files:
        rules = sum(1 for r in policy.rules if r.source.rsplit(":", 1)[0] == name)
        guards = sum(1 for s in policy.safeguards if s.source.rsplit(":", 1)[0] == name)
        print(f"  {name}: {rules} rules, {guards} safeguards", file=out)
    return 0


def _choice(policy: Policy, identity: Identity, choice: Action | AnyResource) -> Decision:
    # The policy stage's own function, so that explain shows the decision it makes.
    return decide_choice(policy, identity, choice)[0]


def _what(choice: Action | AnyResource) -> str:
    if isinstance(choice, AnyResource):
        return f"{choice.operation.value} on some {choice.resource_type.value}"
    return f"{choice.operation.value} on {choice.resource_type.value} {choice.name!r}"


def _verdict(allowed: bool) -> str:
    return "ALLOW" if allowed else "DENY "


def _explain_check(policy: Policy, identity: Identity, check: AnyOf, out: TextIO) -> bool:
    """Print one check's decision; a check with choices shows each and the one that
    allowed it (the first, in Kafka's order)."""
    decisions = [(choice, _choice(policy, identity, choice)) for choice in check.choices]
    if len(decisions) == 1:
        print(f"    {_verdict(decisions[0][1].allowed)} {decisions[0][1].reason}", file=out)
        return decisions[0][1].allowed
    if not decisions:
        print("    DENY  no grant can allow it (a topic id no name resolves)", file=out)
        return False
    winner = next((choice for choice, d in decisions if d.allowed), None)
    alternatives = " or ".join(_what(choice) for choice, _ in decisions)
    if winner is None:
        print(f"    DENY  any one of: {alternatives}; none is allowed", file=out)
    else:
        print(f"    ALLOW any one of: {alternatives}; allowed by {_what(winner)}", file=out)
    for _, decision in decisions:
        print(f"      {_verdict(decision.allowed)} {decision.reason}", file=out)
    return winner is not None


def _explain_items(
    policy: Policy, identity: Identity, items: tuple[ItemActions, ...], out: TextIO
) -> bool:
    allowed = True
    for item in items:
        fails = "the whole request" if item.scope is Scope.REQUEST else "this item"
        print(f"  {item.resource_type.value} {item.name!r} (a denial fails {fails}):", file=out)
        for check in item.checks:
            allowed = _explain_check(policy, identity, check, out) and allowed
    return allowed


def _explain(ns: argparse.Namespace, out: TextIO) -> int:
    if ns.api is not None and (ns.resource_type or ns.operation):
        raise UsageError("give --api or --resource-type/--operation, not both")
    if ns.api is not None:
        version, items = _api_items(ns)
        what = f"{ns.api} v{version}"
    else:
        items, what = _raw_items(ns), "request"
    policy = load_policy_dir(ns.dir)
    identity = Identity(
        principal=ns.principal,
        mechanism=ns.mechanism,
        groups=tuple(ns.groups),
        listener=ns.listener,
    )
    groups = ",".join(identity.groups) or "-"
    print(_summary(policy), file=out)
    print(
        f"identity: principal={identity.principal} groups={groups} "
        f"listener={identity.listener or '-'} mechanism={identity.mechanism or '-'}",
        file=out,
    )
    print(
        f"{what}:" if items else f"{what}: nothing to check (Kafka authorizes none of it)", file=out
    )
    allowed = _explain_items(policy, identity, items, out)
    print(f"{ns.api or 'request'}: {'ALLOWED' if allowed else 'DENIED'}", file=out)
    return 0 if allowed else 1


def main(argv: list[str], out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    ns = _parser().parse_args(argv)
    try:
        if ns.command == "check":
            return _check(ns.dir, out)
        return _explain(ns, out)
    except UsageError as exc:
        print(f"policy explain: {exc}", file=err)
        return 2
    except PolicyError as exc:
        print(exc, file=err)
        return 1 if ns.command == "check" else 2
