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
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.masking import MaskingError

MethodKind = Literal["redact", "hash", "partial", "null"]
METHOD_KINDS: frozenset[str] = frozenset({"redact", "hash", "partial", "null"})

# Shortest key accepted: HMAC-SHA256 with a key under 128 bits invites brute force.
MIN_KEY_BYTES = 16

_DIGITS = string.digits
_LOWER = string.ascii_lowercase
_UPPER = string.ascii_uppercase
_PARTIAL_MASK = "*"


def _table(pick: Callable[[int], int]) -> bytes:
    return bytes(pick(n) for n in range(256))


def _ascii_class(byte: int) -> str | None:
    ch = chr(byte)
    for alphabet in (_DIGITS, _LOWER, _UPPER):
        if ch in alphabet:
            return alphabet
    return None


# Hashing ASCII text works on whole byte strings, so its cost hardly grows with length.
# Each character becomes ``base + offset``: the base is ``0``, ``a`` or ``A`` for a
# digit or letter (any other character is its own base, with offset 0), and the offset
# is the noise byte modulo 10 or 26. Bases and offsets are read through translation
# tables, the offsets picked by 0xFF/0x00 masks, and the sum taken as one big integer:
# no byte exceeds ``z`` + 0, so nothing carries from one character into the next.
_BASE = _table(lambda b: ord((_ascii_class(b) or chr(b))[0]) if b < 128 else b)
_IS_DIGIT = _table(lambda b: 0xFF if _ascii_class(b) == _DIGITS else 0)
_IS_LETTER = _table(lambda b: 0xFF if _ascii_class(b) in (_LOWER, _UPPER) else 0)
_MOD_10 = _table(lambda n: n % 10)
_MOD_26 = _table(lambda n: n % 26)
# ASCII letters and digits to ``*`` (what str.isalnum() is true for in ASCII).
_PARTIAL_ASCII = str.maketrans({c: _PARTIAL_MASK for c in _DIGITS + _LOWER + _UPPER})


@dataclass(frozen=True, slots=True)
class MaskKey:
    """The gateway-held HMAC key. Its repr shows a fingerprint, never the key."""

    secret: bytes = field(repr=False)
    # HMAC's inner and outer hashes with the padded key already absorbed (RFC 2104):
    # each digest then copies them instead of keying SHA-256 twice again.
    _inner: Any = field(init=False, repr=False, compare=False)
    _outer: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes):
            raise MaskingError("masking key must be bytes")
        if len(self.secret) < MIN_KEY_BYTES:
            raise MaskingError(f"masking key must be at least {MIN_KEY_BYTES} bytes")
        block = hashlib.sha256().block_size
        padded = self.secret
        if len(padded) > block:
            padded = hashlib.sha256(padded).digest()
        padded = padded.ljust(block, b"\x00")
        object.__setattr__(self, "_inner", hashlib.sha256(bytes(b ^ 0x36 for b in padded)))
        object.__setattr__(self, "_outer", hashlib.sha256(bytes(b ^ 0x5C for b in padded)))

    def __repr__(self) -> str:
        return f"MaskKey(fingerprint={self.fingerprint})"

    __str__ = __repr__

    @property
    def fingerprint(self) -> str:
        """A short, non-reversible id of the key, for logs that must say which key."""
        return hashlib.sha256(b"gateway-mask-key-id\x00" + self.secret).hexdigest()[:12]

    def digest(self, domain: bytes, value: bytes) -> bytes:
        """HMAC-SHA256 of ``value``; ``domain`` keeps equal bytes of different types apart."""
        return self._hmac(domain + b"\x00" + value)

    def _hmac(self, message: bytes) -> bytes:
        # The same bytes as hmac.digest(secret, message, "sha256"), in a third the time.
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()  # type: ignore[no-any-return]

    def stream(self, domain: bytes, value: bytes, length: int) -> bytes:
        """``length`` pseudo-random bytes derived from ``value`` (HMAC in counter mode)."""
        seed = self.digest(domain, value)
        if length <= 32:
            return self._hmac(seed + b"\x00\x00\x00\x00")[:length]
        out = bytearray()
        counter = 0
        while len(out) < length:
            out += self._hmac(seed + counter.to_bytes(4, "big"))
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
        raw = text.encode()
        size = len(raw)
        big = int.from_bytes
        offsets = (big(raw.translate(_IS_DIGIT)) & big(noise.translate(_MOD_10))) | (
            big(raw.translate(_IS_LETTER)) & big(noise.translate(_MOD_26))
        )
        return (big(raw.translate(_BASE)) + offsets).to_bytes(size).decode()
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


def string_masker(method: Method, key: MaskKey | None) -> Callable[[str], str]:
    """:func:`mask_string` with its method chosen once, for a method that keeps a
    string a string (not ``null``)."""
    if method.kind == "redact":
        replacement = method.replacement
        return lambda value: replacement
    if method.kind == "hash":
        needed = _need_key(key, "string")
        return lambda value: hash_text(value, needed)
    if method.kind == "partial":
        keep_last = method.keep_last
        return lambda value: partial_text(value, keep_last)
    raise _refuse(method, "string")


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
