"""The masking engine on real record batches: Avro values in Confluent wire format
(schemas from a schema source), JSON values, text detectors and headers are masked as
the policy's masking rules say; everything else of each record and batch stays; a
partition that cannot be masked raises MaskingFailed with its cause (fail closed)."""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import pytest
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from gateway.masking import batches
from gateway.masking.avro import join_wire
from gateway.masking.engine import MaskingEngine, MaskingFailed
from gateway.masking.methods import MaskKey
from gateway.masking.schemas import RegisteredSchema, RegistryUnavailable, SchemaNotFound
from gateway.policy.loader import build_policy
from gateway.policy.masking import CompiledMasking

CUSTOMER = {
    "type": "record",
    "name": "Customer",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "email", "type": ["null", "string"], "default": None},
        {"name": "card_number", "type": "string"},
        {
            "name": "address",
            "type": {
                "type": "record",
                "name": "Address",
                "fields": [
                    {"name": "street", "type": "string"},
                    {"name": "city", "type": "string"},
                ],
            },
        },
        {"name": "phones", "type": {"type": "array", "items": "string"}},
        {"name": "amount", "type": "int"},
    ],
}
SCHEMA_ID = 41
PARSED = parse_schema(CUSTOMER)

POLICY = b"""
masking:
  - id: customers-pii
    topics: [{literal: customers}]
    value:
      format: avro
      fields:
        - {path: email, method: hash}
        - {path: card_number, method: partial, keep_last: 4}
        - {path: address.street, method: redact, replacement: "(hidden)"}
        - {path: "phones[]", method: redact}
  - id: events-json
    topics: [{literal: events}]
    value:
      format: json
      fields: [{path: user.email, method: redact}]
    headers: [{name: x-ssn, method: drop}]
  - id: notes-text
    topics: [{literal: notes}]
    value: {format: text, detectors: [card, email], method: partial, keep_last: 4}
  - id: keyed-by-customer
    topics: [{literal: accounts}]
    key:
      format: avro
      fields: [{path: email, method: redact, replacement: "(key)"}]
"""


class Schemas:
    """A schema source holding one schema; ``down`` makes it fail as a registry does
    when it cannot be reached."""

    def __init__(self) -> None:
        self.down = False
        self.asked: list[int] = []

    async def schema_by_id(self, schema_id: int) -> RegisteredSchema:
        self.asked.append(schema_id)
        if self.down:
            raise RegistryUnavailable("registry http://registry.test: connection refused")
        if schema_id != SCHEMA_ID:
            raise SchemaNotFound(f"schema {schema_id} not found")
        return RegisteredSchema(id=SCHEMA_ID, schema=json.dumps(CUSTOMER), schema_type="AVRO")


def rules(topic: str) -> tuple[CompiledMasking, ...]:
    policy = build_policy({"policies/m.yaml": POLICY})
    return tuple(r for r in policy.masking if r.names(topic))


def customer(n: int) -> dict[str, Any]:
    return {
        "id": n,
        "email": f"user{n}@example.com" if n % 2 else None,
        "card_number": "4111 1111 1111 1111",
        "address": {"street": f"{n} Main St", "city": "Utrecht"},
        "phones": ["+31 6 1234 5678"],
        "amount": 100 + n,
    }


def avro(value: dict[str, Any], schema_id: int = SCHEMA_ID) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, PARSED, value)
    return join_wire(schema_id, out.getvalue())


def batch(
    values: list[bytes | None],
    headers: list[tuple[str, bytes | None]] | None = None,
    codec: int = batches.NONE,
) -> bytes:
    builder = DefaultRecordBatchBuilder(2, codec, 0, -1, -1, -1, 1 << 20)
    for i, value in enumerate(values):
        builder.append(i, 1_700_000_000_000 + i, f"key-{i}".encode(), value, headers or [])
    raw = bytearray(builder.build())
    struct.pack_into(">q", raw, 0, 500)
    return bytes(raw)


def read(records: bytes) -> list[Any]:
    return list(DefaultRecordBatch(records))


def engine(schemas: Schemas | None = None, inline_max: int = 64 * 1024) -> MaskingEngine:
    return MaskingEngine(schemas or Schemas(), MaskKey(b"k" * 32), inline_max)


def decode_customer(value: bytes) -> dict[str, Any]:
    assert value[0] == 0 and struct.unpack(">i", value[1:5])[0] == SCHEMA_ID
    decoded: dict[str, Any] = schemaless_reader(io.BytesIO(value[5:]), PARSED, None)
    return decoded


@pytest.mark.parametrize("inline_max", [64 * 1024, 0], ids=["inline", "worker-thread"])
async def test_avro_fields_are_masked_as_the_rule_says_and_the_rest_is_kept(
    inline_max: int,
) -> None:
    originals = [customer(n) for n in range(4)]
    records = batch([avro(c) for c in originals], codec=batches.GZIP)
    result = await engine(inline_max=inline_max).mask("customers", records, rules("customers"))
    after = read(result.records)
    assert [r.offset for r in after] == [500, 501, 502, 503]
    assert [r.key for r in after] == [f"key-{i}".encode() for i in range(4)]
    assert DefaultRecordBatch(result.records).compression_type == batches.GZIP
    for record, before in zip(after, originals, strict=True):
        masked = decode_customer(record.value)
        assert masked["id"] == before["id"] and masked["amount"] == before["amount"]
        assert masked["address"]["city"] == "Utrecht"
        assert masked["address"]["street"] == "(hidden)"
        assert masked["card_number"] == "**** **** **** 1111"
        assert masked["phones"] == ["****"]
        if before["email"] is None:
            assert masked["email"] is None
        else:
            assert masked["email"] != before["email"]
            assert len(masked["email"]) == len(before["email"])
    assert result.masked == 4
    evidence = result.evidence()
    assert evidence["schema_ids"] == [SCHEMA_ID]
    (rule,) = evidence["rules"]
    assert rule["rule"] == "customers-pii" and rule["records"] == 4
    assert set(rule["fields"]) == {"email", "card_number", "address.street", "phones[]"}


