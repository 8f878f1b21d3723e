"""Masking one partition's records by a set of masking rules.

:class:`MaskingEngine` walks a partition's batches once
(:func:`gateway.masking.batches.edit_fields`), masks each record's value, key and
headers, and writes back only the records and batches that changed. Avro maskers are
compiled once per (schema id, rule) and kept in a bounded cache; a writer schema is
fetched (from a :class:`~gateway.masking.registry.SchemaSource`: the registry client
or the embedded registry) only when a schema id has no masker yet, and the pass is
then made again with it.

Anything that stops a record from being masked raises :class:`MaskingFailed` with a
short ``cause`` (for the metric and the audit event): the caller refuses the whole
partition, so no clear byte of it leaves (fail closed). Large partitions are decoded
and masked on a worker thread (``inline_max_bytes``).
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gateway import metrics
from gateway.errors import GatewayError
from gateway.masking import MaskingError, NotWireFormat
from gateway.masking.avro import AvroMasker, compile_masker, split_wire
from gateway.masking.batches import (
    MAX_BATCH_BYTES,
    BatchError,
    FieldEdit,
    Headers,
    Run,
    decode,
    edit_fields,
)
from gateway.masking.detectors import Detector, TextMasker, builtin
from gateway.masking.jsonmask import JsonMasker
from gateway.masking.methods import MaskKey, Method, mask_string
from gateway.masking.paths import FieldRule
from gateway.masking.schemas import RegistryUnavailable, SchemaNotFound, SchemaSource
from gateway.policy.masking import CompiledMasking
from gateway.policy.model import HeaderMask, ValueMask

T = TypeVar("T")

# Compiled maskers kept (per schema id and rule); ids never change meaning.
MASKER_CACHE_SIZE = 1024
# Looked up once: a labels() call per record would cost more than the lookup it counts.
_CACHE_HIT = metrics.MASKER_CACHE.labels("hit")
_CACHE_MISS = metrics.MASKER_CACHE.labels("miss")


class MaskingFailed(GatewayError):
    """A partition could not be masked; ``cause`` names the kind of failure."""

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause


@dataclass
class PartitionResult:
    """A masked partition's records and what was masked."""

    records: bytes
    masked: int = 0  # records changed
    records_by_rule: Counter[str] = field(default_factory=Counter)
    fields: dict[str, set[str]] = field(default_factory=dict)  # rule id -> paths/detectors
    schema_ids: set[int] = field(default_factory=set)
    bytes_rewritten: int = 0

    def evidence(self) -> dict[str, Any]:
        """What the audit event of the request records of this partition."""
        return {
            "records": self.masked,
            "rules": [
                {"rule": rule, "records": n, "fields": sorted(self.fields.get(rule, ()))}
                for rule, n in sorted(self.records_by_rule.items())
            ],
            "schema_ids": sorted(self.schema_ids),
        }


