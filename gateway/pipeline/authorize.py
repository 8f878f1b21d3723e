"""The policy stage: what Kafka's own authorizer would check, decided by the policy.

On the way in, each item a request names (:func:`~gateway.policy.operations.required_actions`)
is decided under the policy in force when the request began. A denied item gets the
error Kafka gives for its resource (TOPIC_, GROUP_, TRANSACTIONAL_ID_ or
CLUSTER_AUTHORIZATION_FAILED) with a message, and the allowed items of the same
request go on; an item Kafka checks for the whole request (a transactional id, the
group of an OffsetCommit) fails the whole request, as Kafka does. Safeguards follow:
items within the policy's bounds pass, the others get POLICY_VIOLATION naming the rule.

On the way back, answers that list resources the request did not name (all topics,
groups, transactions) keep only those the identity may describe, so that nothing the
identity may not see leaks, not even a name (no existence oracle).

With no policy configured the stage does nothing.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable
from typing import Any, cast

from kio.schema.errors import ErrorCode

from gateway import metrics
from gateway.errors import UnsupportedApi, UpstreamError
from gateway.handlers.metadata import as_virtual_broker
from gateway.identity import Identity
from gateway.pipeline import Call, Denial, ItemDecision
from gateway.pipeline.policies import PolicyStore
from gateway.policy import CLUSTER_NAME, Action, Operation, ResourceType, safeguards
from gateway.policy.checks import decide_checks
from gateway.policy.decide import Decision, decide
from gateway.policy.loader import Policy
from gateway.policy.operations import ItemActions, Scope, required_actions
from gateway.protocol import codec, items
from gateway.protocol import versions as api
from gateway.protocol.codec import Answer, EncodedBody, Request
from gateway.protocol.items import Resource
from gateway.protocol.versions import api_name
from gateway.session import ClientSession

_ERRORS = {
    ResourceType.TOPIC: ErrorCode.topic_authorization_failed,
    ResourceType.GROUP: ErrorCode.group_authorization_failed,
    ResourceType.TRANSACTIONAL_ID: ErrorCode.transactional_id_authorization_failed,
    ResourceType.CLUSTER: ErrorCode.cluster_authorization_failed,
}

# Items Kafka answers inside a parent's answer (OffsetFetch's topics, answered per
# partition within the group): they are not withheld but answered on the way back.
_ANSWERED_IN_RESPONSE = {(api.OFFSET_FETCH, ResourceType.TOPIC)}

# APIs where one refused item fails the others too (Kafka answers them
# OPERATION_NOT_ATTEMPTED): AddPartitionsToTxn adds all partitions or none.
_ALL_OR_NOTHING = {api.ADD_PARTITIONS_TO_TXN}

# Kafka's AclOperation codes, for the authorized-operations bit sets of answers.
_ACL_CODES = {
    Operation.READ: 3,
    Operation.WRITE: 4,
    Operation.CREATE: 5,
    Operation.DELETE: 6,
    Operation.ALTER: 7,
    Operation.DESCRIBE: 8,
    Operation.CLUSTER_ACTION: 9,
    Operation.DESCRIBE_CONFIGS: 10,
    Operation.ALTER_CONFIGS: 11,
    Operation.IDEMPOTENT_WRITE: 12,
}
_TOPIC_OPERATIONS = (
    Operation.READ,
    Operation.WRITE,
    Operation.CREATE,
    Operation.DELETE,
    Operation.ALTER,
    Operation.DESCRIBE,
    Operation.DESCRIBE_CONFIGS,
    Operation.ALTER_CONFIGS,
)
_NOT_ASKED = -(2**31)


@functools.lru_cache(maxsize=4096)
def _counter(api_key: int, allowed: bool, rule: str) -> Any:
    return metrics.POLICY_DECISIONS.labels(api_name(api_key), "allow" if allowed else "deny", rule)


@functools.lru_cache(maxsize=4096)
def _violated(api_key: int, rule: str) -> Any:
    return metrics.SAFEGUARD_VIOLATIONS.labels(api_name(api_key), rule)


def _count(api_key: int, decision: Decision) -> None:
    _counter(api_key, decision.allowed, decision.rule_id or "none").inc()


def key_of(resource_type: ResourceType, name: str) -> Resource:
    """The key a withheld item is known by (see :meth:`~gateway.pipeline.Call.key`)."""
    return Resource(resource_type.value, name)


class PolicyStage:
    """Authorizes every request item by the policy in ``store``."""

    name = "policy"

    def __init__(self, store: PolicyStore) -> None:
        self.store = store

    async def on_request(self, call: Call) -> None:
        policy = self.store.current
        if policy is None:
            return
        call.notes[self.name] = policy
        request = call.request
        checked = await self._items(call)
        if checked is None:
            return
        identity = call.identity
        refused: list[tuple[ItemActions, Denial]] = []
        for item in checked:
            decision, action = decide_checks(policy, identity, item.checks)
            if decision.allowed and item.to_create:
                decision, action = await self._may_create(call, policy, identity, item)
            _count(request.api_key, decision)
            key = key_of(item.resource_type, item.name)
            if decision.allowed:
                call.decisions.append(
                    ItemDecision(self.name, key, True, decision.rule_id, policy.version)
                )
                continue
            denial = _denial(item, decision, action)
            call.decisions.append(
                ItemDecision(self.name, key, False, decision.rule_id, policy.version, denial.error)
            )
            if item.scope is Scope.REQUEST:
                call.refuse(denial.error, denial.message)
                return
            if (request.api_key, item.resource_type) in _ANSWERED_IN_RESPONSE:
                call.notes.setdefault("hidden", set()).add(item.name)
                continue
            refused.append((item, denial))
        if refused and request.api_key in _ALL_OR_NOTHING:
            _refuse_all(call, refused)
            return
        for item, denial in refused:
            call.withhold(key_of(item.resource_type, item.name), denial)
        self._safeguards(call, policy)

    async def _items(self, call: Call) -> tuple[ItemActions, ...] | None:
        """What Kafka checks for each item of the request (None: refused already)."""
        request = call.request
        try:
            names = call.session.upstream.view.names_by_id
            checked = required_actions(request.api_key, request.body, names)
        except UnsupportedApi:
            call.refuse(ErrorCode.cluster_authorization_failed, "this API is not authorized")
            return None
        if any(not check.choices for item in checked for check in item.checks):
            # A topic id the gateway's layout does not name yet (a topic created a
            # moment ago, learned by the client from Metadata): read the layout once
            # more before deciding, so that a new topic is not refused as unknown.
            with contextlib.suppress(UpstreamError):
                await call.session.upstream.refresh()
            names = call.session.upstream.view.names_by_id
            checked = required_actions(request.api_key, request.body, names)
        return checked

    def _safeguards(self, call: Call, policy: Policy) -> None:
        """Items the policy allows must still keep its bounds: POLICY_VIOLATION with the
        safeguard's message for each item that does not (the whole request when the
        bound is about the request, such as its client id)."""
        if not policy.safeguards:
            return
        request = call.request
        violations = safeguards.check(
            policy,
            call.identity,
            request.api_key,
            request.body,
            request.client_id,
            topic_names=call.session.upstream.view.names_by_id,
        )
        for violation in violations:
            _violated(request.api_key, violation.rule_id).inc()
            denial = Denial(ErrorCode.policy_violation, violation.message)
            call.decisions.append(
                ItemDecision(
                    "safeguards",
                    key_of(violation.resource_type, violation.name),
                    False,
                    violation.rule_id,
                    policy.version,
                    denial.error,
                )
            )
            if violation.scope is Scope.REQUEST:
                call.refuse(denial.error, denial.message)
                return
            call.withhold(key_of(violation.resource_type, violation.name), denial)

    async def _may_create(
        self, call: Call, policy: Policy, identity: Identity, item: ItemActions
    ) -> tuple[Decision, Action | None]:
        """A Metadata topic that would be auto-created: fine when it exists, else only
        with CREATE (Kafka answers TOPIC_AUTHORIZATION_FAILED otherwise, so that
        auto-creation is no existence oracle either)."""
        decision, action = decide_checks(policy, identity, item.to_create)
        if decision.allowed:
            return decision, action
        upstream = call.session.upstream
        if item.name not in upstream.view.topics:
            # Created a moment ago by someone else? Read the layout once more.
            with contextlib.suppress(UpstreamError):
                await upstream.refresh()
        if item.name in upstream.view.topics:
            return decide_checks(policy, identity, item.checks)
        return decision, action

    async def on_response(self, call: Call, answer: Answer) -> Answer:
        policy = call.notes.get(self.name)
        if policy is None or answer is None:
            return answer
        shape = _SHOWN.get(call.api_key)
        if shape is None:
            return answer
        if isinstance(answer, EncodedBody):
            answer = answer.decoded()
        return cast(Answer, shape(Visibility(policy, call), call.request, answer))

    def rejected(self, session: ClientSession, detail: str) -> None:
        """Nothing to authorize in a frame that does not decode."""


def _denial(item: ItemActions, decision: Decision, action: Action | None) -> Denial:
    if action is None:
        # No choice at all: a topic id that names no topic, or a config resource of a
        # type Kafka does not know.
        if item.resource_type is ResourceType.TOPIC:
            return Denial(ErrorCode.unknown_topic_id, "this topic id is unknown")
        return Denial(ErrorCode.invalid_request, "unknown resource type")
    what = f"{action.operation.value} on {action.resource_type.value} {action.name!r}"
    if action.resource_type is ResourceType.CLUSTER:
        what = f"{action.operation.value} on the cluster"
    why = f"denied by rule {decision.rule_id}" if decision.rule_id else "not allowed by any rule"
    return Denial(_ERRORS[item.resource_type], f"{what}: {why} (policy {decision.policy_version})")


def _refuse_all(call: Call, refused: list[tuple[ItemActions, Denial]]) -> None:
    body = call.request.body
    denied = {key_of(item.resource_type, item.name): denial for item, denial in refused}
    first = refused[0][1]
    answer = items.error_response(
        items.without_items(body, lambda r: call.key(r) in denied),
        ErrorCode.operation_not_attempted,
        "another item of the request was refused",
    )
    answer = items.merge_items(
        answer,
        items.error_response(
            items.without_items(body, lambda r: call.key(r) not in denied),
            first.error,
            first.message,
        ),
    )
    call.answer, call.answered = answer, True


class Visibility:
    """What the identity of one call may see, decided (and counted) once per name."""

    def __init__(self, policy: Policy, call: Call) -> None:
        self.policy = policy
        self.identity = call.identity
        self.api_key = call.api_key
        self.session = call.session
        self.hidden: set[str] = call.notes.get("hidden", set())
        self._seen: dict[tuple[ResourceType, str, Operation], bool] = {}

    def may(self, resource_type: ResourceType, name: str, operation: Operation) -> bool:
        key = (resource_type, name, operation)
        seen = self._seen.get(key)
        if seen is None:
            decision = decide(self.policy, self.identity, Action(resource_type, name, operation))
            _count(self.api_key, decision)
            seen = self._seen[key] = decision.allowed
        return seen

    def may_describe_topic(self, name: str | None) -> bool:
        return name is not None and self.may(ResourceType.TOPIC, name, Operation.DESCRIBE)

    def operations(self, resource_type: ResourceType, name: str) -> int:
        """Kafka's authorized-operations bit set for one resource."""
        bits = 0
        for operation in _TOPIC_OPERATIONS:
            allowed = decide(self.policy, self.identity, Action(resource_type, name, operation))
            if allowed.allowed:
                bits |= 1 << _ACL_CODES[operation]
        return bits


