"""The Avro masker: wire format, paths through records, arrays, maps and unions, errors."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from gateway.masking import MaskingError, NotWireFormat
from gateway.masking.avro import FieldRule, compile_masker, join_wire, split_wire
from gateway.masking.methods import MaskKey, Method

KEY = MaskKey(b"k" * 32)
STR = "string"

CUSTOMER: dict[str, Any] = {
    "type": "record",
    "name": "Customer",
    "namespace": "shop",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "email", "type": ["null", "string"], "default": None},
        {
            "name": "address",
            "type": {
                "type": "record",
                "name": "Address",
                "fields": [
                    {"name": "street", "type": "string"},
                    {"name": "city", "type": "string"},
                    {"name": "zip", "type": "int"},
                ],
            },
        },
        {
            "name": "phones",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Phone",
                    "fields": [
                        {"name": "kind", "type": "string"},
                        {"name": "number", "type": "string"},
                    ],
                },
            },
        },
        {"name": "card", "type": "string"},
        {"name": "amount", "type": "int"},
        {"name": "attrs", "type": {"type": "map", "values": "string"}},
        {"name": "tier", "type": {"type": "enum", "name": "Tier", "symbols": ["NONE", "GOLD"]}},
        {"name": "token", "type": {"type": "fixed", "name": "Token", "size": 8}},
        {"name": "blob", "type": "bytes"},
        {"name": "score", "type": "double"},
        {"name": "vip", "type": "boolean"},
        {"name": "born", "type": {"type": "int", "logicalType": "date"}},
        {"name": "home", "type": ["null", "Address"], "default": None},
    ],
}

RECORD: dict[str, Any] = {
    "id": 7,
    "email": "jo.doe@example.com",
    "address": {"street": "1 Main St", "city": "Paris", "zip": 75001},
    "phones": [{"kind": "home", "number": "+33 1 23 45 67"}, {"kind": "work", "number": "555"}],
    "card": "4111-1111-1111-1111",
    "amount": 1234,
    "attrs": {"segment": "b2b", "note": "vip"},
    "tier": "GOLD",
    "token": b"12345678",
    "blob": b"\x01\x02\x03",
    "score": 0.75,
    "vip": True,
    "born": 7000,
    "home": {"street": "2 Side St", "city": "Lyon", "zip": 69001},
}

PARSED = parse_schema(json.loads(json.dumps(CUSTOMER)))


def encode(record: dict[str, Any], schema: Any = PARSED) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, schema, record)
    return out.getvalue()


def decode(body: bytes, schema: Any = PARSED) -> Any:
    # Read without logical types so a masked date compares as its int.
    return schemaless_reader(io.BytesIO(body), schema)


def mask(rules: list[FieldRule], record: dict[str, Any] = RECORD) -> tuple[Any, dict[str, int]]:
    masker = compile_masker(CUSTOMER, rules, KEY)
    body, counts = masker.mask(encode(record))
    return decode(body), counts


def test_split_and_join_wire_round_trip() -> None:
    value = join_wire(42, b"body")
    assert value == b"\x00\x00\x00\x00\x2abody"
    schema_id, body = split_wire(value)
    assert schema_id == 42 and bytes(body) == b"body"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"", "too short"),
        (b"\x00\x00\x00\x01", "too short"),
        (b"\x01\x00\x00\x00\x01body", "not the magic byte 0"),
        (b'{"json": true}', "not the magic byte 0"),
    ],
)
def test_split_wire_rejects_other_values(value: bytes, message: str) -> None:
    with pytest.raises(NotWireFormat, match=message):
        split_wire(value)


def test_join_wire_refuses_an_id_that_does_not_fit() -> None:
    with pytest.raises(MaskingError, match="does not fit"):
        join_wire(2**32, b"")


def test_masks_nested_record_field_and_leaves_siblings() -> None:
    masked, counts = mask([FieldRule("address.city", Method("redact"), "r-city")])
    assert masked["address"] == {"street": "1 Main St", "city": "****", "zip": 75001}
    assert counts == {"r-city": 1}


def test_masks_every_array_item_field() -> None:
    masked, counts = mask([FieldRule("phones[].number", Method("partial", keep_last=2), "r")])
    assert [p["number"] for p in masked["phones"]] == ["+** * ** ** 67", "*55"]
    assert [p["kind"] for p in masked["phones"]] == ["home", "work"]
    assert counts == {"r": 2}


def test_masks_every_map_value() -> None:
    masked, counts = mask([FieldRule("attrs{}", Method("redact", replacement="x"), "r")])
    assert masked["attrs"] == {"segment": "x", "note": "x"}
    assert counts == {"r": 2}


def test_nullable_string_is_hashed_when_present_and_left_null_when_absent() -> None:
    rule = FieldRule("email", Method("hash"), "r")
    masked, counts = mask([rule])
    assert masked["email"] != RECORD["email"] and len(masked["email"]) == len(RECORD["email"])
    assert counts == {"r": 1}
    masked, counts = mask([rule], {**RECORD, "email": None})
    assert masked["email"] is None and counts == {}


def test_path_through_nullable_record_union() -> None:
    masked, counts = mask([FieldRule("home.city", Method("redact"), "r")])
    assert masked["home"]["city"] == "****" and masked["address"]["city"] == "Paris"
    assert counts == {"r": 1}
    masked, counts = mask([FieldRule("home.city", Method("redact"), "r")], {**RECORD, "home": None})
    assert masked["home"] is None and counts == {}


def test_null_method_on_nullable_fields() -> None:
    masked, _ = mask(
        [FieldRule("email", Method("null"), "a"), FieldRule("home", Method("null"), "b")]
    )
    assert masked["email"] is None and masked["home"] is None


def test_each_type_keeps_its_type() -> None:
    rules = [
        FieldRule("id", Method("hash"), "id"),
        FieldRule("amount", Method("redact"), "amount"),
        FieldRule("tier", Method("redact"), "tier"),
        FieldRule("token", Method("redact"), "token"),
        FieldRule("blob", Method("redact"), "blob"),
        FieldRule("score", Method("redact"), "score"),
        FieldRule("vip", Method("redact"), "vip"),
        FieldRule("born", Method("redact"), "born"),
    ]
    masked, counts = mask(rules)
    assert masked["id"] != 7 and isinstance(masked["id"], int)
    assert masked["amount"] == 0
    assert masked["tier"] == "NONE"
    assert masked["token"] == bytes(8)
    assert masked["blob"] == b""
    assert masked["score"] == 0.0
    assert masked["vip"] is False
    assert str(masked["born"]) == "1970-01-01"  # a date logical type, masked as its int
    assert counts == {rule.rule_id: 1 for rule in rules}


def test_unmasked_fields_reencode_byte_identically() -> None:
    masker = compile_masker(CUSTOMER, [FieldRule("card", Method("redact"), "r")], KEY)
    original = encode(RECORD)
    body, _ = masker.mask(original)
    assert body == encode({**RECORD, "card": "****"})
    unchanged, _ = compile_masker(CUSTOMER, [FieldRule("card", Method("hash"), "r")], KEY).mask(
        encode({**RECORD, "card": ""})
    )
    assert unchanged == encode({**RECORD, "card": ""})


def test_hash_is_deterministic_across_records() -> None:
    masker = compile_masker(CUSTOMER, [FieldRule("card", Method("hash"), "r")], KEY)
    first, _ = masker.mask(encode(RECORD))
    second, _ = masker.mask(encode({**RECORD, "id": 8}))
    assert decode(first)["card"] == decode(second)["card"]


def test_unknown_path_is_reported_not_raised() -> None:
    rules = [
        FieldRule("address.country", Method("redact"), "missing"),
        FieldRule("card.number", Method("redact"), "through-a-string"),
        FieldRule("card", Method("redact"), "present"),
    ]
    masker = compile_masker(CUSTOMER, rules, KEY)
    assert [rule.rule_id for rule in masker.unmatched] == ["missing", "through-a-string"]


def test_schema_without_matching_rules_passes_body_through() -> None:
    masker = compile_masker(CUSTOMER, [FieldRule("nothing", Method("redact"), "r")], KEY)
    assert masker.mask(b"anything") == (b"anything", {})


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (FieldRule("card", Method("null"), "r1"), "rule r1: method null at 'card' needs a union"),
        (
            FieldRule("amount", Method("partial"), "r2"),
            "partial at 'amount' needs a string, not int",
        ),
        (FieldRule("tier", Method("partial"), "r3"), "partial at 'tier' needs a string, not enum"),
        (FieldRule("address", Method("redact"), "r4"), "cannot apply to record at 'address'"),
        (FieldRule("phones", Method("hash"), "r5"), "cannot apply to array at 'phones'"),
        (FieldRule("home", Method("redact"), "r6"), "cannot apply to record at 'home'"),
        (
            FieldRule("phones[].number", Method("null"), "r7"),
            "method null at 'phones\\[\\].number' needs a union",
        ),
    ],
)
def test_wrong_method_for_type_is_rejected_with_path(rule: FieldRule, message: str) -> None:
    with pytest.raises(MaskingError, match=message):
        compile_masker(CUSTOMER, [rule], KEY)


def test_two_rules_on_one_path_are_rejected() -> None:
    with pytest.raises(MaskingError, match="rules a and b both name path 'card'"):
        compile_masker(
            CUSTOMER,
            [FieldRule("card", Method("redact"), "a"), FieldRule("card", Method("hash"), "b")],
        )


def test_hash_without_key_is_rejected_at_compile() -> None:
    with pytest.raises(MaskingError, match="needs a masking key"):
        compile_masker(CUSTOMER, [FieldRule("card", Method("hash"), "r")])


def test_bad_paths_are_rejected_when_the_rule_is_made() -> None:
    with pytest.raises(MaskingError, match="empty field name"):
        FieldRule("address..city", Method("redact"), "r")
    with pytest.raises(MaskingError, match="bad segment"):
        FieldRule("phones[0]", Method("redact"), "r")


def test_unparseable_schema_is_rejected() -> None:
    with pytest.raises(MaskingError, match="writer schema does not parse"):
        compile_masker(
            {"type": "record", "name": "R", "fields": [{"name": "a", "type": "nope"}]}, []
        )


@pytest.mark.parametrize(
    "body",
    [
        encode(RECORD)[:-5],
        encode(RECORD)[:3],
        encode(RECORD) + b"\x00",
        b"",
    ],
    ids=["truncated", "header-only", "trailing-byte", "empty"],
)
def test_undecodable_body_raises_without_quoting_it(body: bytes) -> None:
    masker = compile_masker(CUSTOMER, [FieldRule("card", Method("redact"), "r")], KEY)
    with pytest.raises(MaskingError) as caught:
        masker.mask(body)
    assert "4111" not in str(caught.value)
    # Neither the message nor a chained exception may carry the clear body.
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__


def test_garbage_body_raises() -> None:
    masker = compile_masker(CUSTOMER, [FieldRule("card", Method("redact"), "r")], KEY)
    with pytest.raises(MaskingError):
        masker.mask(b"\xff" * 64)


def test_schema_as_json_text_and_primitive_key_schema() -> None:
    masker = compile_masker(json.dumps(CUSTOMER), [FieldRule("card", Method("redact"), "r")], KEY)
    assert decode(masker.mask(encode(RECORD))[0])["card"] == "****"
    key_masker = compile_masker('"string"', [FieldRule("", Method("partial"), "k")], KEY)
    body, counts = key_masker.mask(encode("customer-1234", parse_schema("string")))  # type: ignore[arg-type]
    assert decode(body, parse_schema("string")) == "********-1234"
    assert counts == {"k": 1}


def test_union_of_several_named_types_masks_only_matching_branch() -> None:
    schema = {
        "type": "record",
        "name": "Event",
        "fields": [
            {
                "name": "payload",
                "type": [
                    "null",
                    {
                        "type": "record",
                        "name": "Card",
                        "fields": [{"name": "pan", "type": "string"}],
                    },
                    {
                        "type": "record",
                        "name": "Note",
                        "fields": [{"name": "text", "type": "string"}],
                    },
                    "string",
                ],
            }
        ],
    }
    parsed = parse_schema(schema)
    masker = compile_masker(schema, [FieldRule("payload.pan", Method("redact"), "r")], KEY)
    for payload, expected in [
        (("Card", {"pan": "4111"}), {"pan": "****"}),
        (("Note", {"text": "hi"}), {"text": "hi"}),
        ("free text", "free text"),
        (None, None),
    ]:
        original = encode({"payload": payload}, parsed)
        body, _ = masker.mask(original)
        assert decode(body, parsed) == {"payload": expected}
        if expected != {"pan": "****"}:
            assert body == original


def test_recursive_schema_masks_along_the_path_only() -> None:
    schema = {
        "type": "record",
        "name": "Node",
        "fields": [
            {"name": "secret", "type": "string"},
            {"name": "next", "type": ["null", "Node"]},
        ],
    }
    parsed = parse_schema(schema)
    masker = compile_masker(schema, [FieldRule("next.next.secret", Method("redact"), "r")], KEY)
    chain = {"secret": "a", "next": {"secret": "b", "next": {"secret": "c", "next": None}}}
    body, counts = masker.mask(encode(chain, parsed))
    assert decode(body, parsed) == {
        "secret": "a",
        "next": {"secret": "b", "next": {"secret": "****", "next": None}},
    }
    assert counts == {"r": 1}
    # A record that holds itself cannot be scanned: it is decoded and encoded instead.
    assert masker.scanner is None


def _zigzag(n: int) -> bytes:
    value = (n << 1) ^ (n >> 63)
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _text(value: str) -> bytes:
    raw = value.encode()
    return _zigzag(len(raw)) + raw


TAGGED: dict[str, Any] = {
    "type": "record",
    "name": "Tagged",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "email", "type": "string"},
    ],
}


def test_unmasked_values_keep_their_bytes_even_when_not_as_fastavro_writes_them() -> None:
    # id 1 as an over-long varint, and the tags array in a block that states its byte
    # size (count -2, then the size): both valid Avro that fastavro would write shorter.
    tags = _text("a") + _text("bc")
    body = b"\x82\x00" + _zigzag(-2) + _zigzag(len(tags)) + tags + b"\x00" + _text("x@y.z")
    masker = compile_masker(TAGGED, [FieldRule("email", Method("redact"), "r")], KEY)
    masked, counts = masker.mask(body)
    assert counts == {"r": 1}
    assert masked == body[: -len(_text("x@y.z"))] + _text("****")
    assert decode(masked, parse_schema(TAGGED)) == {"id": 1, "tags": ["a", "bc"], "email": "****"}


def test_a_masked_value_in_a_block_that_states_its_size_is_masked_by_decoding() -> None:
    # Masking changes the items' length, so the block's stated size would be wrong:
    # the masker decodes and encodes this body instead of splicing it.
    tags = _text("secret-1") + _text("secret-22")
    body = b"\x02" + _zigzag(-2) + _zigzag(len(tags)) + tags + b"\x00" + _text("x@y.z")
    masker = compile_masker(TAGGED, [FieldRule("tags[]", Method("redact"), "r")], KEY)
    assert masker.scanner is not None
    masked, counts = masker.mask(body)
    assert counts == {"r": 2}
    assert decode(masked, parse_schema(TAGGED)) == {
        "id": 1,
        "tags": ["****", "****"],
        "email": "x@y.z",
    }


@pytest.mark.parametrize(
    "body",
    [
        b"\x02" + _zigzag(5) + _text("a") + b"\x00" + _text("e"),  # 5 items, 1 there
        b"\x02\x01",  # a negative block count with no size after it
        b"\x02\x00" + _zigzag(-3) + b"abc",  # a negative string length
        b"\x02\x00" + _text("e") + b"\x00",  # a byte after the record
        b"\x02\x00" + b"\x02\xff",  # a string that is not UTF-8, where it is masked
        b"\xff" * 11,  # a varint over 10 bytes
    ],
)
def test_the_scan_refuses_what_does_not_decode(body: bytes) -> None:
    masker = compile_masker(TAGGED, [FieldRule("email", Method("hash"), "r")], KEY)
    with pytest.raises(MaskingError, match="does not decode|bytes after"):
        masker.mask(body)


def test_a_schema_that_nests_one_type_twice_at_every_level_compiles_quickly() -> None:
    # 2**40 paths through the types if each use were compiled apart.
    schema: dict[str, Any] = {
        "type": "record",
        "name": "L0",
        "fields": [{"name": "email", "type": "string"}],
    }
    for level in range(1, 41):
        schema = {
            "type": "record",
            "name": f"L{level}",
            "fields": [
                {"name": "a", "type": schema},  # defines L{level - 1} ...
                {"name": "b", "type": f"L{level - 1}"},  # ... and uses it again
                {"name": "email", "type": "string"},
            ],
        }
    masker = compile_masker(schema, [FieldRule("email", Method("redact"), "r")], KEY)
    assert masker.scanner is not None