class MaskingEngine:
    """Masks partitions; one per gateway, shared by every connection."""

    def __init__(
        self,
        schemas: SchemaSource,
        key: MaskKey,
        inline_max_bytes: int = 64 * 1024,
        *,
        max_batch_bytes: int = MAX_BATCH_BYTES,
    ) -> None:
        self._schemas = schemas
        self._key = key
        self._inline_max = inline_max_bytes
        self._max_batch = max_batch_bytes
        self._maskers: OrderedDict[tuple[int, int, str], tuple[Any, Any]] = OrderedDict()

    async def mask(
        self, topic: str, records: bytes | memoryview, rules: Sequence[CompiledMasking]
    ) -> PartitionResult:
        # One pass masks and writes back. A writer schema is needed only where no masker
        # for it is cached yet: the pass then stops, the schema ids of every record the
        # rules read are collected, their schemas fetched, and the pass made again (ids
        # never change meaning, so it agrees). Two passes at most, however many new ids.
        schemas: dict[int, str] = {}
        size = len(records)
        try:
            return await self._offload(size, lambda: self._apply(records, rules, schemas))
        except _NeedSchema:
            pass
        ids = await self._offload(size, lambda: _wire_ids(records, rules, self._max_batch))
        for schema_id in sorted(ids):
            schemas[schema_id] = await self._schema(schema_id)
        try:
            return await self._offload(size, lambda: self._apply(records, rules, schemas))
        except _NeedSchema as need:  # every id was fetched: this cannot be
            raise MaskingFailed(
                "undecodable", f"schema {need.schema_id} was needed after it was fetched"
            ) from None

    async def unregistered(self, topic: str, records: bytes | memoryview) -> str | None:
        """Why ``records`` may not be written to a topic that requires registered schemas
        (each value in Confluent wire format, its schema one of the ``<topic>-value``
        subject's versions), or None when they may. A registry that cannot be asked
        raises :class:`MaskingFailed` (the request is refused, retriably)."""
        run = await self._offload(len(records), lambda: _decoded(records, self._max_batch))
        subject = f"{topic}-value"
        ids: set[int] = set()
        for item in run.batches:
            for record in item.records or ():
                if record.value is None:
                    continue  # a tombstone carries no value to check
                try:
                    ids.add(split_wire(record.value)[0])
                except NotWireFormat:
                    offset = item.batch.base_offset + record.offset_delta
                    return (
                        f"record {offset} of the batch is not in Confluent wire format "
                        f"(magic byte 0, 4-byte schema id); {topic} requires schemas "
                        f"registered for {subject}"
                    )
        for schema_id in sorted(ids):
            try:
                known = await self._schemas.registered(subject, schema_id)
            except SchemaNotFound:
                known = False
            except RegistryUnavailable as exc:
                raise MaskingFailed("registry_unavailable", str(exc)) from exc
            if not known:
                return f"schema id {schema_id} is not registered for subject {subject}"
        return None

    async def _offload(self, size: int, work: Callable[[], T]) -> T:
        if size <= self._inline_max:
            return work()
        return await asyncio.to_thread(work)

    async def _schema(self, schema_id: int) -> str:
        try:
            found = await self._schemas.schema_by_id(schema_id)
        except SchemaNotFound as exc:
            raise MaskingFailed("schema_not_found", str(exc)) from exc
        except RegistryUnavailable as exc:
            raise MaskingFailed("registry_unavailable", str(exc)) from exc
        if found.schema_type != "AVRO":
            raise MaskingFailed(
                "unsupported_schema", f"schema {schema_id} is {found.schema_type}, not AVRO"
            )
        return str(found.schema)

    def _apply(
        self,
        records: bytes | memoryview,
        rules: Sequence[CompiledMasking],
        schemas: dict[int, str],
    ) -> PartitionResult:
        result = PartitionResult(b"")
        plans = [self._plan(compiled, schemas, result) for compiled in rules]
        with_headers = any(plan.headers is not None for plan in plans)
        try:
            done = edit_fields(
                records,
                _editor(plans, result),
                with_headers=with_headers,
                max_batch_bytes=self._max_batch,
            )
        except NotWireFormat as exc:
            raise MaskingFailed("not_wire_format", str(exc)) from exc
        except MaskingError as exc:
            raise MaskingFailed("undecodable", str(exc)) from exc
        except BatchError as exc:
            raise MaskingFailed("bad_batch", str(exc)) from exc
        result.records = done.records
        result.bytes_rewritten = done.bytes_rewritten
        return result

    def _plan(
        self, compiled: CompiledMasking, schemas: dict[int, str], result: PartitionResult
    ) -> _Plan:
        rule = compiled.rule
        value = key = None
        if rule.value is not None:
            value = self._part(compiled, "value", rule.value, schemas, result.schema_ids)
        if rule.key is not None:
            key = self._part(compiled, "key", rule.key, schemas, result.schema_ids)
        headers = None
        if rule.headers:
            masks = {m.name: m for m in rule.headers}
            headers = lambda found, counts: self._mask_headers(masks, found, counts)  # noqa: E731
        fields = result.fields.setdefault(compiled.id, set())
        return _Plan(compiled.id, fields, value, key, headers)

    def _part(
        self,
        compiled: CompiledMasking,
        part: str,
        spec: ValueMask,
        schemas: dict[int, str],
        schema_ids: set[int],
    ) -> PartMasker:
        """How this partition's values (or keys) are masked by one rule: bytes in,
        (masked bytes, counts) out."""
        if spec.format == "avro":
            return _AvroPart(self, compiled, part, spec, schemas, schema_ids).mask
        if spec.format == "json":
            json_masker: JsonMasker = self._cached(
                (0, id(compiled), part),
                compiled,
                lambda: JsonMasker(_field_rules(part, spec), self._key),
            )
            return json_masker.mask
        text_masker: TextMasker = self._cached(
            (0, id(compiled), part), compiled, lambda: _text_masker(spec, self._key)
        )

        def text(value: bytes) -> tuple[bytes, dict[str, int]]:
            new, found = text_masker.mask_bytes_text(value)
            return new, {f"{part}:{name}": n for name, n in found.items()}

        return text

    def avro_masker(
        self,
        compiled: CompiledMasking,
        part: str,
        spec: ValueMask,
        schema_id: int,
        schema: Callable[[], str],
    ) -> AvroMasker:
        """The masker of ``compiled``'s ``part`` (value or key) for one writer schema;
        ``schema`` gives the schema's text where no masker is cached."""
        return self._cached(
            (schema_id, id(compiled), part),
            compiled,
            lambda: compile_masker(schema(), _field_rules(part, spec), self._key),
        )

    def _mask_headers(
        self,
        by_name: dict[str, HeaderMask],
        headers: list[tuple[str, bytes | None]],
        counts: dict[str, int],
    ) -> list[tuple[str, bytes | None]]:
        out: list[tuple[str, bytes | None]] = []
        for name, value in headers:
            mask = by_name.get(name)
            if mask is None:
                out.append((name, value))
                continue
            counts[f"header:{name}"] = counts.get(f"header:{name}", 0) + 1
            if mask.method == "drop":
                continue
            if value is None:
                out.append((name, value))
                continue
            method = Method(mask.method, keep_last=mask.keep_last, replacement=mask.replacement)
            text = value.decode("utf-8", "surrogateescape")
            masked = mask_string(text, method, self._key)
            out.append(
                (name, None if masked is None else masked.encode("utf-8", "surrogateescape"))
            )
        return out

    def _cached(
        self, key: tuple[int, int, str], compiled: CompiledMasking, make: Callable[[], T]
    ) -> T:
        found = self._maskers.get(key)
        # The rule object is kept beside its masker: its id() cannot be reused while
        # the entry lives, so a reloaded policy never meets an older rule's masker.
        if found is not None and found[0] is compiled:
            self._maskers.move_to_end(key)
            _CACHE_HIT.inc()
            return found[1]  # type: ignore[no-any-return]
        _CACHE_MISS.inc()
        made = make()
        self._maskers[key] = (compiled, made)
        while len(self._maskers) > MASKER_CACHE_SIZE:
            self._maskers.popitem(last=False)
        return made


