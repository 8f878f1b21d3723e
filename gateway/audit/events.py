"""The audit event model, version 1: builders that return plain JSON-ready dicts.

Every event is a dict of str/int/float/bool/None, lists and dicts only, so that the log
can serialize it without knowing its kind. This module only builds events: it reads
requests, answers and sessions and never writes, sends or changes them. Secrets
(passwords, tokens, keys, SASL bytes) are never an argument of any builder.

Fields common to every event:

- ``v``: 1, the version of this model.
- ``type``: ``connection_opened``, ``connection_closed``, ``authentication``,
  ``request``, ``policy_reload``, ``admin_action``, ``audit_started``,
  ``audit_stopped`` (and, from the log itself, ``audit_unavailable``, ``recovered``).
- ``time``: seconds since the epoch (float) when the event happened (for ``request``:
  when the request was read).

``connection_opened``: ``connection`` (the connection id: 32 hex digits, one per
client connection, shared by every event of that connection), ``listener``,
``security_protocol``, ``peer`` ("host:port"), ``tls`` (null, or ``version``,
``cipher``, ``client_subject``).

``connection_closed``: ``connection``, ``reason`` (short text), ``bytes_in``,
``bytes_out``, ``requests`` (counts for the connection), ``duration_ms``.

``authentication``: ``connection``, ``listener``, ``mechanism``, ``principal`` (the
authenticated principal, or on failure the name the client attempted, or null),
``result`` (``success`` or ``failure``), ``reason`` (a short class of failure such as
``bad_credentials``; null on success).

``request``: ``connection``, ``api`` (API name), ``version``, ``correlation_id``,
``client_id``, ``principal``, ``groups``, ``mechanism``, ``listener``,
``resources`` (``[{"kind", "name"}]`` the request names, in order),
``decisions`` (``[{"stage", "kind", "name", "allowed", "rule", "policy_version",
"error"}]``, every item decision of the pipeline; ``error`` is a Kafka error name or
null), ``results`` (``[{"item", "error"}]``: each answered item, as "topic/partition",
"group" and so on, with its Kafka error name; ``item`` is "" for the answer's own error),
``produce`` (Produce only: ``[{"topic", "partition", "records", "bytes",
"base_offset"}]``, counted from the record batch headers without decompressing;
``base_offset`` from the answer, null with acks=0 or an error), ``fetch`` (Fetch only:
``[{"topic", "partition", "records", "first_offset", "last_offset"}]`` of the delivered
batches), ``answered`` (false for an acks=0 Produce, which gets no answer),
with ``audit.payloads`` capturing the topic, each ``produce``/``fetch`` entry also has
``capture`` (``sha256`` or ``full``) and ``captured``: ``[{"offset", "timestamp",
"headers" (names only), "key_sha256", "value_sha256"}]`` (hex, null for a null key or
value), or with ``full`` ``"key"``/``"value"`` in base64; a Fetch's records before the
fetch offset are left out; ``capture_truncated`` (records left out past
CAPTURE_MAX_RECORDS or CAPTURE_MAX_FULL_BYTES) and ``capture_error`` (a batch that did
not decode) when they apply,
``latency_ms``, ``throttle_ms`` (null when the answer carries none); with masking
rules in force, ``masking`` (``[{"topic", "partition", "records", "rules": [{"rule",
"records", "fields"}], "schema_ids"}]``: the records masked per partition, per rule the
records and the field paths, detectors or headers it masked, and the Avro schema ids
read) and ``masking_failed`` (``[{"topic", "partition", "cause"}]``: partitions refused
because they could not be masked).

``policy_reload``: ``old_version``, ``new_version``, ``result`` (``applied`` or
``rejected``), ``errors`` (list of lines, naming file, line and field), ``trigger``
(``watcher``, ``signal`` or ``admin``), ``by`` (the admin caller, or null).

``audit_started``: the gateway began to write this chain: ``instance``,
``gateway_version``, ``fail_open`` (so a log written in that mode says so),
``payloads`` (the capture settings), ``key_id`` (of the signing key),
``policy_version`` (in force at start). ``audit_stopped``: ``instance``, the last event
of a clean shutdown before the sealing checkpoint.

``admin_action``: every admin API call but the open ``/healthz``, ``/readyz`` and
``/metrics``: ``principal`` (null when the caller did not authenticate), ``method``,
``path`` (the route, never the query), ``status`` (HTTP status), ``peer`` (address).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aiokafka.record.memory_records import MemoryRecords
from kio.schema.errors import ErrorCode

from gateway.errors import UnsupportedApi
from gateway.pipeline import topic_name
from gateway.protocol import items
from gateway.protocol.codec import Request
from gateway.protocol.items.model import Items

if TYPE_CHECKING:
    from gateway.pipeline import Call
    from gateway.session import ClientSession

VERSION = 1

# Produce and Fetch API keys (Kafka's numbers).
PRODUCE = 0
FETCH = 1

# Record batch header (magic 2): baseOffset int64 @0, batchLength int32 @8 (bytes after
# this field), magic int8 @16, lastOffsetDelta int32 @23, recordsCount int32 @57.
_BATCH_HEADER = 61
_LOG_OVERHEAD = 12
_INT64 = struct.Struct(">q")
_INT32 = struct.Struct(">i")


def _base(kind: str, at: float | None = None) -> dict[str, Any]:
    return {"v": VERSION, "type": kind, "time": time.time() if at is None else at}


def _tls(session: ClientSession) -> dict[str, Any] | None:
    tls = session.tls
    if tls is None:
        return None
    return {"version": tls.version, "cipher": tls.cipher, "client_subject": tls.client_subject}


def connection_opened(session: ClientSession) -> dict[str, Any]:
    event = _base("connection_opened", session.connected_at)
    event.update(
        connection=session.connection_id,
        listener=session.listener.name,
        security_protocol=session.listener.security_protocol,
        peer=session.peer,
        tls=_tls(session),
    )
    return event


def connection_closed(
    session: ClientSession, reason: str, bytes_in: int, bytes_out: int, requests: int
) -> dict[str, Any]:
    event = _base("connection_closed")
    event.update(
        connection=session.connection_id,
        reason=reason,
        bytes_in=bytes_in,
        bytes_out=bytes_out,
        requests=requests,
        duration_ms=max(0.0, (event["time"] - session.connected_at) * 1000.0),
    )
    return event


def authentication(
    session: ClientSession,
    mechanism: str | None,
    principal: str | None,
    ok: bool,
    reason: str | None,
) -> dict[str, Any]:
    """``principal`` is the authenticated one, or the name a failed attempt gave; the
    caller passes no credential, so none can end up here."""
    event = _base("authentication")
    event.update(
        connection=session.connection_id,
        listener=session.listener.name,
        mechanism=mechanism,
        principal=principal,
        result="success" if ok else "failure",
        reason=None if ok else reason,
    )
    return event


def policy_reload(
    old_version: str | None,
    new_version: str | None,
    applied: bool,
    errors: Sequence[str] = (),
    trigger: str | None = None,
    by: str | None = None,
) -> dict[str, Any]:
    event = _base("policy_reload")
    event.update(
        old_version=old_version,
        new_version=new_version,
        result="applied" if applied else "rejected",
        errors=list(errors),
        trigger=trigger,
        by=by,
    )
    return event


def audit_started(
    instance: str,
    version: str,
    fail_open: bool,
    payloads: Sequence[Mapping[str, str]],
    key_id: str,
    policy_version: str | None,
) -> dict[str, Any]:
    event = _base("audit_started")
    event.update(
        instance=instance,
        gateway_version=version,
        fail_open=fail_open,
        payloads=[dict(p) for p in payloads],
        key_id=key_id,
        policy_version=policy_version,
    )
    return event


def audit_stopped(instance: str) -> dict[str, Any]:
    event = _base("audit_stopped")
    event.update(instance=instance)
    return event


def admin_action(
    principal: str | None, method: str, path: str, status: int, peer: str | None = None
) -> dict[str, Any]:
    event = _base("admin_action")
    event.update(principal=principal, method=method, path=path, status=status, peer=peer)
    return event


def request(
    call: Call, answer: Any, answered: bool, finished: float, asked: Request | None = None
) -> dict[str, Any]:
    """The event of one request: ``answer`` is the decoded response entity (None when
    there is none: acks=0), ``finished`` the ``time.perf_counter()`` of its answer,
    ``asked`` the request as the client sent it (before any item was withheld)."""
    req = asked if asked is not None else call.request
    identity = call.identity
    body = req.body
    event = _base("request", call.started_at)
    event.update(
        connection=call.session.connection_id,
        api=type(body).__name__.removesuffix("Request"),
        version=req.api_version,
        correlation_id=req.correlation_id,
        client_id=req.client_id,
        principal=identity.principal,
        groups=list(identity.groups),
        mechanism=identity.mechanism,
        listener=call.session.listener.name,
        resources=list(_resources(call, req)),
        decisions=[
            {
                "stage": d.stage,
                "kind": d.resource.kind,
                "name": str(d.resource.name),
                "allowed": d.allowed,
                "rule": d.rule_id,
                "policy_version": d.policy_version,
                "error": _error_name(d.error),
            }
            for d in call.decisions
        ],
        results=[] if answer is None else results(req.api_key, req.api_version, answer),
        answered=answered,
        latency_ms=max(0.0, (finished - call.started) * 1000.0),
        throttle_ms=_throttle_ms(answer),
    )
    audit = call.session.services.config.audit
    capture_for = audit.capture_for if audit is not None else _no_capture
    if req.api_key == PRODUCE:
        event["produce"] = produce_partitions(body, answer, call, capture_for)
    elif req.api_key == FETCH and answer is not None:
        event["fetch"] = fetch_partitions(answer, call, capture_for, _fetch_offsets(body, call))
    # What the masking stage did (gateway.pipeline.masking leaves it in the call's notes).
    for note in ("masking", "masking_failed"):
        if call.notes.get(note):
            event[note] = list(call.notes[note])
    return event


def _no_capture(topic: str) -> str:
    return "none"


# Bounds of one event's captured records: past them the event says how many records it
# left out (``capture_truncated``), so an event never grows without bound.
CAPTURE_MAX_RECORDS = 10_000
CAPTURE_MAX_FULL_BYTES = 4 * 1024 * 1024


def _sha256_or_none(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def _b64_or_none(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def captured(
    records: Any,
    capture: str,
    *,
    relative: bool = False,
    offset_base: int | None = None,
    from_offset: int | None = None,
) -> dict[str, Any]:
    """The ``captured`` entries (and ``capture_truncated``/``capture_error``) of one
    partition's record batches, decoded (and decompressed) by aiokafka. In a Produce
    request offsets are deltas (``relative``): ``offset_base`` (the answer's base
    offset, None when not written) makes them real. A Fetch's records before
    ``from_offset`` are not delivered to the client and are left out. Control batches
    (transaction markers) hold no data."""
    found: list[dict[str, Any]] = []
    left_out = 0
    full_bytes = 0
    try:
        batches = MemoryRecords(bytes(records or b""))
        while (batch := batches.next_batch()) is not None:
            if batch.is_control_batch:
                continue
            for record in batch:
                offset = record.offset
                if from_offset is not None and offset < from_offset:
                    continue
                if len(found) >= CAPTURE_MAX_RECORDS or full_bytes > CAPTURE_MAX_FULL_BYTES:
                    left_out += 1
                    continue
                if relative:
                    offset = None if offset_base is None else offset_base + offset
                entry: dict[str, Any] = {
                    "offset": offset,
                    "timestamp": record.timestamp,
                    "headers": [name for name, _ in record.headers],
                }
                if capture == "full":
                    entry["key"] = _b64_or_none(record.key)
                    entry["value"] = _b64_or_none(record.value)
                    full_bytes += len(record.key or b"") + len(record.value or b"")
                else:
                    entry["key_sha256"] = _sha256_or_none(record.key)
                    entry["value_sha256"] = _sha256_or_none(record.value)
                found.append(entry)
    except Exception as exc:  # noqa: BLE001 - whatever a damaged batch makes aiokafka raise
        # The offsets and counts of the event stand; the capture says what went wrong.
        return {"captured": found, "capture_error": f"{type(exc).__name__}: {exc}"[:200]}
    result: dict[str, Any] = {"captured": found}
    if left_out:
        result["capture_truncated"] = left_out
    return result


def _resources(call: Call, req: Request) -> Iterator[dict[str, Any]]:
    try:
        named_items = items.names(req.body)
    except UnsupportedApi:
        return  # connection set-up (ApiVersions, SASL) names no resource
    seen = set()
    for named in named_items:
        resource = call.key(named)
        if resource not in seen:
            seen.add(resource)
            yield {"kind": resource.kind, "name": str(resource.name)}


def _error_name(error: int | None) -> str | None:
    if error is None:
        return None
    try:
        return ErrorCode(error).name
    except ValueError:
        return str(int(error))


def _throttle_ms(answer: Any) -> float | None:
    throttle = getattr(answer, "throttle_time", None)
    if isinstance(throttle, datetime.timedelta):
        return throttle.total_seconds() * 1000.0
    if isinstance(throttle, int):
        return float(throttle)
    return None


def results(api_key: int, api_version: int, answer: Any) -> list[dict[str, Any]]:
    """Each answered item's error, found through the item descriptions of
    ``gateway.protocol.items`` (so every API they describe is covered alike)."""
    try:
        api = items.describe(api_key, api_version)
    except UnsupportedApi:
        # APIs without item descriptions (ApiVersions, SASL, ...) still answer with one
        # error code of their own; a failed login must show it.
        if hasattr(answer, "error_code"):
            return [{"item": "", "error": _error_name(answer.error_code)}]
        return []
    found: list[dict[str, Any]] = []
    if api.error and hasattr(answer, "error_code"):
        found.append({"item": "", "error": _error_name(answer.error_code)})
    for described in api.items:
        found.extend(_item_results(answer, described, ""))
    return found


def _item_results(parent: Any, described: Items, prefix: str) -> Iterator[dict[str, Any]]:
    if described.response is None:
        return
    for entry in getattr(parent, described.response, None) or ():
        label = prefix + _label(entry, described)
        if described.error:
            yield {"item": label, "error": _error_name(getattr(entry, described.error, None))}
        for child in described.children:
            yield from _item_results(entry, child, label + "/")


def _label(entry: Any, described: Items) -> str:
    """What names an answer entry: the fields that echo its request item."""
    values = [getattr(entry, name, None) for name in described.echo]
    return "/".join(str(v) for v in values if v is not None) or "?"


def batches(records: Any) -> Iterator[tuple[int, int, int, int]]:
    """(base offset, records, bytes, last offset delta) of each complete magic-2 batch
    in ``records``, read from the headers alone: nothing is decompressed."""
    if not records:
        return
    data = memoryview(records)
    pos = 0
    while pos + _BATCH_HEADER <= len(data):
        length = _INT32.unpack_from(data, pos + 8)[0]
        size = _LOG_OVERHEAD + length
        if length < 0 or pos + size > len(data):
            return  # a partial batch at the end (a Fetch may end in one)
        if data[pos + 16] == 2:
            yield (
                _INT64.unpack_from(data, pos)[0],
                _INT32.unpack_from(data, pos + 57)[0],
                size,
                _INT32.unpack_from(data, pos + 23)[0],
            )
        pos += size


def produce_partitions(
    body: Any, answer: Any, call: Call, capture_for: Callable[[str], str] = _no_capture
) -> list[dict[str, Any]]:
    """What a Produce wrote, per partition; topics by name (Produce v13+ names them by
    id in the request and the answer: the name the layout knows, else the id)."""
    offsets: dict[tuple[str, int], int | None] = {}
    for topic in getattr(answer, "responses", None) or ():
        name = topic_name(call, topic)
        for part in topic.partition_responses:
            ok = part.error_code == ErrorCode.none
            offsets[(name, part.index)] = part.base_offset if ok else None
    found = []
    for topic in body.topic_data:
        name = topic_name(call, topic)
        for part in topic.partition_data:
            counted = list(batches(part.records))
            found.append(
                {
                    "topic": name,
                    "partition": part.index,
                    "records": sum(b[1] for b in counted),
                    "bytes": len(part.records or b""),
                    "base_offset": offsets.get((name, part.index)),
                }
            )
            capture = capture_for(name)
            if capture != "none":
                found[-1]["capture"] = capture
                found[-1].update(
                    captured(
                        part.records,
                        capture,
                        relative=True,
                        offset_base=found[-1]["base_offset"],
                    )
                )
    return found


def _fetch_offsets(body: Any, call: Call) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the offset the client asked to read from."""
    found: dict[tuple[str, int], int] = {}
    for topic in getattr(body, "topics", None) or ():
        name = topic_name(call, topic)
        for part in topic.partitions:
            found[(name, part.partition)] = part.fetch_offset
    return found


def fetch_partitions(
    answer: Any,
    call: Call,
    capture_for: Callable[[str], str] = _no_capture,
    fetch_offsets: Mapping[tuple[str, int], int] | None = None,
) -> list[dict[str, Any]]:
    found = []
    for topic in getattr(answer, "responses", None) or ():
        name = topic_name(call, topic)
        for part in topic.partitions:
            counted = list(batches(part.records))
            found.append(
                {
                    "topic": name,
                    "partition": part.partition_index,
                    "records": sum(b[1] for b in counted),
                    "first_offset": counted[0][0] if counted else None,
                    "last_offset": counted[-1][0] + counted[-1][3] if counted else None,
                }
            )
            capture = capture_for(name)
            if capture != "none":
                asked = (fetch_offsets or {}).get((name, part.partition_index))
                found[-1]["capture"] = capture
                found[-1].update(captured(part.records, capture, from_offset=asked))
    return found


def json_ready(values: Iterable[Any]) -> bool:
    """True when every value is made of JSON types only (for tests and the log)."""
    return all(_plain(v) for v in values)


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (str, bool, int, float)):
        return True
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False
