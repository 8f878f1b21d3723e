"""Property: for random Avro schemas and records valid for them, masking with random
rules keeps every record decodable with its writer schema and changes nothing but the
fields the rules name (every other leaf reads back equal)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.masking import MaskingError
from gateway.masking.avro import compile_masker
from gateway.masking.methods import MaskKey, Method
from gateway.masking.paths import FieldRule

KEY = MaskKey(b"p" * 32)
PRIMITIVES = ["string", "int", "long", "float", "double", "boolean", "bytes"]
METHODS: dict[str, list[str]] = {
    "string": ["redact", "hash", "partial"],
    "int": ["redact", "hash"],
    "long": ["redact", "hash"],
    "float": ["redact", "hash"],
    "double": ["redact", "hash"],
    "boolean": ["redact", "hash"],
    "bytes": ["redact", "hash"],
    "enum": ["redact", "hash"],
    "fixed": ["redact", "hash"],
}
_names = iter(range(10**9))


def _name(prefix: str) -> str:
    return f"{prefix}{next(_names)}"


def leaf_types() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(PRIMITIVES),
        st.builds(lambda: {"type": "enum", "name": _name("E"), "symbols": ["A", "B", "C"]}),
        st.builds(lambda n: {"type": "fixed", "name": _name("F"), "size": n}, st.integers(1, 8)),
    )


def field_types(depth: int) -> st.SearchStrategy[Any]:
    options = [
        leaf_types(),
        leaf_types().map(lambda t: ["null", t]),
        st.sampled_from(PRIMITIVES).map(lambda t: {"type": "array", "items": t}),
        st.sampled_from(PRIMITIVES).map(lambda t: {"type": "map", "values": t}),
    ]
    if depth > 0:
        options.append(records(depth - 1))
    return st.one_of(*options)


def records(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.lists(field_types(depth), min_size=1, max_size=5).map(
        lambda types: {
            "type": "record",
            "name": _name("R"),
            "fields": [{"name": f"f{i}", "type": t} for i, t in enumerate(types)],
        }
    )


def values(schema: Any) -> st.SearchStrategy[Any]:
    if isinstance(schema, list):
        return st.one_of(st.none(), values(schema[1]))
    if isinstance(schema, str):
        return {
            "string": st.text(max_size=12),
            "int": st.integers(-(2**31), 2**31 - 1),
            "long": st.integers(-(2**63), 2**63 - 1),
            "float": st.floats(width=32, allow_nan=False, allow_infinity=False),
            "double": st.floats(allow_nan=False, allow_infinity=False),
            "boolean": st.booleans(),
            "bytes": st.binary(max_size=12),
        }[schema]
    kind = schema["type"]
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "fixed":
        return st.binary(min_size=schema["size"], max_size=schema["size"])
    if kind == "array":
        return st.lists(values(schema["items"]), max_size=3)
    if kind == "map":
        return st.dictionaries(st.text(max_size=4), values(schema["values"]), max_size=3)
    return st.fixed_dictionaries({f["name"]: values(f["type"]) for f in schema["fields"]})


def leaf_paths(schema: dict[str, Any], prefix: str = "") -> list[tuple[str, str, bool]]:
    """(path, type name, nullable) of every field a rule can name."""
    found = []
    for f in schema["fields"]:
        path, kind = prefix + f["name"], f["type"]
        nullable = isinstance(kind, list)
        inner = kind[1] if nullable else kind
        if isinstance(inner, dict) and inner["type"] == "record":
            found += leaf_paths(inner, path + ".")
        elif isinstance(inner, dict) and inner["type"] == "array":
            found.append((path + "[]", inner["items"], False))
        elif isinstance(inner, dict) and inner["type"] == "map":
            found.append((path + "{}", inner["values"], False))
        else:
            name = inner if isinstance(inner, str) else inner["type"]
            found.append((path, name, nullable))
    return found


def read_leaves(schema: dict[str, Any], datum: Any, prefix: str = "") -> dict[str, Any]:
    """Each leaf path's value(s) in ``datum``."""
    out: dict[str, Any] = {}
    for f in schema["fields"]:
        path, kind, value = prefix + f["name"], f["type"], datum[f["name"]]
        inner = kind[1] if isinstance(kind, list) else kind
        if isinstance(inner, dict) and inner["type"] == "record":
            out.update(read_leaves(inner, value, path + "."))
        elif isinstance(inner, dict) and inner["type"] == "array":
            out[path + "[]"] = value
        elif isinstance(inner, dict) and inner["type"] == "map":
            out[path + "{}"] = value
        else:
            out[path] = value
    return out


@st.composite
def cases(draw: st.DrawFn) -> tuple[dict[str, Any], Any, list[FieldRule]]:
    schema = draw(records(2))
    datum = draw(values(schema))
    rules = []
    for path, kind, nullable in leaf_paths(schema):
        if not draw(st.booleans()):
            continue
        choices = METHODS[kind] + (["null"] if nullable else [])
        method = Method(draw(st.sampled_from(choices)), keep_last=draw(st.integers(0, 4)))
        rules.append(FieldRule(path, method, f"rule-{len(rules)}"))
    return schema, datum, rules


def encoded(schema: Any, datum: Any) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, parse_schema(schema), datum)
    return out.getvalue()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_masking_keeps_records_decodable_and_changes_only_named_fields(
    case: tuple[dict[str, Any], Any, list[FieldRule]],
) -> None:
    schema, datum, rules = case
    masker = compile_masker(schema, rules, KEY)
    assert masker.unmatched == ()
    masked, _counts = masker.mask(encoded(schema, datum))
    after = schemaless_reader(io.BytesIO(masked), parse_schema(schema), None)
    before_leaves, after_leaves = read_leaves(schema, datum), read_leaves(schema, after)
    named = {rule.path for rule in rules}
    for path, value in before_leaves.items():
        if path not in named:
            assert after_leaves[path] == value, path
    # Writing the masked record again gives the same bytes: it is a valid record.
    again = io.BytesIO()
    schemaless_writer(again, parse_schema(schema), after)
    assert again.getvalue() == masked


