"""The ``masked`` workload's data: 1 KiB Avro records of 12 fields in Confluent's wire
format, 3 of whose fields (e-mail: keyed hash, card number: partial, street: redact)
the bench policy masks for the bench listener on the policy and audit paths.

The records are written straight to the primary (not measured), with the schema id the
gateway's embedded registry gives this schema; ConsumerPerformance then reads them on
each path, so ``gw/dir`` of the policy path is masked consume / direct consume.
"""

from __future__ import annotations

import io
from typing import Any

from confluent_kafka import Producer
from fastavro import parse_schema, schemaless_writer

from gateway.masking.avro import join_wire
from gateway.masking.embedded import canonical_form, schema_id
from tests.perf.targets import MASKED_SCHEMA as SCHEMA
from tests.perf.targets import BenchError

RECORD_BYTES = 1024
DISTINCT = 1000


def _values() -> list[bytes]:
    parsed = parse_schema(SCHEMA)
    wire_id = schema_id(canonical_form(SCHEMA))
    values = []
    for n in range(DISTINCT):
        record = {
            "id": n,
            "name": f"Customer {n}",
            "email": f"customer{n}@example.com",
            "card_number": f"4111 1111 1111 {n % 10000:04d}",
            "street": f"{n} Canal Street",
            "city": "Amsterdam",
            "country": "NL",
            "phone": f"+31 20 555 {n % 10000:04d}",
            "amount": n * 7,
            "created": 1_700_000_000_000 + n,
            "status": "active",
            "notes": "",
        }
        out = io.BytesIO()
        schemaless_writer(out, parsed, record)
        pad = RECORD_BYTES - 5 - len(out.getvalue())
        record["notes"] = "x" * max(0, pad - 2)  # its length prefix takes 2 bytes
        out = io.BytesIO()
        schemaless_writer(out, parsed, record)
        values.append(join_wire(wire_id, out.getvalue()))
    return values


def produce(conf: dict[str, str], topic: str, records: int, partitions: int) -> None:
    """``records`` Avro records to ``topic``, spread over its partitions."""
    values = _values()
    producer = Producer(conf | {"linger.ms": "20", "batch.size": "1048576", "acks": "1"})
    failed: list[str] = []

    def done(err: Any, msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    for n in range(records):
        while True:
            try:
                producer.produce(
                    topic, values[n % DISTINCT], partition=n % partitions, on_delivery=done
                )
                break
            except BufferError:
                producer.poll(0.05)
        if n % 10_000 == 0:
            producer.poll(0)
    if producer.flush(120) or failed:
        raise BenchError(f"writing the masked workload's records failed: {failed[:3]}")
