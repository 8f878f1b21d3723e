"""What the masking engine needs of a schema registry: a schema by its id.

:class:`SchemaSource` is met by the registry client (an external Confluent-compatible
registry over HTTP) and by the embedded registry (``schemas/``). The errors say whether
trying again can help: :class:`RegistryUnavailable` (unreachable, timed out, 5xx) may
pass; :class:`SchemaNotFound` means the registry does not know the id.

    RegistryError
     +-- SchemaNotFound        the registry answered: no such schema (or subject)
     +-- RegistryUnavailable   no answer, or an answer that is not one (try again)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from gateway.errors import GatewayError


class RegistryError(GatewayError):
    """A schema could not be had from the registry; messages never carry credentials."""


class SchemaNotFound(RegistryError):
    """The registry does not know this schema id or subject."""


class RegistryUnavailable(RegistryError):
    """The registry could not be asked (connection, timeout, server error)."""


@dataclass(frozen=True, slots=True)
class RegisteredSchema:
    """One schema as the registry holds it."""

    id: int
    schema: str
    schema_type: str = "AVRO"  # AVRO, JSON or PROTOBUF, as the registry names it
    subject: str | None = None
    version: int | None = None
    references: tuple[dict[str, object], ...] = field(default=())


class SchemaSource(Protocol):
    """Where writer schemas come from."""

    async def schema_by_id(self, schema_id: int) -> RegisteredSchema: ...

    async def registered(self, subject: str, schema_id: int) -> bool:
        """Whether the schema ``schema_id`` is one of ``subject``'s versions."""
        ...
