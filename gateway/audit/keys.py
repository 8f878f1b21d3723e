"""The instance's Ed25519 signing key: made by ``gateway audit keygen``, loaded at start.

The key id of a public key is the SHA-256 (hex) of its DER SubjectPublicKeyInfo, which
an auditor can compute from the published PEM with
``openssl pkey -pubin -in audit.pub -outform DER | sha256sum``. Checkpoints carry the key
id and the raw 32-byte public key (base64). This module reads and writes key files only;
the private key never leaves it except as the object that signs.
"""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.audit.canonical import sha256_hex
from gateway.errors import ConfigError


def key_id(public: Ed25519PublicKey) -> str:
    """SHA-256 hex of the DER SubjectPublicKeyInfo of ``public``."""
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return sha256_hex(der)


def public_pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def raw_public_b64(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def public_from_raw_b64(text: str) -> Ed25519PublicKey:
    """The public key embedded in a checkpoint; ValueError if it is not one."""
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))


def load_public_pem(data: bytes) -> Ed25519PublicKey:
    """A PEM public key given to ``verify``; ValueError if it is not Ed25519."""
    public = serialization.load_pem_public_key(data)
    if not isinstance(public, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return public


def sign(private: Ed25519PrivateKey, data: bytes) -> str:
    return base64.b64encode(private.sign(data)).decode("ascii")


def signature_ok(public: Ed25519PublicKey, signature_b64: str, data: bytes) -> bool:
    try:
        public.verify(base64.b64decode(signature_b64, validate=True), data)
    except (InvalidSignature, ValueError):
        return False
    return True


def generate(out: Path) -> Ed25519PrivateKey:
    """Write a new private key (PKCS#8 PEM, mode 0600) to ``out``. Raises
    FileExistsError rather than replace a key: checkpoints signed with it would no
    longer verify against the published public key."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # O_EXCL: refuse to overwrite, and the mode is set at creation (no window where
    # the key is readable by others).
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask may not narrow it further, but never widen it
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    return private


def load_private(path: Path) -> Ed25519PrivateKey:
    """The signing key in ``path``. Raises ConfigError when the file is missing, is
    readable or writable by group or others, or is not an Ed25519 private key."""
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"audit.key_file {path}: mode {stat.S_IMODE(mode):04o} lets group or others "
                f"read it; run chmod 600 {path}"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"audit.key_file {path}: {exc.strerror}") from exc
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"audit.key_file {path}: not an unencrypted PEM private key") from exc
    if not isinstance(private, Ed25519PrivateKey):
        raise ConfigError(f"audit.key_file {path}: not an Ed25519 key")
    return private
