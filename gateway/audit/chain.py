"""The hash chain and signed checkpoints of one gateway instance's audit log (pure).

Every line of the log is a JSON object (canonical encoding, :mod:`.canonical`) made of
an event plus three fields:

- ``seq``: the line's number in this instance's chain, 0 for the first, +1 per line;
- ``prev``: the ``hash`` of the line before (64 zeros for line 0);
- ``hash``: SHA-256 (hex) of the canonical encoding of the line without ``hash``.

A checkpoint is a line too (``type: "checkpoint"``) with ``v``, ``instance``,
``first_seq`` (the line after the previous checkpoint, or 0), ``last_seq`` (the line
before it, so ``last_seq == seq - 1``), ``last_hash`` (the hash of ``last_seq``, equal
to ``prev``), ``time``, ``key_id`` (see :mod:`.keys`), ``public_key`` (raw Ed25519 key,
base64) and ``signature``: Ed25519 (base64) over the canonical encoding of the
checkpoint line without ``signature`` and ``hash`` (``seq`` and ``prev`` included).
Its ``hash`` is then computed as for any line, signature included.

A ``recovered`` line (``v``, ``time``, ``tears``: ``[{"segment": file name, "offset",
"torn_bytes", "torn_sha256"}]``) opens the segment written after one that ended in a
torn line (a crash mid-write); the torn bytes stay where they are. It lists every
segment since the last whole line that ends torn (more than one only when a crash tore
the very first line of a new segment too).

This module computes and checks; it reads no files and keeps no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit import keys
from gateway.audit.canonical import encode, sha256_hex

GENESIS = "0" * 64
CHAIN_FIELDS = ("seq", "prev", "hash")
CHECKPOINT = "checkpoint"
RECOVERED = "recovered"


def line_hash(line: Mapping[str, Any]) -> str:
    """The hash ``line`` should carry: over everything but its ``hash`` field."""
    return sha256_hex(encode({k: v for k, v in line.items() if k != "hash"}))


def seal(event: Mapping[str, Any], seq: int, prev: str) -> dict[str, Any]:
    """``event`` as line ``seq`` of the chain after the line hashed ``prev``. The
    event's own ``seq``, ``prev`` or ``hash`` (there should be none) are replaced."""
    line = {k: v for k, v in event.items() if k not in CHAIN_FIELDS}
    line["seq"] = seq
    line["prev"] = prev
    line["hash"] = line_hash(line)
    return line


def signed_part(checkpoint: Mapping[str, Any]) -> bytes:
    """The bytes a checkpoint's signature covers."""
    return encode({k: v for k, v in checkpoint.items() if k not in ("signature", "hash")})


def checkpoint(
    private: Ed25519PrivateKey,
    *,
    instance: str,
    first_seq: int,
    seq: int,
    prev: str,
    time: float,
) -> dict[str, Any]:
    """The signed checkpoint line ``seq`` sealing lines ``first_seq`` .. ``seq - 1``."""
    public = private.public_key()
    line: dict[str, Any] = {
        "v": 1,
        "type": CHECKPOINT,
        "instance": instance,
        "first_seq": first_seq,
        "last_seq": seq - 1,
        "last_hash": prev,
        "time": time,
        "key_id": keys.key_id(public),
        "public_key": keys.raw_public_b64(public),
        "seq": seq,
        "prev": prev,
    }
    line["signature"] = keys.sign(private, signed_part(line))
    line["hash"] = line_hash(line)
    return line


def tear(segment: str, offset: int, torn: bytes) -> dict[str, Any]:
    """How a ``recovered`` line names one torn line."""
    return {
        "segment": segment,
        "offset": offset,
        "torn_bytes": len(torn),
        "torn_sha256": sha256_hex(torn),
    }


def recovered(tears: list[dict[str, Any]], time: float) -> dict[str, Any]:
    """The event that seals ``tears`` (made by :func:`tear`; not yet chained)."""
    return {"v": 1, "type": RECOVERED, "time": time, "tears": tears}
