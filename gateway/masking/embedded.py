"""The embedded schema registry: the ``.avsc`` files of ``schemas/``, read-only.

Each file ``<subject>.avsc`` is version 1 of that subject (``customers-value.avsc`` is
the subject ``customers-value``, the value schema of topic ``customers``). A schema's
id is derived from its Avro parsing canonical form (the first four bytes of its
SHA-256, as a positive 31-bit number), so every gateway reading the same files gives
the same ids, and adding a file never changes another's id. Two schemas whose ids
collide are refused at load, naming both files.

The gateway reads schemas from it directly (:class:`~gateway.masking.schemas.SchemaSource`),
and can serve it to producers over Confluent's REST API (:func:`app`), so that both
sides use the same ids: schemas by id, subjects and their versions, lookups, and
registration, which answers the existing id for a schema one of the files holds and
refuses any other (this registry is changed by changing ``schemas/``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from fastavro import parse_schema
from fastavro.schema import to_parsing_canonical_form

from gateway.errors import ConfigError
from gateway.masking.schemas import RegisteredSchema, SchemaNotFound

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


@dataclass(frozen=True, slots=True)
class _Entry:
    subject: str
    schema: RegisteredSchema
    canonical: str
    source: Path


def schema_id(canonical: str) -> int:
    """The id of a schema with this parsing canonical form: 1 .. 2**31 - 1."""
    value = int.from_bytes(hashlib.sha256(canonical.encode("utf-8")).digest()[:4], "big")
    return (value & 0x7FFFFFFF) or 1


def canonical_form(schema: Any) -> str:
    return str(to_parsing_canonical_form(parse_schema(schema)))


class EmbeddedRegistry:
    """Subjects and schemas from a directory of ``.avsc`` files."""

    def __init__(self, entries: list[_Entry]) -> None:
        self._by_subject = {e.subject: e for e in entries}
        self._by_id: dict[int, _Entry] = {}
        for entry in entries:
            self._by_id.setdefault(entry.schema.id, entry)

    @classmethod
    def load(cls, directory: Path) -> EmbeddedRegistry:
        """Read ``directory/*.avsc``. ConfigError naming the file for one that is not
        JSON or not a valid Avro schema, and for two schemas with the same id."""
        if not directory.is_dir():
            raise ConfigError(f"masking.schemas_dir {directory}: not a directory")
        entries: list[_Entry] = []
        ids: dict[int, _Entry] = {}
        for path in sorted(directory.glob("*.avsc")):
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
            except OSError as exc:
                raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
            except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
                raise ConfigError(f"{path}: not JSON: {exc}") from exc
            try:
                canonical = canonical_form(loaded)
            except Exception as exc:  # fastavro's SchemaParseException, UnknownType, ...
                raise ConfigError(f"{path}: not a valid Avro schema: {exc}") from exc
            found = schema_id(canonical)
            text = json.dumps(loaded, separators=(",", ":"))
            entry = _Entry(
                path.stem,
                RegisteredSchema(id=found, schema=text, subject=path.stem, version=1),
                canonical,
                path,
            )
            other = ids.get(found)
            if other is not None and other.canonical != canonical:
                raise ConfigError(
                    f"{path}: its schema id {found} is already that of {other.source}; "
                    "change either schema (a doc or field order) to tell them apart"
                )
            ids[found] = entry
            entries.append(entry)
        return cls(entries)

    @property
    def subjects(self) -> list[str]:
        return sorted(self._by_subject)

    def subject(self, name: str) -> RegisteredSchema:
        entry = self._by_subject.get(name)
        if entry is None:
            raise SchemaNotFound(f"embedded registry: subject {name} not found")
        return entry.schema

    def lookup(self, subject: str, schema: Any) -> RegisteredSchema | None:
        """The subject's version whose schema is ``schema`` (same canonical form)."""
        entry = self._by_subject.get(subject)
        if entry is None:
            return None
        try:
            canonical = canonical_form(schema)
        except Exception:  # noqa: BLE001 - an unparsable schema is no version of anything
            return None
        return entry.schema if canonical == entry.canonical else None

    async def schema_by_id(self, schema_id: int) -> RegisteredSchema:
        entry = self._by_id.get(schema_id)
        if entry is None:
            raise SchemaNotFound(f"embedded registry: schema {schema_id} not found")
        return entry.schema

    async def registered(self, subject: str, schema_id: int) -> bool:
        entry = self._by_subject.get(subject)
        return entry is not None and entry.schema.id == schema_id

    async def close(self) -> None:
        return None


# ------------------------------------------------------------------ the REST API


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type=CONTENT_TYPE)


def _error(status: int, code: int, message: str) -> web.Response:
    return _json({"error_code": code, "message": message}, status)


class _Api:
    """Confluent's registry API over an embedded registry, read-only."""

    def __init__(self, registry: EmbeddedRegistry) -> None:
        self.registry = registry

    async def subjects(self, request: web.Request) -> web.Response:
        return _json(self.registry.subjects)

    async def config(self, request: web.Request) -> web.Response:
        return _json({"compatibilityLevel": "BACKWARD"})

    async def by_id(self, request: web.Request) -> web.Response:
        schema = await self._schema(request)
        if schema is None:
            return _error(404, 40403, "Schema not found")
        return _json({"schema": schema.schema})

    async def raw_by_id(self, request: web.Request) -> web.Response:
        schema = await self._schema(request)
        if schema is None:
            return _error(404, 40403, "Schema not found")
        return _json(json.loads(schema.schema))

    async def id_versions(self, request: web.Request) -> web.Response:
        schema = await self._schema(request)
        if schema is None:
            return _error(404, 40403, "Schema not found")
        names = [n for n in self.registry.subjects if self.registry.subject(n).id == schema.id]
        return _json([{"subject": name, "version": 1} for name in names])

    async def versions(self, request: web.Request) -> web.Response:
        if request.match_info["subject"] not in self.registry.subjects:
            return _error(404, 40401, "Subject not found")
        return _json([1])

    async def version(self, request: web.Request) -> web.Response:
        name = request.match_info["subject"]
        if name not in self.registry.subjects:
            return _error(404, 40401, "Subject not found")
        if request.match_info["version"] not in ("1", "latest", "-1"):
            return _error(404, 40402, "Version not found")
        return _json(_version(self.registry.subject(name)))

    async def lookup(self, request: web.Request) -> web.Response:
        name = request.match_info["subject"]
        if name not in self.registry.subjects:
            return _error(404, 40401, "Subject not found")
        found = self.registry.lookup(name, await _posted(request))
        if found is None:
            return _error(404, 40403, "Schema not found")
        return _json(_version(found))

    async def register(self, request: web.Request) -> web.Response:
        name = request.match_info["subject"]
        found = self.registry.lookup(name, await _posted(request))
        if found is None:
            message = (
                f"this registry is read-only: add the schema to schemas/{name}.avsc "
                "and restart the gateway"
            )
            return _error(409, 409, message)
        return _json({"id": found.id})

    async def _schema(self, request: web.Request) -> RegisteredSchema | None:
        try:
            return await self.registry.schema_by_id(int(request.match_info["id"]))
        except (ValueError, SchemaNotFound):
            return None


def app(registry: EmbeddedRegistry) -> web.Application:
    """Confluent's registry API over ``registry``, read-only."""
    api = _Api(registry)
    application = web.Application()
    application.add_routes(
        [
            web.get("/subjects", api.subjects),
            web.get("/config", api.config),
            web.get("/config/{subject}", api.config),
            web.get("/schemas/ids/{id}", api.by_id),
            web.get("/schemas/ids/{id}/schema", api.raw_by_id),
            web.get("/schemas/ids/{id}/versions", api.id_versions),
            web.get("/subjects/{subject}/versions", api.versions),
            web.get("/subjects/{subject}/versions/{version}", api.version),
            web.post("/subjects/{subject}", api.lookup),
            web.post("/subjects/{subject}/versions", api.register),
        ]
    )
    return application


async def _posted(request: web.Request) -> Any:
    try:
        body = await request.json()
        return json.loads(body["schema"])
    except (ValueError, KeyError, TypeError):
        return None


def _version(schema: RegisteredSchema) -> dict[str, Any]:
    return {"subject": schema.subject, "version": 1, "id": schema.id, "schema": schema.schema}