@settings(max_examples=100, deadline=None)
@given(case=cases())
def test_masking_without_rules_returns_the_body_byte_for_byte(
    case: tuple[dict[str, Any], Any, list[FieldRule]],
) -> None:
    schema, datum, _ = case
    body = encoded(schema, datum)
    masked, counts = compile_masker(schema, [], KEY).mask(body)
    assert masked == body and counts == {}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_the_scan_masks_as_decoding_and_encoding_does(
    case: tuple[dict[str, Any], Any, list[FieldRule]],
) -> None:
    # The masker scans to the named values and splices; decoding the whole record and
    # encoding it again is the reference it must agree with, value for value.
    schema, datum, rules = case
    body = encoded(schema, datum)
    masker = compile_masker(schema, rules, KEY)
    scanned, scanned_counts = masker.mask(body)
    decoded, decoded_counts = masker.decode_and_mask(body)
    assert (masker.scanner is not None) == bool(rules)
    assert scanned == decoded
    assert scanned_counts == decoded_counts


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(), data=st.data())
def test_a_cut_body_is_refused_by_the_scan(
    case: tuple[dict[str, Any], Any, list[FieldRule]], data: st.DataObject
) -> None:
    schema, datum, rules = case
    body = encoded(schema, datum)
    masker = compile_masker(schema, rules, KEY)
    if masker.scanner is None or not body:
        return
    cut = data.draw(st.integers(0, len(body) - 1))
    with pytest.raises(MaskingError, match="does not decode|bytes after"):
        masker.mask(body[:cut])


# Unions of several branches (the scan reads the branch index and walks that branch),
# named types used again by name, and logical types over their base types.
RICH_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Rich",
    "namespace": "t",
    "fields": [
        {"name": "choice", "type": ["null", "string", "long", "bytes"]},
        {
            "name": "point",
            "type": {
                "type": "record",
                "name": "Point",
                "fields": [{"name": "label", "type": "string"}, {"name": "x", "type": "double"}],
            },
        },
        {"name": "points", "type": {"type": "array", "items": "t.Point"}},
        {"name": "byname", "type": {"type": "map", "values": ["null", "Point"]}},
        {"name": "when", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
        {
            "name": "level",
            "type": [
                "null",
                {"type": "enum", "name": "Level", "symbols": ["LOW", "HIGH"]},
                "string",
            ],
        },
        {"name": "tail", "type": "string"},
    ],
}
RICH_PATHS = [
    "choice",
    "point.label",
    "points[].label",
    "byname{}.x",
    "when",
    "id",
    "level",
    "tail",
]


def rich_values() -> st.SearchStrategy[dict[str, Any]]:
    point = st.fixed_dictionaries(
        {"label": st.text(max_size=8), "x": st.floats(allow_nan=False, allow_infinity=False)}
    )
    return st.fixed_dictionaries(
        {
            "choice": st.one_of(
                st.none(),
                st.text(max_size=8),
                st.integers(-(2**63), 2**63 - 1),
                st.binary(max_size=8),
            ),
            "point": point,
            "points": st.lists(point, max_size=3),
            "byname": st.dictionaries(st.text(max_size=4), st.one_of(st.none(), point), max_size=3),
            "when": st.integers(0, 2**42),
            "id": st.uuids().map(str),
            "level": st.one_of(st.none(), st.sampled_from(["LOW", "HIGH"]), st.text(max_size=5)),
            "tail": st.text(max_size=8),
        }
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datum=rich_values(), data=st.data())
def test_the_scan_agrees_through_multi_branch_unions_named_and_logical_types(
    datum: dict[str, Any], data: st.DataObject
) -> None:
    paths = data.draw(st.lists(st.sampled_from(RICH_PATHS), unique=True, min_size=1))
    rules = [FieldRule(p, Method(data.draw(st.sampled_from(["redact", "hash"]))), p) for p in paths]
    body = encoded(RICH_SCHEMA, datum)
    masker = compile_masker(RICH_SCHEMA, rules, KEY)
    assert masker.scanner is not None
    scanned, scanned_counts = masker.mask(body)
    decoded, decoded_counts = masker.decode_and_mask(body)
    assert scanned == decoded
    assert scanned_counts == decoded_counts


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datum=rich_values(), data=st.data())
def test_the_scan_of_damaged_bytes_refuses_or_masks_never_crashes(
    datum: dict[str, Any], data: st.DataObject
) -> None:
    body = bytearray(encoded(RICH_SCHEMA, datum))
    for _ in range(data.draw(st.integers(1, 4))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    masker = compile_masker(RICH_SCHEMA, [FieldRule(p, Method("hash"), p) for p in RICH_PATHS], KEY)
    try:
        masked, _ = masker.mask(bytes(body))
    except MaskingError:
        return
    # Whatever the scan accepts decodes with the writer schema once masked, as a whole:
    # read without logical types (a hashed timestamp is a long, no longer a time), and
    # as Java's decoder reads strings (an unmasked string is passed on as its bytes, so
    # bytes that are not UTF-8 there stay so).
    plain = json.loads(json.dumps(RICH_SCHEMA).replace('"logicalType"', '"logicalTypeOff"'))
    schemaless_reader(
        io.BytesIO(masked), parse_schema(plain), None, handle_unicode_errors="replace"
    )
