"""``python -m gateway policy check|explain``: validate policy files, explain a decision.

``check [DIR]`` validates a policy directory as the gateway would load it (exit 0 with a
summary, 1 with every problem's file, line and field). ``explain`` answers "may this
identity do this?" with the rule that decided, from the same checks the gateway
decides (:func:`~gateway.policy.checks.decide_checks`); exit 0 allowed, 1 denied, 2
for a usage error or an invalid policy.

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
from gateway.policy.checks import decide_checks, decide_choice
from gateway.policy.loader import Policy, load_policy_dir
from gateway.policy.operations import AnyOf, AnyResource

DEFAULT_DIR = Path("policies")

T, G, X, C = (
    ResourceType.TOPIC,
    ResourceType.GROUP,
    ResourceType.TRANSACTIONAL_ID,
    ResourceType.CLUSTER,
)
Op = Operation

# What Kafka's authorizer checks for the common APIs, as gateway/policy/operations.py
# says for one item of each kind the flags name. Each check lists its choices, any one
# of which satisfies it (CreateTopics: CREATE on the cluster or on the topic); every
# check must be satisfied. ANY_TOPIC stands for WRITE on some topic (KIP-679).
ANY_TOPIC = "any-topic"
Choice = tuple[ResourceType, Operation] | tuple[str, Operation]
API_CHECKS: dict[str, tuple[tuple[Choice, ...], ...]] = {
    "Produce": (((T, Op.WRITE),),),
    "Fetch": (((T, Op.READ),),),
    "ListOffsets": (((T, Op.DESCRIBE),),),
    "OffsetForLeaderEpoch": (((C, Op.CLUSTER_ACTION), (T, Op.DESCRIBE)),),
    "Metadata": (((T, Op.DESCRIBE),),),
    "DescribeProducers": (((T, Op.READ),),),
    "FindCoordinator": (((G, Op.DESCRIBE),),),
    "OffsetCommit": (((G, Op.READ),), ((T, Op.READ),)),
    "OffsetFetch": (((G, Op.DESCRIBE),), ((T, Op.DESCRIBE),)),
    "OffsetDelete": (((G, Op.DELETE),), ((T, Op.READ),)),
    "JoinGroup": (((G, Op.READ),),),
    "SyncGroup": (((G, Op.READ),),),
    "Heartbeat": (((G, Op.READ),),),
    "LeaveGroup": (((G, Op.READ),),),
    "ConsumerGroupHeartbeat": (((G, Op.READ),), ((T, Op.DESCRIBE),)),
    "DescribeGroups": (((G, Op.DESCRIBE),),),
    "ConsumerGroupDescribe": (((G, Op.DESCRIBE),),),
    "DeleteGroups": (((G, Op.DELETE),),),
    "CreateTopics": (((C, Op.CREATE), (T, Op.CREATE)),),
    "DeleteTopics": (((C, Op.DELETE), (T, Op.DELETE)),),
    "DeleteRecords": (((T, Op.DELETE),),),
    "CreatePartitions": (((T, Op.ALTER),),),
    "DescribeConfigs": (((T, Op.DESCRIBE_CONFIGS),),),
    "AlterConfigs": (((T, Op.ALTER_CONFIGS),),),
    "IncrementalAlterConfigs": (((T, Op.ALTER_CONFIGS),),),
    "InitProducerId": (((X, Op.WRITE),),),
    "InitProducerId (idempotent)": (((C, Op.IDEMPOTENT_WRITE), (ANY_TOPIC, Op.WRITE)),),
    "AddPartitionsToTxn": (((X, Op.WRITE),), ((T, Op.WRITE),)),
    "AddOffsetsToTxn": (((X, Op.WRITE),), ((G, Op.READ),)),
    "EndTxn": (((X, Op.WRITE),),),
    "TxnOffsetCommit": (((X, Op.WRITE),), ((G, Op.READ),), ((T, Op.READ),)),
    "DescribeTransactions": (((X, Op.DESCRIBE),),),
    "ElectLeaders": (((C, Op.ALTER),),),
    "DescribeLogDirs": (((C, Op.DESCRIBE),),),
}

_NAME_FLAG = {T: "--topic", G: "--consumer-group", X: "--transactional-id"}


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
    what = explain.add_argument_group("what, by API")
    what.add_argument("--api", choices=sorted(API_CHECKS), metavar="API")
    what.add_argument("--topic")
    what.add_argument("--consumer-group")
    what.add_argument("--transactional-id")
    raw = explain.add_argument_group("what, as a resource and an operation")
    raw.add_argument("--resource-type", choices=[t.value for t in ResourceType])
    raw.add_argument("--name")
    raw.add_argument("--operation", choices=[o.value for o in Operation])
    return parser


def _checks(ns: argparse.Namespace) -> tuple[AnyOf, ...]:
    if ns.api is not None:
        if ns.resource_type or ns.operation:
            raise UsageError("give --api or --resource-type/--operation, not both")
        names = {T: ns.topic, G: ns.consumer_group, X: ns.transactional_id, C: CLUSTER_NAME}
        found = []
        for choices in API_CHECKS[ns.api]:
            made: list[Action | AnyResource] = []
            for kind, operation in choices:
                if kind == ANY_TOPIC:
                    made.append(AnyResource(T, operation))
                    continue
                assert isinstance(kind, ResourceType)
                if names[kind] is None:
                    raise UsageError(f"--api {ns.api} needs {_NAME_FLAG[kind]}")
                made.append(Action(kind, names[kind], operation))
            found.append(AnyOf(tuple(made)))
        return tuple(found)
    if ns.resource_type is None or ns.operation is None:
        raise UsageError("give --api, or --resource-type and --operation (and --name)")
    kind = ResourceType(ns.resource_type)
    name = CLUSTER_NAME if kind is ResourceType.CLUSTER else ns.name
    if name is None:
        raise UsageError(f"--resource-type {kind.value} needs --name")
    return (AnyOf((Action(kind, name, Operation(ns.operation)),)),)


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


def _explain(ns: argparse.Namespace, out: TextIO) -> int:
    checks = _checks(ns)
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
    for check in checks:
        # Each choice as the gateway decides it; the check passes if any one does.
        for n, choice in enumerate(check.choices):
            decision, _ = decide_choice(policy, identity, choice)
            prefix = "  " if n == 0 else "   or "
            print(f"{prefix}{'ALLOW' if decision.allowed else 'DENY '} {decision.reason}", file=out)
    allowed, _ = decide_checks(policy, identity, checks)
    what = ns.api or "request"
    print(f"{what}: {'ALLOWED' if allowed.allowed else 'DENIED'}", file=out)
    return 0 if allowed.allowed else 1


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
