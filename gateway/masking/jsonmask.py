"""Masking JSON values by key path, keeping each value's JSON type.

Paths use the syntax of :mod:`~gateway.masking.paths`: ``a.b`` walks objects,
``a[]`` every item of an array, ``a{}`` every value of an object. JSON has no schema,
so a path that a document lacks (or that meets another type than it expects) simply
masks nothing there.

Decisions:

- A string stays a string, an integer an integer, a float a float, a boolean a boolean
  (see :mod:`~gateway.masking.methods`); ``null`` stays ``null``. Integer hashes stay
  within ±2**47, safe for JavaScript readers.
- ``null`` may replace any value: every JSON value is nullable.
- A path naming an object or an array with ``redact``, ``hash`` or ``partial`` masks
  every leaf inside it, keeping the structure: the rule asked for the whole subtree to
  be hidden, and refusing could only leave it in clear.
- ``partial`` keeps the last characters of strings; a number or a boolean under a
  ``partial`` rule is redacted (``0``, ``0.0``, ``false``), since a number cannot show
  a masked prefix and stay a number.
- ``a{}`` masks the values of ``a`` that no rule names by key (``a.b`` with ``a{}``
  applies ``a.b``'s rule to ``b`` and ``a{}``'s to the rest), so nothing is masked twice.
- Input must be strict JSON in UTF-8 (no ``NaN``, no ``Infinity``); otherwise
  :class:`MaskingError`. Output is compact UTF-8 JSON with key order kept; numbers and
  escapes are written in Python's canonical form, so unmasked parts are equal in value,
  not always in bytes. Duplicate keys keep the last value, as most readers do.

No I/O; nothing cached beyond the compiled rule tree.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from gateway.masking import MaskingError
from gateway.masking.methods import (
    MaskKey,
    Method,
    mask_bool,
    mask_float,
    mask_int,
    mask_string,
)
from gateway.masking.paths import ITEMS, VALUES, FieldRule, RuleNode, rule_tree

__all__ = ["JsonMasker"]

_JSON_INT_BITS = 48  # a signed 48-bit value is within JavaScript's exact range
_REDACT = Method("redact")


def _refuse_constant(name: str) -> Any:
    raise MaskingError(f"JSON value holds {name}, which strict JSON does not allow")


def _mask_leaf(value: Any, method: Method, key: MaskKey | None) -> Any:
    if method.kind == "null" or value is None:
        return None
    if isinstance(value, str):
        return mask_string(value, method, key)
    if method.kind == "partial":
        method = _REDACT
    if isinstance(value, bool):
        return mask_bool(value, method, key)
    if isinstance(value, int):
        return mask_int(value, method, key, bits=_JSON_INT_BITS)
    return mask_float(value, method, key)


class JsonMasker:
    """Masks JSON documents under one set of rules."""

    def __init__(self, rules: Sequence[FieldRule], key: MaskKey | None = None) -> None:
        if key is None and any(rule.method.kind == "hash" for rule in rules):
            raise MaskingError("method hash needs a masking key and none is configured")
        self._tree = rule_tree(rules)
        self._key = key

    def mask(self, value: bytes | memoryview) -> tuple[bytes, dict[str, int]]:
        """Return the masked document and, per rule id, how many values it masked."""
        try:
            text = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise MaskingError("JSON value is not valid UTF-8") from None
        try:
            document = json.loads(text, parse_constant=_refuse_constant)
        except json.JSONDecodeError as exc:
            # The position says where, without quoting the value.
            raise MaskingError(
                f"JSON value does not parse: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
        except RecursionError:
            raise MaskingError("JSON value is nested too deeply") from None
        counts: dict[str, int] = {}
        try:
            masked = self._walk(self._tree, document, counts)
        except RecursionError:
            raise MaskingError("JSON value is nested too deeply") from None
        return _dump(masked), counts

    def _walk(self, node: RuleNode, value: Any, counts: dict[str, int]) -> Any:
        if node.rule is not None:
            return self._mask_all(value, node.rule, counts)
        if isinstance(value, dict):
            for step, child in node.children.items():
                if step not in (ITEMS, VALUES) and step in value:
                    value[step] = self._walk(child, value[step], counts)
            every = node.children.get(VALUES)
            if every is not None:
                for name in value:
                    if name not in node.children:
                        value[name] = self._walk(every, value[name], counts)
        elif isinstance(value, list) and ITEMS in node.children:
            items = node.children[ITEMS]
            return [self._walk(items, item, counts) for item in value]
        return value

    def _mask_all(self, value: Any, rule: FieldRule, counts: dict[str, int]) -> Any:
        if value is None:
            return None
        if rule.method.kind != "null":
            if isinstance(value, dict):
                return {k: self._mask_all(v, rule, counts) for k, v in value.items()}
            if isinstance(value, list):
                return [self._mask_all(item, rule, counts) for item in value]
        counts[rule.rule_id] = counts.get(rule.rule_id, 0) + 1
        return _mask_leaf(value, rule.method, self._key)


def _dump(document: Any) -> bytes:
    try:
        text = json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (from a "\ud800" escape) has no UTF-8 form; escape it instead.
        text = json.dumps(document, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
        return text.encode("ascii")
