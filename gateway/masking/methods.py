"""Masking methods: how one value of one type is masked, keeping its type.

A :class:`Method` says what to do (``redact``, ``hash``, ``partial``, ``null``); one
function per kind of value does it. The functions are pure and deterministic: the same
value, method and :class:`MaskKey` always give the same result, so a hashed column
still joins and counts.

What each method does, by type (the one place these decisions are written down):

========== ======================== ============================== ==================
type       redact                   hash (HMAC-SHA256, keyed)      partial
========== ======================== ============================== ==================
string     ``method.replacement``   same length; a digit stays a   ``*`` for every
                                    digit, an ASCII letter a       letter and digit
                                    letter of the same case, any   but the last
                                    other character is kept        ``keep_last``
                                                                   characters; other
                                                                   characters (spaces,
                                                                   dashes, ``@``) kept
int/long   ``0``                    a value in int32 / int64 range  refused
float/dbl  ``0.0``                  a whole number below 2**24      refused
boolean    ``False``                ``False`` (a hash of a          refused
                                    two-valued type would only
                                    rename the two values)
bytes      ``b""`` (hides length)   the 32-byte HMAC digest         refused
fixed      ``size`` zero bytes      HMAC output cut to ``size``     refused
enum       the first symbol         a symbol picked by the HMAC     refused
========== ======================== ============================== ==================

``null`` makes the value ``None``; it is only allowed where the type admits null, which
the Avro and JSON modules check when they compile rules.

A format-preserving hash of a short value (a 4-digit PIN) can be reversed by trying
every value only by someone holding the key; the key is what protects it.

This module touches no I/O and knows nothing of schemas, paths or policies.
"""

from __future__ import annotations

import hashlib
import hmac
import string
from dataclasses import dataclass, field
from typing import Literal

from gateway.masking import MaskingError

MethodKind = Literal["redact", "hash", "partial", "null"]
METHOD_KINDS: frozenset[str] = frozenset({"redact", "hash", "partial", "null"})

# Shortest key accepted: HMAC-SHA256 with a key under 128 bits invites brute force.
MIN_KEY_BYTES = 16

_DIGITS = string.digits
_LOWER = string.ascii_lowercase
_UPPER = string.ascii_uppercase
_PARTIAL_MASK = "*"


def _row(byte: int) -> str:
    """What an ASCII character becomes for each noise byte 0-255 (as :func:`hash_text`
    maps it): digits and letters by the byte, anything else stays."""
    ch = chr(byte)
    for alphabet in (_DIGITS, _LOWER, _UPPER):
        if ch in alphabet:
            return "".join(alphabet[n % len(alphabet)] for n in range(256))
    return ch * 256


# Per ASCII code, the 256 characters it can become: hashing ASCII text is then two
# lookups per character in C. Non-ASCII text takes the character loop.
_HASH_ROWS = tuple(_row(b) for b in range(128))
# ASCII letters and digits to ``*`` (what str.isalnum() is true for in ASCII).
_PARTIAL_ASCII = str.maketrans({c: _PARTIAL_MASK for c in _DIGITS + _LOWER + _UPPER})