def _metadata(seen: Visibility, request: Request, answer: Any) -> Any:
    asked = request.body.topics
    every_topic = asked is None or (request.api_version == 0 and not asked)
    topics = answer.topics
    if every_topic:
        topics = tuple(t for t in topics if seen.may_describe_topic(t.name))
    if getattr(request.body, "include_topic_authorized_operations", False):
        topics = tuple(
            codec.replace(
                t, topic_authorized_operations=seen.operations(ResourceType.TOPIC, t.name)
            )
            if t.error_code == ErrorCode.none and t.name
            else t
            for t in topics
        )
    if topics is not answer.topics:
        answer = codec.replace(answer, topics=topics)
    if not answer.brokers:
        # Answered without the upstream (every topic withheld): the gateway is still
        # the one broker, as in every Metadata answer.
        answer = as_virtual_broker(seen.session, answer)
    if getattr(answer, "cluster_authorized_operations", _NOT_ASKED) != _NOT_ASKED:
        answer = codec.replace(answer, cluster_authorized_operations=_NOT_ASKED)
    return answer


def _list_groups(seen: Visibility, request: Request, answer: Any) -> Any:
    if seen.may(ResourceType.CLUSTER, CLUSTER_NAME, Operation.DESCRIBE):
        return answer
    shown = tuple(
        g for g in answer.groups if seen.may(ResourceType.GROUP, g.group_id, Operation.DESCRIBE)
    )
    return codec.replace(answer, groups=shown)