Edited = tuple[bytes | None, bytes | None, Headers | None] | None
# Masks one record's value or key: its bytes in, (masked bytes, counts by field) out.
PartMasker = Callable[[bytes], tuple[bytes, dict[str, int]]]
HeaderMasker = Callable[
    [list[tuple[str, bytes | None]], dict[str, int]], list[tuple[str, bytes | None]]
]


@dataclass(slots=True)
class _Plan:
    """One rule, ready for one partition's records."""

    rule_id: str
    fields: set[str]  # the partition result's paths and detectors of this rule
    value: PartMasker | None
    key: PartMasker | None
    headers: HeaderMasker | None

    def mask(
        self, key: bytes | None, value: bytes | None, headers: Headers | None
    ) -> tuple[bytes | None, bytes | None, Headers | None, dict[str, int]]:
        """One record's key, value and headers after this rule, and what it masked."""
        counts: dict[str, int] = {}
        if self.value is not None and value is not None:
            new, found = self.value(value)
            if found:
                value = new
                counts.update(found)
        if self.key is not None and key is not None:
            new, found = self.key(key)
            if found:
                key = new
                _add(counts, found)
        if self.headers is not None and headers:
            headers = self.headers(headers, counts)
        return key, value, headers, counts


def _editor(plans: list[_Plan], result: PartitionResult) -> FieldEdit:
    """The edit of each record of a partition by ``plans``; it counts into ``result``."""
    if len(plans) == 1 and plans[0].key is None and plans[0].headers is None:
        return _value_editor(plans[0], result)
    by_rule = result.records_by_rule

    def edit(key: bytes | None, value: bytes | None, headers: Headers | None) -> Edited:
        masked = False
        for plan in plans:
            key, value, headers, counts = plan.mask(key, value, headers)
            if counts:
                masked = True
                by_rule[plan.rule_id] += 1
                plan.fields.update(counts)
        if not masked:
            return None
        result.masked += 1
        return key, value, headers

    return edit


