"""Salted password hashes for SASL/PLAIN users (PBKDF2-HMAC-SHA256), and the hash
of a static admin API token.

The config stores ``pbkdf2_sha256$<iterations>$<salt>$<hash>`` (base64 parts), never
a password. Verification runs in constant time with respect to the stored hash.
An admin token is random (it needs no salt or stretching): the config keeps the
lowercase hex SHA-256 of its UTF-8 bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

ALGORITHM = "pbkdf2_sha256"
DEFAULT_ITERATIONS = 200_000


def hash_password(password: str, iterations: int = DEFAULT_ITERATIONS) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return "$".join(
        (
            ALGORITHM,
            str(iterations),
            base64.b64encode(salt).decode(),
            base64.b64encode(digest).decode(),
        )
    )


def new_admin_token() -> str:
    """A fresh random bearer token for the admin API (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def admin_token_sha256(token: str) -> str:
    """What ``admin.tokens[].token_sha256`` holds for ``token``."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches the stored hash; False for any malformed hash."""
    try:
        algorithm, iterations, salt, digest = stored.split("$")
        if algorithm != ALGORITHM:
            return False
        expected = base64.b64decode(digest, validate=True)
        actual = hashlib.pbkdf2_hmac(
            "sha256",
            password.encode("utf-8"),
            base64.b64decode(salt, validate=True),
            int(iterations),
        )
    except (ValueError, OverflowError):
        return False
    return hmac.compare_digest(expected, actual)
