"""Masking one partition's records by a set of masking rules.

:class:`MaskingEngine` decodes a partition's batches (:mod:`gateway.masking.batches`),
fetches the writer schema of every Avro value and key the rules read (from a
:class:`~gateway.masking.registry.SchemaSource`: the registry client or the embedded
registry), masks each record's value, key and headers, and writes the changed batches
back. Maskers are compiled once per (schema id, rule) and kept in a bounded cache.

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
from gateway.masking.avro import AvroMasker, compile_masker, join_wire, split_wire
from gateway.masking.batches import (
    MAX_BATCH_BYTES,
    BatchError,
    Record,
    Rewritten,
    Run,
    decode,
    reassemble,
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
        run = await self._offload(len(records), lambda: _decoded(records, self._max_batch))
        ids = _schema_ids(run, rules)
        schemas: dict[int, str] = {}
        for schema_id in sorted(ids):
            schemas[schema_id] = await self._schema(schema_id)
        return await self._offload(len(records), lambda: self._apply(run, rules, schemas))

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
        self, run: Run, rules: Sequence[CompiledMasking], schemas: dict[int, str]
    ) -> PartitionResult:
        result = PartitionResult(b"")
        try:
            for item in run.batches:
                for record in item.records or ():
                    if self._mask_record(record, rules, schemas, result):
                        item.changed = True
                        result.masked += 1
            done = Rewritten(b"")
            result.records = reassemble(run, done)
            result.bytes_rewritten = done.bytes_rewritten
        except MaskingError as exc:
            raise MaskingFailed("undecodable", str(exc)) from exc
        except BatchError as exc:
            raise MaskingFailed("bad_batch", str(exc)) from exc
        return result

    def _mask_record(
        self,
        record: Record,
        rules: Sequence[CompiledMasking],
        schemas: dict[int, str],
        result: PartitionResult,
    ) -> bool:
        changed = False
        for compiled in rules:
            rule = compiled.rule
            counts: dict[str, int] = {}
            if rule.value is not None and record.value is not None:
                record.value = self._mask_value(
                    compiled, "value", rule.value, record.value, schemas, counts, result
                )
            if rule.key is not None and record.key is not None:
                record.key = self._mask_value(
                    compiled, "key", rule.key, record.key, schemas, counts, result
                )
            if rule.headers and record.headers:
                record.headers = self._mask_headers(rule.headers, record.headers, counts)
            if counts:
                changed = True
                result.records_by_rule[compiled.id] += 1
                result.fields.setdefault(compiled.id, set()).update(counts)
        return changed

    def _mask_value(
        self,
        compiled: CompiledMasking,
        part: str,
        spec: ValueMask,
        value: bytes,
        schemas: dict[int, str],
        counts: dict[str, int],
        result: PartitionResult,
    ) -> bytes:
        if spec.format == "avro":
            schema_id, body = split_wire(value)
            result.schema_ids.add(schema_id)
            masker: AvroMasker = self._cached(
                (schema_id, id(compiled), part),
                compiled,
                lambda: compile_masker(schemas[schema_id], _field_rules(part, spec), self._key),
            )
            new_body, found = masker.mask(body)
            if not found:
                return value
            _add(counts, found)
            return join_wire(schema_id, new_body)
        if spec.format == "json":
            json_masker: JsonMasker = self._cached(
                (0, id(compiled), part),
                compiled,
                lambda: JsonMasker(_field_rules(part, spec), self._key),
            )
            new, found = json_masker.mask(value)
        else:
            text_masker: TextMasker = self._cached(
                (0, id(compiled), part), compiled, lambda: _text_masker(spec, self._key)
            )
            new, found = text_masker.mask_bytes_text(value)
            found = {f"{part}:{name}": n for name, n in found.items()}
        if not found:
            return value
        _add(counts, found)
        return new

    def _mask_headers(
        self,
        masks: Sequence[HeaderMask],
        headers: list[tuple[str, bytes | None]],
        counts: dict[str, int],
    ) -> list[tuple[str, bytes | None]]:
        by_name = {m.name: m for m in masks}
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


def _decoded(records: bytes | memoryview, max_batch_bytes: int) -> Run:
    try:
        return decode(records, max_batch_bytes)
    except BatchError as exc:
        raise MaskingFailed("bad_batch", str(exc)) from exc


def _schema_ids(run: Run, rules: Sequence[CompiledMasking]) -> set[int]:
    """The schema ids of every Avro value and key the rules will read."""
    avro_value = any(r.rule.value is not None and r.rule.value.format == "avro" for r in rules)
    avro_key = any(r.rule.key is not None and r.rule.key.format == "avro" for r in rules)
    ids: set[int] = set()
    if not (avro_value or avro_key):
        return ids
    try:
        for item in run.batches:
            for record in item.records or ():
                if avro_value and record.value is not None:
                    ids.add(split_wire(record.value)[0])
                if avro_key and record.key is not None:
                    ids.add(split_wire(record.key)[0])
    except NotWireFormat as exc:
        raise MaskingFailed("not_wire_format", str(exc)) from exc
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
