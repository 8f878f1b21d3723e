"""Masking Avro bodies in Confluent wire format, field by field, keeping them valid.

:func:`compile_masker` resolves :class:`~gateway.masking.paths.FieldRule` paths
against one writer schema once; :meth:`AvroMasker.mask` then masks the named values
with :mod:`~gateway.masking.methods`, so any consumer's deserializer still reads the
body. It scans the body to those values and splices in their masked encoding
(:mod:`~gateway.masking.avroscan`), leaving every other byte as written; where a scan
cannot (a recursive schema, a block that states its byte size around a masked value)
it decodes the body with fastavro and encodes it again with the same schema. The two
agree value for value (a property test holds them to it).

Decisions:

- Logical types are dropped from the schema before compiling: their encoding is the
  underlying type's, so values are masked as that type (a ``date`` as an ``int``, a
  ``decimal`` as ``bytes``/``fixed``, a ``uuid`` as a ``string``) and every byte the
  masker does not touch is written back as it was read. A hashed or redacted ``uuid``
  is no longer a well-formed UUID.
- A path through a union applies in every branch where it exists. ``null`` is allowed
  only where the value's type is a union with ``null``.
- Rules naming a record, array or map with ``redact``, ``hash`` or ``partial`` are
  refused: name the leaves (``phones[]``). ``null`` on a nullable record is allowed.
- Two rules with the same path are refused. A rule that ends above another (``address``
  with ``null`` and ``address.city``) wins; the deeper one is reported unmatched.
- A scanned value keeps the union branch it was read with. Decoded and encoded again,
  a union with both ``int`` and ``long`` (or ``float`` and ``double``) may come back in
  the other branch of that pair with an equal value; every other value is written with
  the branch it was read with (named types travel as ``(name, value)`` pairs).
- With no rule matching the schema, :meth:`AvroMasker.mask` returns the body untouched
  without decoding it: it then holds nothing the rules protect.

Nothing is cached at module level; the caller keeps maskers per (schema id, rules).
This module does no I/O and fetches no schema.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from gateway.masking import MaskingError, NotWireFormat
from gateway.masking.avroscan import Scanner, Unscannable, compile_scanner
from gateway.masking.methods import (
    MaskKey,
    Method,
    mask_bool,
    mask_bytes,
    mask_enum,
    mask_fixed,
    mask_float,
    mask_int,
    string_masker,
)
from gateway.masking.paths import ITEMS, VALUES, FieldRule, RuleNode, rule_tree

__all__ = [
    "AvroMasker",
    "FieldRule",
    "compile_masker",
    "join_wire",
    "split_wire",
]

MAGIC = 0
_HEADER = struct.Struct(">bI")

Counts = dict[str, int]
# A compiled step: takes a decoded value and the per-rule counts, returns the value to
# write (possibly the same object, changed in place).
Walker = Callable[[Any, Counts], Any]

_COMPLEX = frozenset({"record", "error", "enum", "fixed", "array", "map"})


def _is_complex(kind: Any) -> bool:
    return isinstance(kind, str) and kind in _COMPLEX


def split_wire(value: bytes | memoryview) -> tuple[int, memoryview]:
    """Split a Confluent wire-format value into its schema id and Avro body."""
    view = memoryview(value)
    if len(view) < _HEADER.size:
        raise NotWireFormat(f"value of {len(view)} bytes is too short for Confluent wire format")
    magic, schema_id = _HEADER.unpack_from(view)
    if magic != MAGIC:
        raise NotWireFormat(f"value starts with byte {magic & 0xFF}, not the magic byte 0")
    return schema_id, view[_HEADER.size :]


def join_wire(schema_id: int, body: bytes | memoryview) -> bytes:
    """Prefix an Avro body with the magic byte and its schema id."""
    if not 0 <= schema_id <= 0xFFFFFFFF:
        raise MaskingError(f"schema id {schema_id} does not fit 4 unsigned bytes")
    return _HEADER.pack(MAGIC, schema_id) + bytes(body)


def _strip_logical(schema: Any) -> Any:
    """A copy of ``schema`` without logical types (their encoding is the base type's)."""
    if isinstance(schema, list):
        return [_strip_logical(branch) for branch in schema]
    if isinstance(schema, dict):
        return {
            key: (value if key in ("default", "symbols") else _strip_logical(value))
            for key, value in schema.items()
            if key != "logicalType"
        }
    return schema


def _type_name(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        return str(schema["type"])
    return str(schema)


class _Compiler:
    """Resolves a rule tree against one parsed schema, building walkers."""

    def __init__(self, named: Mapping[str, Any], key: MaskKey | None) -> None:
        self._named = named
        self._key = key
        self.matched: set[str] = set()

    def resolve(self, schema: Any) -> Any:
        """Follow named references and ``{"type": "int"}`` wrappers to a definition."""
        while True:
            if isinstance(schema, str) and schema in self._named:
                schema = self._named[schema]
            elif isinstance(schema, dict) and not _is_complex(schema["type"]):
                schema = schema["type"]
            else:
                return schema

    def compile(self, schema: Any, node: RuleNode, path: str) -> Walker | None:
        schema = self.resolve(schema)
        if node.rule is not None:
            self.matched.add(node.rule.rule_id)
            return self._leaf(schema, node.rule, path)
        if isinstance(schema, list):
            return self._union(schema, lambda branch: self.compile(branch, node, path))
        kind = _type_name(schema)
        if kind in ("record", "error"):
            return self._record(schema, node, path)
        if kind == "array" and ITEMS in node.children:
            inner = self.compile(schema["items"], node.children[ITEMS], path + ITEMS)
            return None if inner is None else _each_item(inner)
        if kind == "map" and VALUES in node.children:
            inner = self.compile(schema["values"], node.children[VALUES], path + VALUES)
            return None if inner is None else _each_value(inner)
        return None

    def _record(self, schema: Mapping[str, Any], node: RuleNode, path: str) -> Walker | None:
        steps: list[tuple[str, Walker]] = []
        for fld in schema["fields"]:
            child = node.children.get(fld["name"])
            if child is None:
                continue
            where = f"{path}.{fld['name']}" if path else fld["name"]
            inner = self.compile(fld["type"], child, where)
            if inner is not None:
                steps.append((fld["name"], inner))
        return _fields(steps) if steps else None

    def _union(self, branches: list[Any], each: Callable[[Any], Walker | None]) -> Walker | None:
        by_python_type: dict[type, Walker] = {}
        by_name: dict[str, Walker] = {}
        for branch in branches:
            walker = each(branch)
            if walker is None:
                continue
            resolved = self.resolve(branch)
            if isinstance(resolved, dict) and "name" in resolved:
                by_name[resolved["name"]] = walker
            else:
                for python_type in _PYTHON_TYPES[_type_name(resolved)]:
                    by_python_type.setdefault(python_type, walker)
        if not by_python_type and not by_name:
            return None
        return _dispatch(by_python_type, by_name)

    def _leaf(self, schema: Any, rule: FieldRule, path: str) -> Walker:
        method = rule.method
        schema = self.resolve(schema)
        if isinstance(schema, list):
            if method.kind == "null":
                if "null" not in schema:
                    raise MaskingError(
                        f"rule {rule.rule_id}: method null at {path!r} needs a union with null,"
                        f" not {_describe_union(schema, self.resolve)}"
                    )
                return _counted(rule.rule_id, lambda value: None)
            walker = self._union(
                [b for b in schema if b != "null"], lambda branch: self._leaf(branch, rule, path)
            )
            assert walker is not None  # a union holds at least one non-null branch
            return walker
        kind = _type_name(schema)
        if method.kind == "null":
            raise MaskingError(
                f"rule {rule.rule_id}: method null at {path!r} needs a union with null, not {kind}"
            )
        if method.kind == "partial" and kind != "string":
            raise MaskingError(
                f"rule {rule.rule_id}: method partial at {path!r} needs a string, not {kind}"
            )
        mask = self._masker(schema, kind, method)
        if mask is None:
            raise MaskingError(
                f"rule {rule.rule_id}: method {method.kind} cannot apply to {kind} at {path!r};"
                " name the fields inside it"
            )
        return _counted(rule.rule_id, mask)

    def value_masker(self, schema: Any, rule: FieldRule) -> Callable[[Any], Any]:
        """The masker of one value of a primitive, enum or fixed ``schema`` (for the
        scan; :meth:`compile` has refused every rule this has no masker for)."""
        mask = self._masker(schema, _type_name(schema), rule.method)
        if mask is None:
            raise Unscannable(f"no masker for {_type_name(schema)}")
        return mask

    def _masker(self, schema: Any, kind: str, method: Method) -> Callable[[Any], Any] | None:
        key = self._key
        if method.kind == "hash" and key is None and kind != "boolean":
            raise MaskingError("method hash needs a masking key and none is configured")
        simple: dict[str, Callable[[Any], Any]] = {
            "string": string_masker(method, key),
            "int": lambda v: mask_int(v, method, key, bits=32),
            "long": lambda v: mask_int(v, method, key, bits=64),
            "float": lambda v: mask_float(v, method, key),
            "double": lambda v: mask_float(v, method, key),
            "boolean": lambda v: mask_bool(v, method, key),
            "bytes": lambda v: mask_bytes(v, method, key),
        }
        if kind in simple:
            return simple[kind]
        if kind == "fixed":
            size = int(schema["size"])
            return lambda v: mask_fixed(v, size, method, key)
        if kind == "enum":
            symbols = tuple(schema["symbols"])
            return lambda v: mask_enum(v, symbols, method, key)
        if kind == "null":
            return lambda v: v
        return None


_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "null": (type(None),),
    "boolean": (bool,),
    "int": (int,),
    "long": (int,),
    "float": (float,),
    "double": (float,),
    "bytes": (bytes,),
    "string": (str,),
    "array": (list,),
    "map": (dict,),
}


def _describe_union(branches: list[Any], resolve: Callable[[Any], Any]) -> str:
    return "union of " + ", ".join(_type_name(resolve(b)) for b in branches)


def _counted(rule_id: str, mask: Callable[[Any], Any]) -> Walker:
    def walk(value: Any, counts: Counts) -> Any:
        if value is None:
            return None
        counts[rule_id] = counts.get(rule_id, 0) + 1
        return mask(value)

    return walk


def _fields(steps: list[tuple[str, Walker]]) -> Walker:
    def walk(record: Any, counts: Counts) -> Any:
        for name, inner in steps:
            record[name] = inner(record[name], counts)
        return record

    return walk


def _each_item(inner: Walker) -> Walker:
    return lambda items, counts: [inner(item, counts) for item in items]


def _each_value(inner: Walker) -> Walker:
    return lambda values, counts: {k: inner(v, counts) for k, v in values.items()}


def _dispatch(by_python_type: dict[type, Walker], by_name: dict[str, Walker]) -> Walker:
    def walk(value: Any, counts: Counts) -> Any:
        if type(value) is tuple:
            name, inner_value = value
            inner = by_name.get(name)
            return value if inner is None else (name, inner(inner_value, counts))
        inner = by_python_type.get(type(value))
        return value if inner is None else inner(value, counts)

    return walk


@dataclass(frozen=True, slots=True)
class AvroMasker:
    """Masks bodies written with one schema under one set of rules."""

    schema: Any = field(repr=False)
    walker: Walker | None = field(repr=False)
    unmatched: tuple[FieldRule, ...]
    scanner: Scanner | None = field(default=None, repr=False)

    def mask(self, body: bytes | memoryview) -> tuple[bytes, dict[str, int]]:
        """Return the masked body and, per rule id, how many values it masked."""
        return self._mask_from(bytes(body), 0)

    def mask_wire(self, value: bytes) -> tuple[bytes, dict[str, int]]:
        """:meth:`mask` of a value in Confluent wire format (its 5-byte header kept)."""
        return self._mask_from(value, _HEADER.size)

    def _mask_from(self, data: bytes, start: int) -> tuple[bytes, dict[str, int]]:
        """The body at ``start`` of ``data`` masked, the bytes before it kept."""
        if self.walker is None:
            return data, {}
        if self.scanner is not None:
            try:
                return self.scanner.mask(data, start)
            except Unscannable:
                pass  # a block with a byte size around a masked value: decode instead
        body, counts = self.decode_and_mask(data[start:])
        return data[:start] + body, counts

    def decode_and_mask(self, body: bytes | memoryview) -> tuple[bytes, dict[str, int]]:
        """:meth:`mask` by decoding the whole body and encoding it again."""
        if self.walker is None:
            return bytes(body), {}
        buffer = io.BytesIO(body)
        try:
            datum = schemaless_reader(buffer, self.schema, None, return_named_type=True)
        except Exception as exc:  # fastavro raises many types; none may leak the value
            raise MaskingError(
                f"Avro body does not decode with its writer schema ({type(exc).__name__})"
            ) from None
        trailing = len(buffer.getbuffer()) - buffer.tell()
        if trailing:
            raise MaskingError(f"Avro body has {trailing} bytes after the record")
        counts: Counts = {}
        masked = self.walker(datum, counts)
        out = io.BytesIO()
        try:
            schemaless_writer(out, self.schema, masked)
        except Exception as exc:
            raise MaskingError(
                f"masked record does not encode with its writer schema ({type(exc).__name__})"
            ) from None
        return out.getvalue(), counts


def compile_masker(
    writer_schema: Mapping[str, Any] | Sequence[Any] | str,
    rules: Sequence[FieldRule],
    key: MaskKey | None = None,
) -> AvroMasker:
    """Resolve ``rules`` against ``writer_schema`` (a dict, or its JSON text) once.

    ``key`` is needed only when a rule hashes. Rules whose path does not exist in this
    schema are listed in ``unmatched``; a rule whose method cannot apply to the type
    it names raises :class:`MaskingError` naming the rule, path and type.
    """
    tree = rule_tree(rules)
    if isinstance(writer_schema, str):
        text = writer_schema
        try:
            writer_schema = json.loads(text)
        except json.JSONDecodeError:
            # A bare primitive name ("string") is valid Avro schema text too.
            writer_schema = text.strip()
    try:
        parsed = parse_schema(_strip_logical(writer_schema))
    except Exception as exc:  # fastavro's SchemaParseException and friends
        raise MaskingError(f"writer schema does not parse: {exc}") from None
    named = parsed.get("__named_schemas", {}) if isinstance(parsed, dict) else {}
    compiler = _Compiler(named, key)
    walker = compiler.compile(parsed, tree, "")
    unmatched = tuple(rule for rule in rules if rule.rule_id not in compiler.matched)
    scanner = None
    if walker is not None:
        try:
            scanner = compile_scanner(parsed, tree, named, compiler)
        except Unscannable:
            scanner = None  # a recursive schema: every body is decoded and encoded
    return AvroMasker(schema=parsed, walker=walker, unmatched=unmatched, scanner=scanner)