async def test_the_same_value_hashes_the_same_way_every_time() -> None:
    one = await engine().mask("customers", batch([avro(customer(1))]), rules("customers"))
    two = await engine().mask("customers", batch([avro(customer(1))]), rules("customers"))
    assert read(one.records)[0].value == read(two.records)[0].value


async def test_json_fields_and_headers_are_masked() -> None:
    value = json.dumps({"user": {"email": "a@b.c", "id": 7}, "n": 1.5}).encode()
    records = batch([value], headers=[("x-ssn", b"123-45-6789"), ("trace", b"t1")])
    result = await engine().mask("events", records, rules("events"))
    (record,) = read(result.records)
    assert json.loads(record.value) == {"user": {"email": "****", "id": 7}, "n": 1.5}
    assert record.headers == [("trace", b"t1")]


async def test_text_detectors_mask_card_numbers_and_email_addresses() -> None:
    text = b"paid with 4111 1111 1111 1111, receipt to ann@example.com"
    result = await engine().mask("notes", batch([text]), rules("notes"))
    (record,) = read(result.records)
    assert record.value == b"paid with **** **** **** 1111, receipt to ***@*******.com"
    (rule,) = result.evidence()["rules"]
    assert rule["fields"] == ["value:card", "value:email"]


async def test_records_without_anything_to_mask_keep_their_batch_bytes() -> None:
    records = batch([b"nothing sensitive here"])
    result = await engine().mask("notes", records, rules("notes"))
    assert result.records == records and result.masked == 0


async def test_a_value_not_in_wire_format_refuses_the_partition() -> None:
    records = batch([avro(customer(1)), b"plain text"])
    with pytest.raises(MaskingFailed) as failed:
        await engine().mask("customers", records, rules("customers"))
    assert failed.value.cause == "not_wire_format"


async def test_an_unknown_schema_id_refuses_the_partition() -> None:
    records = batch([avro(customer(1), schema_id=999)])
    with pytest.raises(MaskingFailed) as failed:
        await engine().mask("customers", records, rules("customers"))
    assert failed.value.cause == "schema_not_found"


class ManySchemas(Schemas):
    """Every id from 41 up is the customer schema, registered under another id."""

    async def schema_by_id(self, schema_id: int) -> RegisteredSchema:
        self.asked.append(schema_id)
        return RegisteredSchema(id=schema_id, schema=json.dumps(CUSTOMER), schema_type="AVRO")


async def test_new_schema_ids_are_fetched_once_each_and_the_partition_walked_twice_at_most(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Records of 40 ids no masker knows yet: one pass stops at the first, the ids are
    # collected, each schema is fetched once, and one more pass masks them all.
    schemas = ManySchemas()
    masking = engine(schemas)
    passes: list[int] = []
    apply = masking._apply

    def counted(*args: Any) -> Any:
        passes.append(1)
        return apply(*args)

    monkeypatch.setattr(masking, "_apply", counted)
    records = batch([avro(customer(n), schema_id=41 + n) for n in range(40)])
    policy = rules("customers")
    result = await masking.mask("customers", records, policy)
    assert result.masked == 40 and len(passes) == 2
    assert sorted(schemas.asked) == list(range(41, 81))
    assert result.evidence()["schema_ids"] == list(range(41, 81))
    # Maskers cached now: one pass, nothing asked.
    await masking.mask("customers", records, policy)
    assert len(passes) == 3 and len(schemas.asked) == 40


async def test_an_unreachable_registry_refuses_the_partition_until_it_answers() -> None:
    schemas = Schemas()
    schemas.down = True
    records = batch([avro(customer(1))])
    with pytest.raises(MaskingFailed) as failed:
        await engine(schemas).mask("customers", records, rules("customers"))
    assert failed.value.cause == "registry_unavailable"
    schemas.down = False
    result = await engine(schemas).mask("customers", records, rules("customers"))
    assert result.masked == 1


async def test_a_corrupt_avro_body_refuses_the_partition() -> None:
    good = avro(customer(1))
    records = batch([good[:12]])
    with pytest.raises(MaskingFailed) as failed:
        await engine().mask("customers", records, rules("customers"))
    assert failed.value.cause == "undecodable"


async def test_a_broken_batch_refuses_the_partition() -> None:
    raw = bytearray(batch([avro(customer(1))]))
    raw[16] = 1  # an older magic
    with pytest.raises(MaskingFailed) as failed:
        await engine().mask("customers", bytes(raw), rules("customers"))
    assert failed.value.cause == "bad_batch"


async def test_avro_keys_are_masked_like_values_and_named_as_keys_in_the_evidence() -> None:
    builder = DefaultRecordBatchBuilder(2, batches.NONE, 0, -1, -1, -1, 1 << 20)
    builder.append(0, 1_700_000_000_000, avro(customer(1)), b"plain value", [])
    result = await engine().mask("accounts", bytes(builder.build()), rules("accounts"))
    (record,) = read(result.records)
    assert record.value == b"plain value"
    key = decode_customer(record.key)
    assert key["email"] == "(key)" and key["card_number"] == customer(1)["card_number"]
    (rule,) = result.evidence()["rules"]
    assert rule["fields"] == ["key:email"]
