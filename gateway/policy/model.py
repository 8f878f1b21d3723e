"""What a policy file may say: pydantic models of ``policies/*.yaml``, validated strictly.

A file holds a list of ``rules``, of ``safeguards`` or both. Each rule binds subjects
(who) to resources (what) and operations (which Kafka ACL operations), with
``effect: allow`` or ``deny``::

    rules:
      - id: apps-write-demo
        effect: allow
        subjects: {principals: [dev-client]}
        resources: [{type: topic, prefix: demo}]
        operations: [write, describe]

A safeguard bounds what allowed requests may ask for (partitions, configs, Produce
settings, client ids); :mod:`gateway.policy.safeguards` says what each bound checks::

    safeguards:
      - id: topic-bounds
        subjects: {principals: [dev-client]}
        topics: [{prefix: demo}]
        create_topics: {max_partitions: 12, configs: {retention.ms: {min: 3600000}}}

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
    its principal, one of its groups, the listener it came in on, its mechanism
    (compared without case), or a claim of its token. ``"*"`` in any list matches every
    identity, anonymous ones included; to grant unauthenticated clients something, name
    their listener instead.
    """

    principals: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    listeners: tuple[str, ...] = ()
    # As the identity names them: PLAIN, SCRAM-SHA-256, OAUTHBEARER, SSL, none.
    mechanisms: tuple[str, ...] = ()
    # Token claims (OAUTHBEARER): claim name -> accepted values, compared as text
    # (``{department: [payments]}``; a list claim matches if any item is accepted;
    # ``"*"`` accepts any value of a claim the token has).
    claims: dict[Annotated[str, Field(min_length=1)], tuple[str, ...]] = {}

    @model_validator(mode="after")
    def _not_empty(self) -> Subjects:
        if not (self.principals or self.groups or self.listeners or self.mechanisms or self.claims):
            raise ValueError(
                "name at least one of principals, groups, listeners, mechanisms, claims "
                '(use principals: ["*"] for everyone)'
            )
        for name, values in self.claims.items():
            if not values:
                raise ValueError(f"claims.{name}: list at least one accepted value")
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