def _value_editor(only: _Plan, result: PartitionResult) -> FieldEdit:
    """:func:`_editor` for the common case, one rule on values, without its loop."""
    by_rule = result.records_by_rule
    mask_value = only.value
    fields = only.fields
    if mask_value is None:
        return lambda key, value, headers: None

    def value_only(key: bytes | None, value: bytes | None, headers: Headers | None) -> Edited:
        if value is None:
            return None
        new, found = mask_value(value)
        if not found:
            return None
        by_rule[only.rule_id] += 1
        fields.update(found)
        result.masked += 1
        return key, new, None

    return value_only


class _NeedSchema(Exception):
    """A pass met a schema id with no masker cached and its schema not yet fetched."""

    def __init__(self, schema_id: int) -> None:
        super().__init__(f"schema {schema_id} is needed")
        self.schema_id = schema_id


class _AvroPart:
    """Avro values (or keys) in Confluent wire format under one rule: a masker per
    schema id, looked up in the engine's cache once per partition."""

    def __init__(
        self,
        engine: MaskingEngine,
        compiled: CompiledMasking,
        part: str,
        spec: ValueMask,
        schemas: dict[int, str],
        schema_ids: set[int],
    ) -> None:
        self._engine = engine
        self._compiled = compiled
        self._part = part
        self._spec = spec
        self._schemas = schemas
        self._schema_ids = schema_ids  # every id met, for the evidence
        self._maskers: dict[bytes, AvroMasker] = {}  # by wire header (magic byte, id)

    def mask(self, value: bytes) -> tuple[bytes, dict[str, int]]:
        header = value[:5]
        found = self._maskers.get(header)
        if found is None:
            found = self._maskers[header] = self._masker(value)
        return found.mask_wire(value)

    def _masker(self, value: bytes) -> AvroMasker:
        schema_id, _ = split_wire(value)
        self._schema_ids.add(schema_id)

        def schema() -> str:
            found = self._schemas.get(schema_id)
            if found is None:
                raise _NeedSchema(schema_id)
            return found

        return self._engine.avro_masker(self._compiled, self._part, self._spec, schema_id, schema)


def _decoded(records: bytes | memoryview, max_batch_bytes: int) -> Run:
    try:
        return decode(records, max_batch_bytes)
    except BatchError as exc:
        raise MaskingFailed("bad_batch", str(exc)) from exc


def _wire_ids(
    records: bytes | memoryview, rules: Sequence[CompiledMasking], max_batch_bytes: int
) -> set[int]:
    """The schema ids of every Avro value and key the rules read, in one walk."""
    values = any(r.rule.value is not None and r.rule.value.format == "avro" for r in rules)
    keys = any(r.rule.key is not None and r.rule.key.format == "avro" for r in rules)
    ids: set[int] = set()

    def collect(key: bytes | None, value: bytes | None, headers: Headers | None) -> Edited:
        if values and value is not None:
            ids.add(split_wire(value)[0])
        if keys and key is not None:
            ids.add(split_wire(key)[0])
        return None

    try:
        edit_fields(records, collect, max_batch_bytes=max_batch_bytes)
    except NotWireFormat as exc:
        raise MaskingFailed("not_wire_format", str(exc)) from exc
    except BatchError as exc:
        raise MaskingFailed("bad_batch", str(exc)) from exc
    return ids


def _field_rules(part: str, spec: ValueMask) -> list[FieldRule]:
    # The rule id of each field says which part and path it masked, for the evidence.
    return [
        FieldRule(
            f.path,
            Method(f.method, keep_last=f.keep_last, replacement=f.replacement),
            f"{part}:{f.path}" if part != "value" else f.path,
        )
        for f in spec.fields
    ]


def _text_masker(spec: ValueMask, key: MaskKey) -> TextMasker:
    detectors: list[Detector] = [builtin(name) for name in spec.detectors]
    detectors += [Detector.custom(c.name, c.pattern) for c in spec.custom]
    method = Method(spec.method, keep_last=spec.keep_last, replacement=spec.replacement)
    return TextMasker(detectors, method, key)


def _add(counts: dict[str, int], found: dict[str, int]) -> None:
    for name, n in found.items():
        counts[name] = counts.get(name, 0) + n
