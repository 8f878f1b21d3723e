"""Audit log test helpers: write a real log with the chain writer, and tamper with it
the way someone editing the files would (optionally rebuilding hashes and signatures)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit import chain, keys, segments
from gateway.audit.canonical import encode
from gateway.audit.writer import ChainWriter, WriterSettings

INSTANCE = "gw1"


def event(n: int) -> dict[str, Any]:
    return {"v": 1, "type": "request", "principal": "alice", "api": "Produce", "n": n}


def settings(directory: Path, **overrides: Any) -> WriterSettings:
    values: dict[str, Any] = {
        "dir": directory,
        "instance": INSTANCE,
        "checkpoint_every_events": 5,
        "segment_max_bytes": 1500,
    }
    values.update(overrides)
    return WriterSettings(**values)


def write_log(
    directory: Path, private: Ed25519PrivateKey, events: int = 40, **overrides: Any
) -> ChainWriter:
    """A closed log of ``events`` events written in batches of 1 to 3."""
    writer = ChainWriter(settings(directory, **overrides), private)
    writer.open()
    n = 0
    while n < events:
        size = min(1 + n % 3, events - n)
        writer.write([event(i) for i in range(n, n + size)])
        n += size
    writer.close()
    return writer


def files(directory: Path) -> list[Path]:
    return [s.path for s in segments.find([directory])]


def read_lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def rewrite(
    directory: Path,
    change: Callable[[list[list[dict[str, Any]]]], None],
    resign: Ed25519PrivateKey | None = None,
) -> None:
    """Apply ``change`` to the parsed lines of every segment, then rebuild every hash and
    ``prev`` (and, with ``resign``, every checkpoint's signature with that key): a
    forger who knows the format but not the instance's key."""
    paths = files(directory)
    parsed = [[json.loads(raw) for raw in read_lines(path)] for path in paths]
    change(parsed)
    prev = chain.GENESIS
    for lines in parsed:
        for line in lines:
            line["prev"] = prev
            if line.get("type") == chain.CHECKPOINT:
                line["last_hash"] = prev
                if resign is not None:
                    public = resign.public_key()
                    line["key_id"] = keys.key_id(public)
                    line["public_key"] = keys.raw_public_b64(public)
                    line["signature"] = keys.sign(resign, chain.signed_part(line))
            line["hash"] = chain.line_hash(line)
            prev = line["hash"]
    for path, lines in zip(paths, parsed, strict=True):
        write_lines(path, [encode(line) for line in lines])