@dataclass(frozen=True, slots=True)
class MaskKey:
    """The gateway-held HMAC key. Its repr shows a fingerprint, never the key."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes):
            raise MaskingError("masking key must be bytes")
        if len(self.secret) < MIN_KEY_BYTES:
            raise MaskingError(f"masking key must be at least {MIN_KEY_BYTES} bytes")

    def __repr__(self) -> str:
        return f"MaskKey(fingerprint={self.fingerprint})"

    __str__ = __repr__

    @property
    def fingerprint(self) -> str:
        """A short, non-reversible id of the key, for logs that must say which key."""
        return hashlib.sha256(b"gateway-mask-key-id\x00" + self.secret).hexdigest()[:12]

    def digest(self, domain: bytes, value: bytes) -> bytes:
        """HMAC-SHA256 of ``value``; ``domain`` keeps equal bytes of different types apart."""
        # hmac.digest: the one-shot C path (the same HMAC as hmac.new(...).digest()).
        return hmac.digest(self.secret, domain + b"\x00" + value, "sha256")

    def stream(self, domain: bytes, value: bytes, length: int) -> bytes:
        """``length`` pseudo-random bytes derived from ``value`` (HMAC in counter mode)."""
        seed = self.digest(domain, value)
        out = bytearray()
        counter = 0
        while len(out) < length:
            out += hmac.digest(self.secret, seed + counter.to_bytes(4, "big"), "sha256")
            counter += 1
        return bytes(out[:length])


@dataclass(frozen=True, slots=True)
class Method:
    """How to mask a value: the kind and its settings."""

    kind: MethodKind
    keep_last: int = 4
    replacement: str = "****"

    def __post_init__(self) -> None:
        if self.kind not in METHOD_KINDS:
            raise MaskingError(
                f"unknown masking method {self.kind!r}; expected one of {sorted(METHOD_KINDS)}"
            )
        if isinstance(self.keep_last, bool) or not isinstance(self.keep_last, int):
            raise MaskingError("keep_last must be an integer")
        if self.keep_last < 0:
            raise MaskingError(f"keep_last must be 0 or more, not {self.keep_last}")
        if not isinstance(self.replacement, str):
            raise MaskingError("replacement must be a string")


def _need_key(key: MaskKey | None, kind: str) -> MaskKey:
    if key is None:
        raise MaskingError(f"method hash on a {kind} needs a masking key and none is configured")
    return key


def _refuse(method: Method, kind: str) -> MaskingError:
    return MaskingError(f"method {method.kind} does not apply to a {kind}")


def hash_text(text: str, key: MaskKey) -> str:
    """Format-preserving keyed hash: same length, digits stay digits, letters keep case."""
    noise = key.stream(b"string", text.encode("utf-8", "surrogatepass"), len(text))
    if text.isascii():
        return "".join(map(str.__getitem__, map(_HASH_ROWS.__getitem__, text.encode()), noise))
    out = []
    for ch, n in zip(text, noise, strict=True):
        if ch in _DIGITS:
            out.append(_DIGITS[n % 10])
        elif ch in _LOWER:
            out.append(_LOWER[n % 26])
        elif ch in _UPPER:
            out.append(_UPPER[n % 26])
        else:
            out.append(ch)
    return "".join(out)


def partial_text(text: str, keep_last: int) -> str:
    """Mask every letter and digit before the last ``keep_last`` characters with ``*``.

    Separators (spaces, dashes, dots, ``@``) stay, so ``4111 1111 1111 1111`` becomes
    ``**** **** **** 1111`` and the shape stays recognisable to a reader.
    """
    cut = max(len(text) - keep_last, 0)
    head = text[:cut]
    if head.isascii():
        return head.translate(_PARTIAL_ASCII) + text[cut:]
    return "".join(_PARTIAL_MASK if ch.isalnum() else ch for ch in head) + text[cut:]


def mask_string(value: str, method: Method, key: MaskKey | None) -> str | None:
    """Mask a string (Avro ``string``, a JSON string or a detected piece of text)."""
    if method.kind == "redact":
        return method.replacement
    if method.kind == "hash":
        return hash_text(value, _need_key(key, "string"))
    if method.kind == "partial":
        return partial_text(value, method.keep_last)
    return None


def _signed(raw: bytes, bits: int) -> int:
    return int.from_bytes(raw[: bits // 8], "big", signed=True)


def mask_int(value: int, method: Method, key: MaskKey | None, bits: int = 64) -> int | None:
    """Mask an integer; a hash stays within a signed ``bits``-bit range (32 or 64)."""
    if method.kind == "redact":
        return 0
    if method.kind == "hash":
        raw = value.to_bytes((value.bit_length() + 8) // 8 or 1, "big", signed=True)
        return _signed(_need_key(key, "number").digest(b"int", raw), bits)
    if method.kind == "null":
        return None
    raise _refuse(method, "number")


def mask_float(value: float, method: Method, key: MaskKey | None) -> float | None:
    """Mask a float or double; a hash is a whole number below 2**24, exact in float32."""
    if method.kind == "redact":
        return 0.0
    if method.kind == "hash":
        digest = _need_key(key, "number").digest(b"float", repr(value).encode())
        return float(int.from_bytes(digest[:3], "big"))
    if method.kind == "null":
        return None
    raise _refuse(method, "number")


def mask_bool(value: bool, method: Method, key: MaskKey | None) -> bool | None:
    """Mask a boolean: redact and hash both give ``False``."""
    if method.kind in ("redact", "hash"):
        return False
    if method.kind == "null":
        return None
    raise _refuse(method, "boolean")


def mask_bytes(value: bytes, method: Method, key: MaskKey | None) -> bytes | None:
    """Mask variable-length bytes: redact gives ``b""``, hash the 32-byte digest."""
    if method.kind == "redact":
        return b""
    if method.kind == "hash":
        return _need_key(key, "bytes").digest(b"bytes", value)
    if method.kind == "null":
        return None
    raise _refuse(method, "bytes")


def mask_fixed(value: bytes, size: int, method: Method, key: MaskKey | None) -> bytes | None:
    """Mask fixed-size bytes, keeping the size: zeros, or keyed-hash bytes."""
    if method.kind == "redact":
        return bytes(size)
    if method.kind == "hash":
        return _need_key(key, "fixed").stream(b"fixed", value, size)
    if method.kind == "null":
        return None
    raise _refuse(method, "fixed")


def mask_enum(
    value: str, symbols: tuple[str, ...], method: Method, key: MaskKey | None
) -> str | None:
    """Mask an enum symbol: redact gives the first symbol, hash a keyed choice of symbol."""
    if method.kind == "redact":
        return symbols[0]
    if method.kind == "hash":
        digest = _need_key(key, "enum").digest(b"enum", value.encode())
        return symbols[int.from_bytes(digest[:8], "big") % len(symbols)]
    if method.kind == "null":
        return None
    raise _refuse(method, "enum")
