"""Check a request's lengths before kio decodes it.

kio's native reader reserves memory for as many array elements as a request *claims*
before it reads them; a 20-byte frame claiming four billion topics makes that
reservation fail, and a failed reservation aborts the process (it is not an
exception). This walker reads the same layout kio does, from the same generated
entity classes, but only checks that every array, string and byte length fits in the
bytes that are left. Nothing is allocated per element.
"""

from __future__ import annotations

import dataclasses
import struct
import types
import typing
from collections.abc import Callable
from typing import Any

from gateway.errors import MalformedRequest

# (offset, end) -> new offset
Step = Callable[[bytes, int, int], int]

_FIXED = {
    "bool": 1,
    "int8": 1,
    "uint8": 1,
    "int16": 2,
    "uint16": 2,
    "error_code": 2,
    "int32": 4,
    "uint32": 4,
    "timedelta_i32": 4,
    "int64": 8,
    "uint64": 8,
    "float64": 8,
    "timedelta_i64": 8,
    "datetime_i64": 8,
    "uuid": 16,
}
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


def _fail(what: str) -> MalformedRequest:
    return MalformedRequest(f"request {what}")


def _uvarint(data: bytes, offset: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if offset >= end:
            raise _fail("ends inside a varint")
        byte = data[offset]
        offset += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, offset
        shift += 7
        if shift > 63:
            raise _fail("has a varint longer than 10 bytes")


def _need(offset: int, size: int, end: int, what: str) -> int:
    if size < 0 or offset + size > end:
        raise _fail(f"claims {size} bytes of {what} with {end - offset} left")
    return offset + size


def _fixed(size: int) -> Step:
    return lambda data, offset, end: _need(offset, size, end, "a fixed-size field")


def _length_prefixed(flexible: bool, legacy: struct.Struct) -> Step:
    def step(data: bytes, offset: int, end: int) -> int:
        if flexible:
            length, offset = _uvarint(data, offset, end)
            length -= 1  # 0 is null
        else:
            offset = _need(offset, legacy.size, end, "a length")
            (length,) = legacy.unpack_from(data, offset - legacy.size)
        if length < 0:
            return offset
        return _need(offset, length, end, "a string or bytes")

    return step


def _array(flexible: bool, element: Step, element_min: int) -> Step:
    def step(data: bytes, offset: int, end: int) -> int:
        if flexible:
            count, offset = _uvarint(data, offset, end)
            count -= 1
        else:
            offset = _need(offset, 4, end, "an array length")
            (count,) = _I32.unpack_from(data, offset - 4)
        if count < 0:
            return offset
        if count * element_min > end - offset:
            raise _fail(f"claims {count} array elements with {end - offset} bytes left")
        for _ in range(count):
            offset = element(data, offset, end)
        return offset

    return step


def _nullable_entity(entity: Step) -> Step:
    def step(data: bytes, offset: int, end: int) -> int:
        offset = _need(offset, 1, end, "a null marker")
        return offset if data[offset - 1] == 0xFF else entity(data, offset, end)

    return step


def _primitive(kafka_type: str, flexible: bool, legacy_client_id: bool) -> tuple[Step, int]:
    if kafka_type in _FIXED:
        return _fixed(_FIXED[kafka_type]), _FIXED[kafka_type]
    if kafka_type == "string":
        return _length_prefixed(flexible and not legacy_client_id, _I16), 1
    if kafka_type in ("bytes", "records"):
        return _length_prefixed(flexible, _I32), 1
    raise MalformedRequest(f"no bounds rule for kafka type {kafka_type!r}")


def _inner(annotation: Any) -> tuple[Any, bool, bool]:
    """(element type, is array, is optional) of a field annotation."""
    optional = False
    if typing.get_origin(annotation) in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional, annotation = True, args[0]
    if typing.get_origin(annotation) is tuple:
        element = typing.get_args(annotation)[0]
        if typing.get_origin(element) in (types.UnionType, typing.Union):
            element = next(a for a in typing.get_args(element) if a is not type(None))
        return element, True, optional
    return annotation, False, optional


def _field_step(cls: type[Any], field: dataclasses.Field[Any], tagged: bool) -> Step:
    flexible = bool(cls.__flexible__)
    hints = typing.get_type_hints(cls)
    element, is_array, optional = _inner(hints[field.name])
    if dataclasses.is_dataclass(element) and isinstance(element, type):
        step, minimum = entity_step(element), 1
        if not is_array and optional and not tagged:
            step = _nullable_entity(step)
    else:
        legacy_client_id = cls.__name__ == "RequestHeader" and field.name == "client_id"
        kafka_type = field.metadata.get("kafka_type", "")
        step, minimum = _primitive(kafka_type, flexible, legacy_client_id)
    return _array(flexible, step, minimum) if is_array else step


_ENTITY_STEPS: dict[type[Any], Step] = {}


def entity_step(cls: type[Any]) -> Step:
    """The bounds check for one generated entity class (cached)."""
    found = _ENTITY_STEPS.get(cls)
    if found is not None:
        return found
    # Recursive entities do not occur in Kafka's messages; a placeholder breaks any
    # cycle all the same.
    _ENTITY_STEPS[cls] = lambda data, offset, end: _ENTITY_STEPS[cls](data, offset, end)
    plain: list[Step] = []
    tagged: dict[int, Step] = {}
    for field in dataclasses.fields(cls):
        tag = field.metadata.get("tag")
        if tag is None:
            plain.append(_field_step(cls, field, tagged=False))
        else:
            tagged[tag] = _field_step(cls, field, tagged=True)
    flexible = bool(cls.__flexible__)

    def step(data: bytes, offset: int, end: int) -> int:
        for field_step in plain:
            offset = field_step(data, offset, end)
        if flexible:
            offset = _tagged_fields(data, offset, end, tagged)
        return offset

    _ENTITY_STEPS[cls] = step
    return step


def _tagged_fields(data: bytes, offset: int, end: int, known: dict[int, Step]) -> int:
    count, offset = _uvarint(data, offset, end)
    if count > end - offset:
        raise _fail(f"claims {count} tagged fields with {end - offset} bytes left")
    for _ in range(count):
        tag, offset = _uvarint(data, offset, end)
        size, offset = _uvarint(data, offset, end)
        field_end = _need(offset, size, end, "a tagged field")
        step = known.get(tag)
        if step is not None:
            step(data, offset, field_end)
        offset = field_end
    return offset


def check(header_cls: type[Any], body_cls: type[Any], frame: bytes) -> None:
    """Raise MalformedRequest when any length in ``frame`` exceeds what is there."""
    end = len(frame)
    offset = entity_step(header_cls)(frame, 0, end)
    entity_step(body_cls)(frame, offset, end)
