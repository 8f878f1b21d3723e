"""What each identity may do: Kafka's resources and operations, policy files, decisions.

Sans-IO: nothing here reads sockets, talks to Kafka or knows the server; an import
contract keeps it that way. The vocabulary is Kafka's own (``ResourceType`` and
``Operation`` as Kafka's authorizer names them), so that a decision reads like an ACL
check a Kafka operator already knows.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ResourceType(enum.Enum):
    """The resources Kafka's authorizer checks (delegation tokens are not served)."""

    TOPIC = "topic"
    GROUP = "group"
    TRANSACTIONAL_ID = "transactional_id"
    CLUSTER = "cluster"


class Operation(enum.Enum):
    """Kafka's ACL operations (``ALL`` only ever appears in rules, never in requests)."""

    READ = "read"
    WRITE = "write"
    CREATE = "create"
    DELETE = "delete"
    ALTER = "alter"
    DESCRIBE = "describe"
    CLUSTER_ACTION = "cluster_action"
    DESCRIBE_CONFIGS = "describe_configs"
    ALTER_CONFIGS = "alter_configs"
    IDEMPOTENT_WRITE = "idempotent_write"
    ALL = "all"


CLUSTER_NAME = "kafka-cluster"
"""The one cluster resource's name, as Kafka names it."""


@dataclass(frozen=True, slots=True)
class Action:
    """One check: may the identity perform ``operation`` on this resource?"""

    resource_type: ResourceType
    name: str
    operation: Operation
