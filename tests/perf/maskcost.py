"""Where a masked record's CPU goes: the ``masked`` workload's records (1 KiB Avro, 12
fields, 3 masked) through the masking engine in this process, with no network, timed
whole and piece by piece.

    .venv/bin/python -m tests.perf.maskcost

Prints microseconds of one core per record; the bench's ``gw CPU s`` of the masked
rows is this plus what the gateway spends on every Fetch without masking.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
import timeit
from collections.abc import Callable
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatchBuilder

from gateway.masking.avro import compile_masker, split_wire
from gateway.masking.batches import edit_fields
from gateway.masking.engine import MaskingEngine
from gateway.masking.methods import MaskKey, Method, hash_text, partial_text
from gateway.masking.paths import FieldRule
from gateway.masking.schemas import RegisteredSchema
from gateway.policy.loader import build_policy
from tests.perf.masked import _values
from tests.perf.targets import MASKED_SCHEMA, MASKING_POLICY

BATCH_RECORDS = 500
BATCHES = 4  # about 2 MiB: three partitions of a ConsumerPerformance fetch, near enough
TOPIC = "bench-1-masked-direct-r1"
KEY = MaskKey(bytes(32))


class _Schemas:
    async def schema_by_id(self, schema_id: int) -> RegisteredSchema:
        return RegisteredSchema(id=schema_id, schema=json.dumps(MASKED_SCHEMA), schema_type="AVRO")


def _records(values: list[bytes]) -> bytes:
    out = b""
    for n in range(BATCHES):
        builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 26)
        for i in range(BATCH_RECORDS):
            value = values[(n * BATCH_RECORDS + i) % len(values)]
            builder.append(i, 1_700_000_000_000 + i, None, value, [])
        batch = bytearray(builder.build())
        struct.pack_into(">q", batch, 0, n * BATCH_RECORDS)
        out += batch
    return out


def _per_record(work: Callable[[], Any], records: int) -> float:
    best = min(timeit.repeat(work, number=3, repeat=5)) / 3
    return best / records * 1e6


def main() -> None:
    values = _values()
    records = _records(values)
    count = BATCHES * BATCH_RECORDS
    policy = build_policy(
        {
            "policies/bench.yaml": MASKING_POLICY.replace(
                "    subjects: {listeners: [bench]}\n", ""
            ).encode()
        }
    )
    rules = tuple(r for r in policy.masking if r.names(TOPIC))
    engine = MaskingEngine(_Schemas(), KEY, inline_max_bytes=1 << 30)

    async def whole() -> float:
        await engine.mask(TOPIC, records, rules)
        started = time.perf_counter()
        for _ in range(10):
            await engine.mask(TOPIC, records, rules)
        return (time.perf_counter() - started) / 10 / count * 1e6

    total = asyncio.run(whole())
    field_rules = [
        FieldRule("email", Method("hash"), "email"),
        FieldRule("card_number", Method("partial", keep_last=4), "card_number"),
        FieldRule("street", Method("redact"), "street"),
    ]
    masker = compile_masker(MASKED_SCHEMA, field_rules, KEY)
    bodies = [bytes(split_wire(v)[1]) for v in values]
    redact_only = compile_masker(
        MASKED_SCHEMA, [FieldRule(r.path, Method("redact"), r.rule_id) for r in field_rules], KEY
    )
    rows = [
        ("the engine, whole (what the gateway runs per partition)", total),
        (
            "  walk the records, write back the changed ones and their batches",
            _per_record(lambda: edit_fields(records, lambda k, v, h: (k, v, h)), count),
        ),
        (
            "  Avro: scan 12 fields, mask 3, splice",
            _per_record(lambda: [masker.mask(b) for b in bodies], len(bodies)),
        ),
        (
            "    the same with 3 redactions (scan and splice alone)",
            _per_record(lambda: [redact_only.mask(b) for b in bodies], len(bodies)),
        ),
        (
            "    keyed hash of the e-mail",
            _per_record(
                lambda: [hash_text(f"customer{n}@example.com", KEY) for n in range(1000)], 1000
            ),
        ),
        (
            "    partial card number",
            _per_record(
                lambda: [partial_text(f"4111 1111 1111 {n:04d}", 4) for n in range(1000)], 1000
            ),
        ),
    ]
    width = max(len(name) for name, _ in rows)
    for name, micros in rows:
        print(f"{name:<{width}}  {micros:6.2f} us/record")


if __name__ == "__main__":
    main()