def _list_transactions(seen: Visibility, request: Request, answer: Any) -> Any:
    shown = tuple(
        t
        for t in answer.transaction_states
        if seen.may(ResourceType.TRANSACTIONAL_ID, t.transactional_id, Operation.DESCRIBE)
    )
    return codec.replace(answer, transaction_states=shown)


def _describe_transactions(seen: Visibility, request: Request, answer: Any) -> Any:
    states = tuple(
        codec.replace(s, topics=tuple(t for t in s.topics if seen.may_describe_topic(t.topic)))
        for s in answer.transaction_states
    )
    return codec.replace(answer, transaction_states=states)


def _offset_fetch(seen: Visibility, request: Request, answer: Any) -> Any:
    if hasattr(answer, "groups"):
        asked = {g.group_id: g.topics for g in request.body.groups}
        groups = tuple(
            codec.replace(g, topics=_offset_topics(seen, asked.get(g.group_id), g.topics))
            for g in answer.groups
        )
        return codec.replace(answer, groups=groups)
    return codec.replace(answer, topics=_offset_topics(seen, request.body.topics, answer.topics))


def _offset_topics(seen: Visibility, asked: Iterable[Any] | None, topics: Iterable[Any]) -> Any:
    """A group's offsets: topics asked for by name that the identity may not describe
    are answered TOPIC_AUTHORIZATION_FAILED per partition (as Kafka does); with every
    topic asked for (null), they are left out."""
    shown = []
    for topic in topics:
        if seen.may_describe_topic(topic.name) and topic.name not in seen.hidden:
            shown.append(topic)
        elif asked is not None:
            partitions = tuple(
                codec.replace(
                    p,
                    committed_offset=-1,
                    committed_leader_epoch=-1,
                    metadata="",
                    error_code=ErrorCode.topic_authorization_failed,
                )
                for p in topic.partitions
            )
            shown.append(codec.replace(topic, partitions=partitions))
    return tuple(shown)