class TopicPattern(_Strict):
    """Which topics a safeguard bounds: exactly one of ``literal`` (``"*"`` is every
    topic), ``prefix`` or ``glob``, as in a rule's topic resources."""

    literal: Annotated[str, Field(min_length=1)] | None = None
    prefix: Annotated[str, Field(min_length=1)] | None = None
    glob: Annotated[str, Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _one_pattern(self) -> TopicPattern:
        if sum(p is not None for p in (self.literal, self.prefix, self.glob)) != 1:
            raise ValueError("give exactly one of literal, prefix, glob")
        return self


def _regex(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from exc
    return value


class ConfigBound(_Strict):
    """What one config may be set to: ``allowed`` values, an integer ``min``/``max``
    range, or ``forbidden: true`` (it may not be set at all)."""

    allowed: tuple[str, ...] | None = None
    min: int | None = None
    max: int | None = None
    forbidden: bool = False

    @field_validator("allowed", mode="before")
    @classmethod
    def _as_strings(cls, value: Any) -> Any:
        # YAML reads `allowed: [1, 2]` as integers; Kafka config values are strings.
        if isinstance(value, list | tuple):
            return [str(v).lower() if isinstance(v, bool) else str(v) for v in value]
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> ConfigBound:
        kinds = [self.allowed is not None, self.min is not None or self.max is not None]
        if sum(kinds) + self.forbidden != 1:
            raise ValueError("give exactly one of allowed, min/max, forbidden: true")
        if self.allowed == ():
            raise ValueError("allowed: list at least one value (or use forbidden: true)")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self


ConfigBounds = dict[Annotated[str, Field(min_length=1)], ConfigBound]


class CreateTopicsBounds(_Strict):
    """Bounds on CreateTopics (and, for ``max_partitions``, CreatePartitions)."""

    max_partitions: Annotated[int, Field(ge=1)] | None = None
    min_replication_factor: Annotated[int, Field(ge=1)] | None = None
    max_replication_factor: Annotated[int, Field(ge=1)] | None = None
    name_pattern: str | None = None
    configs: ConfigBounds = Field(default_factory=dict)

    _check_regex = field_validator("name_pattern")(_regex)

    @model_validator(mode="after")
    def _ordered(self) -> CreateTopicsBounds:
        low, high = self.min_replication_factor, self.max_replication_factor
        if low is not None and high is not None and low > high:
            raise ValueError(f"min_replication_factor {low} is greater than {high}")
        return self


class AlterConfigsBounds(_Strict):
    """Bounds on AlterConfigs and IncrementalAlterConfigs of topics."""

    configs: ConfigBounds


Codec = Literal["none", "gzip", "snappy", "lz4", "zstd"]


class ProduceBounds(_Strict):
    """Constraints on Produce to the safeguard's topics."""

    acks: Literal["all"] | None = None
    max_batch_bytes: Annotated[int, Field(ge=1)] | None = None
    compression: tuple[Codec, ...] | None = None

    @field_validator("compression", mode="before")
    @classmethod
    def _lower_codecs(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return [_lower(v) for v in value]
        return value

    @field_validator("compression")
    @classmethod
    def _some_codec(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value == ():
            raise ValueError("list at least one codec")
        return value


class Safeguard(_Strict):
    """Bounds that requests must keep, whatever the rules allow; ``id`` names it in the
    POLICY_VIOLATION message. Absent ``subjects`` means every identity, absent
    ``topics`` every topic."""

    id: Annotated[str, Field(pattern=RULE_ID.pattern, max_length=128)]
    description: str | None = None
    subjects: Subjects | None = None
    topics: tuple[TopicPattern, ...] | None = None
    create_topics: CreateTopicsBounds | None = None
    alter_configs: AlterConfigsBounds | None = None
    produce: ProduceBounds | None = None
    client_id_pattern: str | None = None

    _check_regex = field_validator("client_id_pattern")(_regex)

    @field_validator("topics")
    @classmethod
    def _some_topic(cls, value: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
        if value == ():
            raise ValueError("list at least one (or leave topics out for every topic)")
        return value

    @model_validator(mode="after")
    def _bounds_something(self) -> Safeguard:
        given = (self.create_topics, self.alter_configs, self.produce, self.client_id_pattern)
        if all(g is None for g in given):
            raise ValueError(
                "give at least one of create_topics, alter_configs, produce, client_id_pattern"
            )
        return self


MaskMethodName = Literal["redact", "hash", "partial", "null"]


class FieldMask(_Strict):
    """One field of an Avro or JSON value (``address.city``, ``phones[]``,
    ``phones[].number``, ``attrs{}``) and how it is masked: ``redact`` (a string
    becomes ``replacement``, a number 0, keeping the type), ``hash`` (HMAC-SHA256 with
    the gateway's masking key: deterministic, format-preserving for strings),
    ``partial`` (strings: all but the last ``keep_last`` characters masked) or ``null``
    (only for a nullable field)."""

    path: Annotated[str, Field(min_length=1, max_length=512)]
    method: MaskMethodName
    keep_last: Annotated[int, Field(ge=0, le=64)] = 4
    replacement: Annotated[str, Field(max_length=64)] = "****"

    _lower_method = field_validator("method", mode="before")(_lower)


class CustomDetector(_Strict):
    """A named regular expression whose matches in text are masked."""

    name: Annotated[str, Field(pattern=RULE_ID.pattern, max_length=64)]
    pattern: Annotated[str, Field(min_length=1, max_length=1024)]

    _check_regex = field_validator("pattern")(_regex)


class ValueMask(_Strict):
    """How the value (or key) of a record is read and which parts are masked:
    ``format: avro`` (Confluent wire format, schema from the registry) or ``json`` with
    ``fields``; ``format: text`` with ``detectors`` (built-in names such as ``card``,
    ``email``, ``iban``; custom ones under ``custom``) masked by ``method``."""

    format: Literal["avro", "json", "text"]
    fields: tuple[FieldMask, ...] = ()
    detectors: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    custom: tuple[CustomDetector, ...] = ()
    method: MaskMethodName = "redact"
    keep_last: Annotated[int, Field(ge=0, le=64)] = 4
    replacement: Annotated[str, Field(max_length=64)] = "****"

    _lower_format = field_validator("format", mode="before")(_lower)

    @model_validator(mode="after")
    def _consistent(self) -> ValueMask:
        if self.format == "text":
            if self.fields:
                raise ValueError("format text masks detectors, not fields")
            if not (self.detectors or self.custom):
                raise ValueError("format text: list at least one of detectors, custom")
            if self.method == "null":
                raise ValueError("format text: method null does not apply to text")
        else:
            if self.detectors or self.custom:
                raise ValueError(f"format {self.format} masks fields, not detectors")
            if not self.fields:
                raise ValueError(f"format {self.format}: list at least one field")
        return self


class HeaderMask(_Strict):
    """A record header by name: ``drop`` removes it; the other methods mask its value
    as text."""

    name: Annotated[str, Field(min_length=1)]
    method: Literal["drop", "redact", "hash", "partial"]
    keep_last: Annotated[int, Field(ge=0, le=64)] = 4
    replacement: Annotated[str, Field(max_length=64)] = "****"

    _lower_method = field_validator("method", mode="before")(_lower)


class MaskingRule(_Strict):
    """What is masked in the records of some topics, for whom. ``subjects`` (absent:
    every identity) see masked data unless ``exempt`` matches them; ``apply_on``
    says where: ``fetch`` masks what is delivered, ``produce`` masks before the data is
    stored. ``require_schema`` refuses, on produce, records whose value is not in the
    Confluent wire format with a schema registered for the topic's ``<topic>-value``
    subject."""

    id: Annotated[str, Field(pattern=RULE_ID.pattern, max_length=128)]
    description: str | None = None
    topics: tuple[TopicPattern, ...]
    subjects: Subjects | None = None
    exempt: Subjects | None = None
    apply_on: tuple[Literal["fetch", "produce"], ...] = ("fetch",)
    value: ValueMask | None = None
    key: ValueMask | None = None
    headers: tuple[HeaderMask, ...] = ()
    require_schema: bool = False

    @field_validator("topics", "apply_on")
    @classmethod
    def _not_empty(cls, value: tuple[Any, ...]) -> tuple[Any, ...]:
        if not value:
            raise ValueError("list at least one")
        return value

    @model_validator(mode="after")
    def _masks_something(self) -> MaskingRule:
        if not (self.value or self.key or self.headers or self.require_schema):
            raise ValueError("give at least one of value, key, headers, require_schema")
        return self


class PolicyFile(_Strict):
    """The whole of one ``policies/*.yaml`` file: ``rules``, ``safeguards``,
    ``masking`` or several. Ids are unique across every rule, safeguard and masking
    rule of the whole set of files, which the loader checks (it knows every file and
    line)."""

    rules: tuple[Rule, ...] = ()
    safeguards: tuple[Safeguard, ...] = ()
    masking: tuple[MaskingRule, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _says_something(cls, value: Any) -> Any:
        if isinstance(value, dict) and not {"rules", "safeguards", "masking"} & set(value):
            raise ValueError("give a rules: list, a safeguards: list, a masking: list or more")
        return value
