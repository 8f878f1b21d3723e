"""Salted password hashes for SASL/PLAIN users (PBKDF2-HMAC-SHA256).

The config stores ``pbkdf2_sha256$<iterations>$<salt>$<hash>`` (base64 parts), never
a password. Verification runs in constant time with respect to the stored hash.
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