def _consumer_group_describe(seen: Visibility, request: Request, answer: Any) -> Any:
    """A group whose members use a topic the identity may not describe is answered
    TOPIC_AUTHORIZATION_FAILED, without members (Kafka 4's handleConsumerGroupDescribe)."""
    groups = []
    for group in answer.groups:
        names = _member_topics(group.members)
        if all(seen.may_describe_topic(n) for n in names):
            groups.append(group)
            continue
        groups.append(
            codec.replace(
                group,
                error_code=ErrorCode.topic_authorization_failed,
                error_message="the group uses topics this identity may not describe",
                members=(),
            )
        )
    return codec.replace(answer, groups=tuple(groups))


def _member_topics(members: Iterable[Any]) -> set[str]:
    names: set[str] = set()
    for member in members:
        names.update(member.subscribed_topic_names or ())
        for assignment in (member.assignment, member.target_assignment):
            names.update(tp.topic_name for tp in assignment.topic_partitions)
    return names


_SHOWN = {
    api.METADATA: _metadata,
    api.LIST_GROUPS: _list_groups,
    api.LIST_TRANSACTIONS: _list_transactions,
    api.DESCRIBE_TRANSACTIONS: _describe_transactions,
    api.OFFSET_FETCH: _offset_fetch,
    api.CONSUMER_GROUP_DESCRIBE: _consumer_group_describe,
}
