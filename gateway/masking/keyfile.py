"""The masking key file: made by ``gateway masking keygen``, loaded at start.

The file holds 32 random bytes as 64 hex digits and one newline, mode 0600. The key
keys the HMAC of the ``hash`` method: whoever holds it can test guesses against hashed
values, so it is a secret like the cluster credentials (never logged, never in an
event; a fingerprint names it where a log must say which key is in use).
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from gateway.errors import ConfigError
from gateway.masking import MaskingError
from gateway.masking.methods import MaskKey

KEY_BYTES = 32


def generate(out: Path) -> MaskKey:
    """Write a new key (mode 0600) to ``out``; FileExistsError rather than replace one
    (hashed values would change meaning, and joins across the change would break)."""
    secret = secrets.token_bytes(KEY_BYTES)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, secret.hex().encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return MaskKey(secret)


def load(path: Path) -> MaskKey:
    """The key in ``path``. ConfigError when it is missing, open to group or others,
    or not 64 or more hex digits; the message never quotes the file's content."""
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"masking.key_file {path}: mode {stat.S_IMODE(mode):04o} lets group or "
                f"others read it; run chmod 600 {path}"
            )
        text = path.read_text(encoding="ascii").strip()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"masking.key_file {path}: not hex text") from exc
    except OSError as exc:
        raise ConfigError(f"masking.key_file {path}: {exc.strerror}") from exc
    try:
        secret = bytes.fromhex(text)
    except ValueError as exc:
        raise ConfigError(f"masking.key_file {path}: not hex digits") from exc
    if len(secret) < KEY_BYTES:
        raise ConfigError(
            f"masking.key_file {path}: {len(secret)} bytes; the key needs {KEY_BYTES} or more"
        )
    try:
        return MaskKey(secret)
    except MaskingError as exc:
        raise ConfigError(f"masking.key_file {path}: {exc}") from exc
