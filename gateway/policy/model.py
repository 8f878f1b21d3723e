"""What a policy file may say: pydantic models of ``policies/*.yaml``, validated strictly.

A file is a list of ``rules``; each rule binds subjects (who) to resources (what) and
operations (which Kafka ACL operations), with ``effect: allow`` or ``deny``::

    rules:
      - id: apps-write-demo
        effect: allow
        subjects: {principals: [dev-client]}
        resources: [{type: topic, prefix: demo}]
        operations: [write, describe]

Unknown keys are errors (a typo must not silently widen or narrow access). This module
only describes and validates data; loading files, indexing and deciding live beside it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.policy import CLUSTER_NAME, Operation, ResourceType

WILDCARD = "*"
"""In a subject list: every identity. As a ``literal`` resource name: every name."""

RULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


def _lower(value: Any) -> Any:
    # Operators write READ as often as read; Kafka's own tools accept both.
    return value.lower() if isinstance(value, str) else value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Subjects(_Strict):
    """Who a rule is about. A rule matches an identity if any listed subject matches:
    its principal, one of its groups, the listener it came in on, or its mechanism
    (compared without case). ``"*"`` in any list matches every identity, anonymous ones
    included; to grant unauthenticated clients something, name their listener instead.
    """

    principals: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    listeners: tuple[str, ...] = ()
    # As the identity names them: PLAIN, SCRAM-SHA-256, OAUTHBEARER, SSL, none.
    mechanisms: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _not_empty(self) -> Subjects:
        if not (self.principals or self.groups or self.listeners or self.mechanisms):
            raise ValueError(
                "name at least one of principals, groups, listeners, mechanisms "
                '(use principals: ["*"] for everyone)'
            )
        return self


class Resource(_Strict):
    """Which resources: a type and exactly one name pattern.

    ``literal`` is an exact name (``"*"`` is every name, as in Kafka's ACLs), ``prefix``
    every name starting with it, ``glob`` an fnmatch pattern matched against the whole
    name. A cluster resource needs no name: there is only ``kafka-cluster``.
    """

    type: ResourceType
    literal: str | None = None
    prefix: Annotated[str, Field(min_length=1)] | None = None
    glob: Annotated[str, Field(min_length=1)] | None = None

    _lower_type = field_validator("type", mode="before")(_lower)

    @model_validator(mode="after")
    def _one_pattern(self) -> Resource:
        given = [p for p in (self.literal, self.prefix, self.glob) if p is not None]
        if self.type is ResourceType.CLUSTER:
            if self.prefix is not None or self.glob is not None:
                raise ValueError(f"a cluster resource is named by literal: {CLUSTER_NAME}")
            if self.literal not in (None, CLUSTER_NAME, WILDCARD):
                raise ValueError(f"the cluster is named {CLUSTER_NAME!r}, not {self.literal!r}")
            return self
        if len(given) != 1:
            raise ValueError("give exactly one of literal, prefix, glob")
        if self.literal == "":
            raise ValueError("literal: an empty name matches nothing")
        return self

    @property
    def kind(self) -> Literal["literal", "prefix", "glob"]:
        if self.prefix is not None:
            return "prefix"
        if self.glob is not None:
            return "glob"
        return "literal"

    @property
    def pattern(self) -> str:
        if self.type is ResourceType.CLUSTER:
            return WILDCARD if self.literal == WILDCARD else CLUSTER_NAME
        return self.prefix or self.glob or self.literal or ""


class Rule(_Strict):
    """One allow or deny rule; ``id`` names it in decisions, logs and metrics."""

    id: Annotated[str, Field(pattern=RULE_ID.pattern, max_length=128)]
    effect: Literal["allow", "deny"]
    subjects: Subjects
    resources: tuple[Resource, ...]
    operations: tuple[Operation, ...]
    description: str | None = None

    # Not Field(min_length=1): pydantic would report an empty list beside every invalid
    # item, and a reader would look for a second mistake that is not there.
    @field_validator("resources", "operations")
    @classmethod
    def _not_empty(cls, value: tuple[Any, ...]) -> tuple[Any, ...]:
        if not value:
            raise ValueError("list at least one")
        return value

    _lower_effect = field_validator("effect", mode="before")(_lower)

    @field_validator("operations", mode="before")
    @classmethod
    def _lower_operations(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return [_lower(v) for v in value]
        return value


class PolicyFile(_Strict):
    """The whole of one ``policies/*.yaml`` file. Rule ids are unique across the whole
    set of files, which the loader checks (it knows every file and line)."""

    rules: tuple[Rule, ...]
