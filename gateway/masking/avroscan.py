"""Masking Avro bodies in place: scan to the values the rules name, splice in their
masked encoding, keep every other byte.

:func:`compile_scanner` turns a writer schema and a rule tree into a :class:`Scanner`.
:meth:`Scanner.mask` walks a body's bytes once, as a decoder would, but only decodes
the values a rule masks; every other value is skipped by its length (strings, bytes),
its varint (int, long, enum, union branch, block count) or its size (float, double,
boolean, fixed). Each masked value is encoded again as the writer would encode it
and put in place of the original bytes. A body that ends early, runs past its end,
has bytes left over, a negative length or a branch the union does not have is refused,
as a full decode refuses it.

This is what :class:`~gateway.masking.avro.AvroMasker` runs; decoding the whole record
into Python objects and encoding it again costs several times as much. Where a scan
cannot do the job it raises :class:`Unscannable` and the masker decodes and encodes
instead:

- at compile time, for a recursive schema (a record that holds itself);
- at mask time, for an array or map block that states its byte size (a writer may,
  fastavro and Java's default encoder do not) with a masked value inside: the size
  would no longer be true.

A value no rule names is walked over, not read: an unmasked string that is not valid
UTF-8, or an unmasked enum index past its symbols, goes on as it was written (as it
would reach the consumer from the broker), where a full decode refuses the record. A
masked value must decode.

Semantics are :mod:`gateway.masking.avro`'s (its compiler validated the rules first and
supplies the value maskers), with one difference for the better: a masked value in a
union keeps the branch it was read with, where re-encoding may move an ``int`` to an
equal ``long`` branch.

No I/O, no asyncio, nothing cached at module level.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

from gateway.masking import MaskingError
from gateway.masking.paths import ITEMS, VALUES, FieldRule, RuleNode

__all__ = ["Scanner", "Unscannable", "compile_scanner"]

# A masked value's place in a body: (start, end, bytes to put there).
Splice = tuple[int, int, bytes]
Counts = dict[str, int]
# Reads (or skips) one value at ``pos`` of ``buf``; returns where the next one starts.
Step = Callable[[bytes, int, list[Splice], Counts], int]

# How a record's field is skipped when nothing in it is masked: the varint of an int,
# long or enum; the length-prefixed bytes of a string or bytes; a fixed number of
# bytes (float, double, boolean, fixed); anything else calls its step.
_VARINT, _LENGTH, _SIZED, _CALL = 0, 1, 2, 3
Op = tuple[int, Any]

# Items that take no bytes may still hold a masked value (a fixed of size 0): a block
# may claim this many of them beyond the bytes left, and no more.
_MAX_EMPTY_ITEMS = 1 << 16

_PRIMITIVE_SKIPS: dict[str, tuple[Op | None, int]] = {
    "null": (None, 0),
    "int": ((_VARINT, None), 1),
    "long": ((_VARINT, None), 1),
    "enum": ((_VARINT, None), 1),
    "string": ((_LENGTH, None), 1),
    "bytes": ((_LENGTH, None), 1),
    "boolean": ((_SIZED, 1), 1),
    "float": ((_SIZED, 4), 4),
    "double": ((_SIZED, 8), 8),
}

# The one-byte lengths of strings under 64 bytes.
_SHORT = tuple(bytes([n << 1]) for n in range(64))

_FLOAT = struct.Struct("<f")
_DOUBLE = struct.Struct("<d")


class Unscannable(Exception):
    """The scan cannot mask this schema or body; decode and encode it instead."""


class _Bad(Exception):
    """The body does not decode with its writer schema."""


class ValueMaskers(Protocol):
    """What the Avro compiler lends the scanner: its type resolution and value maskers."""

    def resolve(self, schema: Any) -> Any: ...

    def value_masker(self, schema: Any, rule: FieldRule) -> Callable[[Any], Any]: ...


def read_long(buf: bytes, pos: int) -> tuple[int, int]:
    """The zig-zag varint at ``pos`` and the position after it."""
    byte = buf[pos]
    pos += 1
    n = byte & 0x7F
    shift = 7
    while byte & 0x80:
        if shift > 63:
            raise _Bad("a varint runs over 10 bytes")
        byte = buf[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        shift += 7
    return (n >> 1) ^ -(n & 1), pos


def long_bytes(value: int) -> bytes:
    """``value`` as Avro writes an int or long: a zig-zag varint."""
    n = (value << 1) if value >= 0 else ((-value) << 1) - 1
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _skip_varint(buf: bytes, pos: int) -> int:
    end = pos + 10
    while buf[pos] & 0x80:
        pos += 1
        if pos >= end:
            raise _Bad("a varint runs over 10 bytes")
    return pos + 1


def _skip_length(buf: bytes, pos: int) -> int:
    n, pos = read_long(buf, pos)
    if n < 0:
        raise _Bad("a negative length")
    return pos + n


def _run(ops: tuple[Op, ...]) -> Step:
    """One step for a sequence of values (a record's fields), skipping inline what it can."""

    def run(buf: bytes, pos: int, out: list[Splice], counts: Counts) -> int:
        for code, arg in ops:
            if code == _LENGTH:
                byte = buf[pos]
                if byte < 0x80:
                    if byte & 1:
                        raise _Bad("a negative length")
                    pos += 1 + (byte >> 1)
                else:
                    pos = _skip_length(buf, pos)
            elif code == _VARINT:
                if buf[pos] < 0x80:
                    pos += 1
                else:
                    pos = _skip_varint(buf, pos)
            elif code == _SIZED:
                pos += arg
            else:
                pos = arg(buf, pos, out, counts)
        return pos

    return run


def _as_step(op: Op) -> Step:
    if op[0] == _CALL:
        return op[1]  # type: ignore[no-any-return]
    return _run((op,))


def _blocks(item: Step, entry_key: bool, width: int, *, masks: bool) -> Step:
    """Array (``entry_key`` False) or map blocks whose items each take ``item``; an item
    at least ``width`` bytes wide (0: maybe none) bounds a block's count by what is left.

    A block that states its byte size is jumped over whole when nothing in it is masked
    (``masks`` False); with masked values inside, its size would no longer be true."""

    def blocks(buf: bytes, pos: int, out: list[Splice], counts: Counts) -> int:
        while True:
            count, pos = read_long(buf, pos)
            if count == 0:
                return pos
            sized = count < 0
            if sized:
                size, pos = _block_size(buf, pos)
                if not masks:
                    pos += size
                    continue
                count = -count  # walked, not jumped: the size goes unused
            if count * max(width, 1) > len(buf) - pos + (0 if width else _MAX_EMPTY_ITEMS):
                raise _Bad("a block holds more items than bytes left")
            marked = len(out)
            for _ in range(count):
                if entry_key:
                    pos = _skip_length(buf, pos)
                pos = item(buf, pos, out, counts)
            if sized and len(out) != marked:
                raise Unscannable("a masked value in a block that states its byte size")

    return blocks


def _skip_empty_blocks(buf: bytes, pos: int, out: list[Splice], counts: Counts) -> int:
    """Skip array blocks of items that take no bytes (null, an empty record)."""
    while True:
        count, pos = read_long(buf, pos)
        if count == 0:
            return pos
        if count < 0:
            size, pos = _block_size(buf, pos)
            pos += size


def _block_size(buf: bytes, pos: int) -> tuple[int, int]:
    """The byte size of a block (after its negative count) and where its items start."""
    size, pos = read_long(buf, pos)
    if size < 0:
        raise _Bad("a negative block size")
    return size, pos


def _union(branches: tuple[Step | None, ...]) -> Step:
    """Read the branch index, then that branch's value (None: a branch with no bytes)."""

    def union(buf: bytes, pos: int, out: list[Splice], counts: Counts) -> int:
        index, pos = read_long(buf, pos)
        if not 0 <= index < len(branches):
            raise _Bad("a union branch the schema does not have")
        step = branches[index]
        return pos if step is None else step(buf, pos, out, counts)

    return union


class _Compiler:
    def __init__(self, named: Mapping[str, Any], maskers: ValueMaskers) -> None:
        self._named = named
        self._maskers = maskers
        self._open: set[str] = set()  # records being compiled: a repeat is recursion
        self._skips: dict[str, tuple[Op | None, int]] = {}

    def resolve(self, schema: Any) -> Any:
        return self._maskers.resolve(schema)

    # -- skipping -----------------------------------------------------------------

    def skip(self, schema: Any) -> tuple[Op | None, int]:
        """How to skip a value of ``schema`` (None: it takes no bytes) and the fewest
        bytes it takes."""
        schema = self.resolve(schema)
        if isinstance(schema, list):
            branches = tuple(self._branch_skip(b) for b in schema)
            return (_CALL, _union(branches)), 1
        kind = schema if isinstance(schema, str) else schema["type"]
        if kind in _PRIMITIVE_SKIPS:
            return _PRIMITIVE_SKIPS[kind]
        if kind == "fixed":
            size = int(schema["size"])
            return ((_SIZED, size) if size else None), size
        if kind == "array":
            item, width = self.skip(schema["items"])
            if item is None:
                return (_CALL, _skip_empty_blocks), 1
            return (_CALL, _blocks(_as_step(item), False, width, masks=False)), 1
        if kind == "map":
            value, width = self.skip(schema["values"])
            step = _as_step(value or (_SIZED, 0))
            return (_CALL, _blocks(step, True, width + 1, masks=False)), 1
        if kind in ("record", "error"):
            return self._record_skip(schema)
        raise Unscannable(f"type {kind!r}")

    def _branch_skip(self, branch: Any) -> Step | None:
        op, _ = self.skip(branch)
        return None if op is None else _as_step(op)

    @contextmanager
    def _inside(self, record: Mapping[str, Any]) -> Iterator[None]:
        """While ``record``'s fields are compiled; a record met again inside itself is
        recursion, which the scan does not walk."""
        name = str(record.get("name"))
        if name in self._open:
            raise Unscannable(f"record {name} holds itself")
        self._open.add(name)
        try:
            yield
        finally:
            self._open.discard(name)

    def _record_skip(self, schema: Mapping[str, Any]) -> tuple[Op | None, int]:
        # Compiled once per named record: a type used in many places (or nested types
        # used twice at every level) is not walked again each time.
        name = str(schema.get("name"))
        known = self._skips.get(name)
        if known is not None:
            return known
        self._skips[name] = found = self._record_skip_new(schema)
        return found

    def _record_skip_new(self, schema: Mapping[str, Any]) -> tuple[Op | None, int]:
        with self._inside(schema):
            ops: list[Op] = []
            width = 0
            for fld in schema["fields"]:
                op, least = self.skip(fld["type"])
                width += least
                if op is not None:
                    ops.append(op)
        if not ops:
            return None, 0
        if len(ops) == 1:
            return ops[0], width
        return (_CALL, _run(tuple(ops))), width

    # -- masking ------------------------------------------------------------------

    def scan(self, schema: Any, node: RuleNode) -> Op | None:
        """How to mask the values ``node`` names inside a value of ``schema`` (None:
        nothing there to mask)."""
        schema = self.resolve(schema)
        if node.rule is not None:
            leaf = self._leaf(schema, node.rule)
            return None if leaf is None else (_CALL, leaf)
        if isinstance(schema, list):
            steps = [self._branch_scan(b, node) for b in schema]
            if all(nothing for nothing, _ in steps):
                return None
            return (_CALL, _union(tuple(step for _, step in steps)))
        kind = schema if isinstance(schema, str) else schema["type"]
        if kind in ("record", "error"):
            return self._record_scan(schema, node)
        if kind == "array" and ITEMS in node.children:
            inner = self.scan(schema["items"], node.children[ITEMS])
            if inner is None:
                return None
            _, width = self.skip(schema["items"])
            return (_CALL, _blocks(_as_step(inner), False, width, masks=True))
        if kind == "map" and VALUES in node.children:
            inner = self.scan(schema["values"], node.children[VALUES])
            if inner is None:
                return None
            _, width = self.skip(schema["values"])
            return (_CALL, _blocks(_as_step(inner), True, width + 1, masks=True))
        return None

    def _branch_scan(self, branch: Any, node: RuleNode) -> tuple[bool, Step | None]:
        """(whether nothing is masked in this branch, the branch's step)."""
        found = self.scan(branch, node)
        if found is not None:
            return False, _as_step(found)
        return True, self._branch_skip(branch)

    def _record_scan(self, schema: Mapping[str, Any], node: RuleNode) -> Op | None:
        with self._inside(schema):
            ops: list[Op] = []
            masked = False
            for fld in schema["fields"]:
                child = node.children.get(fld["name"])
                op = None if child is None else self.scan(fld["type"], child)
                if op is not None:
                    masked = True
                else:
                    op, _ = self.skip(fld["type"])
                if op is not None:
                    ops.append(op)
        return (_CALL, _run(tuple(ops))) if masked else None

    def _leaf(self, schema: Any, rule: FieldRule) -> Step | None:
        """The step masking a value of ``schema`` by ``rule`` (None: a null, which is
        never masked nor counted)."""
        if isinstance(schema, list):
            if rule.method.kind == "null":
                return _to_null(schema.index("null"), self.skip(schema)[0], rule.rule_id)
            branches = tuple(self._leaf(self.resolve(branch), rule) for branch in schema)
            return _union(branches)
        if (schema if isinstance(schema, str) else schema["type"]) == "null":
            return None
        mask = self._maskers.value_masker(schema, rule)
        if schema == "string":
            if rule.method.kind == "redact":
                return _replace_string(_string_bytes(mask("")), rule.rule_id)
            return _string_leaf(mask, rule.rule_id)
        return _value_leaf(schema, mask, rule.rule_id)


def _to_null(null_index: int, whole: Op | None, rule_id: str) -> Step:
    """A nullable value becomes null: the union (index and value) becomes null's index."""
    assert whole is not None  # a union always takes its index's bytes
    skip = _as_step(whole)
    replacement = long_bytes(null_index)

    def to_null(buf: bytes, pos: int, out: list[Splice], counts: Counts) -> int:
        index, _ = read_long(buf, pos)
        end = skip(buf, pos, out, counts)
        if index != null_index:
            out.append((pos, end, replacement))
            counts[rule_id] = counts.get(rule_id, 0) + 1
        return end

    return to_null


def _replace_string(replacement: bytes, rule_id: str) -> Step:
    """A string becomes the same replacement whatever it held (redact): it is skipped,
    never decoded."""

    def replace(buf: bytes, pos: int, out: list[Splice], counts: Counts) -> int:
        end = _skip_length(buf, pos)
        if end > len(buf):
            raise _Bad("a length past the end of the body")
        out.append((pos, end, replacement))
        counts[rule_id] = counts.get(rule_id, 0) + 1
        return end

    return replace


def _string_leaf(mask: Callable[[str], str], rule_id: str) -> Step:
    """:func:`_value_leaf` for a string, with its reading and writing inline."""

    def leaf(buf: bytes, pos: int, out: list[Splice], counts: Counts) -> int:
        byte = buf[pos]
        if byte < 0x80:
            if byte & 1:
                raise _Bad("a negative length")
            start = pos + 1
            end = start + (byte >> 1)
        else:
            n, start = read_long(buf, pos)
            if n < 0:
                raise _Bad("a negative length")
            end = start + n
        if end > len(buf):
            raise _Bad("a length past the end of the body")
        try:
            text = buf[start:end].decode()
        except UnicodeDecodeError:
            raise _Bad("a string that is not UTF-8") from None
        new = mask(text).encode()
        size = len(new)
        out.append((pos, end, (_SHORT[size] if size < 64 else long_bytes(size)) + new))
        counts[rule_id] = counts.get(rule_id, 0) + 1
        return end

    return leaf


def _value_leaf(schema: Any, mask: Callable[[Any], Any], rule_id: str) -> Step:
    """Read one value of a primitive, enum or fixed type, mask it and splice it back."""
    kind = schema if isinstance(schema, str) else schema["type"]
    read: Callable[[bytes, int], tuple[Any, int]]
    write: Callable[[Any], bytes]
    if kind == "string":
        read, write = _read_string, _string_bytes
    elif kind == "bytes":
        read, write = _read_bytes, _bytes_bytes
    elif kind in ("int", "long"):
        read, write = read_long, long_bytes
    elif kind == "float":
        read, write = _sized_reader(_FLOAT), _FLOAT.pack
    elif kind == "double":
        read, write = _sized_reader(_DOUBLE), _DOUBLE.pack
    elif kind == "boolean":
        read, write = _read_boolean, _boolean_bytes
    elif kind == "enum":
        symbols = tuple(schema["symbols"])
        read, write = _enum_reader(symbols), _enum_writer(symbols)
    elif kind == "fixed":
        read, write = _fixed_reader(int(schema["size"])), bytes
    else:
        raise Unscannable(f"a masked {kind}")

    def leaf(buf: bytes, pos: int, out: list[Splice], counts: Counts) -> int:
        value, end = read(buf, pos)
        out.append((pos, end, write(mask(value))))
        counts[rule_id] = counts.get(rule_id, 0) + 1
        return end

    return leaf


def _read_bytes(buf: bytes, pos: int) -> tuple[bytes, int]:
    n, pos = read_long(buf, pos)
    end = pos + n
    if n < 0 or end > len(buf):
        raise _Bad("a length past the end of the body")
    return buf[pos:end], end


def _read_string(buf: bytes, pos: int) -> tuple[str, int]:
    raw, end = _read_bytes(buf, pos)
    try:
        return raw.decode("utf-8"), end
    except UnicodeDecodeError:
        raise _Bad("a string that is not UTF-8") from None


def _bytes_bytes(value: bytes) -> bytes:
    return long_bytes(len(value)) + value


def _string_bytes(value: str) -> bytes:
    return _bytes_bytes(value.encode("utf-8"))


def _sized_reader(layout: struct.Struct) -> Callable[[bytes, int], tuple[Any, int]]:
    size = layout.size

    def read(buf: bytes, pos: int) -> tuple[Any, int]:
        if pos + size > len(buf):
            raise _Bad("a number past the end of the body")
        return layout.unpack_from(buf, pos)[0], pos + size

    return read


def _read_boolean(buf: bytes, pos: int) -> tuple[bool, int]:
    return buf[pos] != 0, pos + 1


def _boolean_bytes(value: bool) -> bytes:
    return b"\x01" if value else b"\x00"


def _enum_reader(symbols: tuple[str, ...]) -> Callable[[bytes, int], tuple[str, int]]:
    def read(buf: bytes, pos: int) -> tuple[str, int]:
        index, pos = read_long(buf, pos)
        if not 0 <= index < len(symbols):
            raise _Bad("an enum index the schema does not have")
        return symbols[index], pos

    return read


def _enum_writer(symbols: tuple[str, ...]) -> Callable[[str], bytes]:
    index = {symbol: long_bytes(n) for n, symbol in enumerate(symbols)}
    return index.__getitem__


def _fixed_reader(size: int) -> Callable[[bytes, int], tuple[bytes, int]]:
    def read(buf: bytes, pos: int) -> tuple[bytes, int]:
        if pos + size > len(buf):
            raise _Bad("a fixed value past the end of the body")
        return buf[pos : pos + size], pos + size

    return read


class Scanner:
    """Masks the bodies of one writer schema under one rule tree by splicing."""

    __slots__ = ("_step",)

    def __init__(self, step: Step) -> None:
        self._step = step

    def mask(self, body: bytes, start: int = 0) -> tuple[bytes, Counts]:
        """The masked body and, per rule id, how many values were masked. The body
        starts at ``start`` of ``body`` (the bytes before it are kept: a wire-format
        header). Raises :class:`MaskingError` for a body that does not decode with the
        writer schema (never quoting it) and :class:`Unscannable` where the body must
        be decoded."""
        out: list[Splice] = []
        counts: Counts = {}
        try:
            end = self._step(body, start, out, counts)
        except (_Bad, IndexError) as exc:
            reason = str(exc) if isinstance(exc, _Bad) else "it ends early"
            raise MaskingError(
                f"Avro body does not decode with its writer schema ({reason})"
            ) from None
        if end != len(body):
            if end > len(body):
                raise MaskingError(
                    "Avro body does not decode with its writer schema (it ends early)"
                )
            raise MaskingError(f"Avro body has {len(body) - end} bytes after the record")
        if not out:
            return body, counts
        pieces: list[bytes] = []
        at = 0
        for begin, stop, replacement in out:
            pieces.append(body[at:begin])
            pieces.append(replacement)
            at = stop
        pieces.append(body[at:])
        return b"".join(pieces), counts


def compile_scanner(
    schema: Any, tree: RuleNode, named: Mapping[str, Any], maskers: ValueMaskers
) -> Scanner | None:
    """A scanner for ``schema`` (parsed, without logical types) and the rule ``tree``;
    None when nothing in the schema is masked. Raises :class:`Unscannable` for a
    schema the scan cannot walk (the caller decodes and encodes instead)."""
    compiler = _Compiler(named, maskers)
    op = compiler.scan(schema, tree)
    if op is None:
        return None
    return Scanner(_as_step(op))
