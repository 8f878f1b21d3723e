"""The canonical JSON encoding of an audit line: the exact bytes that are hashed and
signed, so that an auditor can re-implement it in any language.

A line is a JSON object whose values are objects, arrays, strings, integers, floats,
``true``, ``false`` and ``null``. Its canonical encoding is:

- UTF-8, no byte order mark; the line in the file is the encoding followed by one
  ``\\n`` (0x0A), and nothing else.
- No whitespace at all: ``,`` between members and elements, ``:`` between a key and
  its value.
- Object keys (strings only) sorted by their Unicode code points, ascending (not by
  UTF-16 code units); no duplicate keys.
- Strings: ``"`` and ``\\`` are escaped as ``\\"`` and ``\\\\``; the control characters
  U+0008, U+0009, U+000A, U+000C, U+000D as ``\\b \\t \\n \\f \\r``; every other character
  below U+0020 as ``\\u00XX`` with lower-case hex digits; every other character,
  non-ASCII included, as itself in UTF-8 (``/`` is not escaped).
- Integers in decimal without leading zeros or ``+``. Floats as the shortest decimal
  that reads back as the same IEEE 754 double (Python's ``repr``: ``0.5``, ``1e-07``,
  ``1e+16``, ``12.0``); NaN and the infinities are refused.

This is what Python's ``json.dumps(value, sort_keys=True, separators=(",", ":"),
ensure_ascii=False, allow_nan=False)`` produces, encoded as UTF-8. This module is pure:
no files, no clocks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def encode(value: Mapping[str, Any]) -> bytes:
    """The canonical encoding of ``value`` (no trailing newline). Raises ValueError for
    NaN or infinite floats, TypeError for values JSON cannot hold."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    """SHA-256 of ``data`` as 64 lower-case hex digits."""
    return hashlib.sha256(data).hexdigest()
