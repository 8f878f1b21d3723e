"""SASL/PLAIN (RFC 4616) against the users in the gateway's config."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from gateway.config import UserConfig
from gateway.errors import AuthenticationFailed
from gateway.identity import Identity
from gateway.identity.passwords import verify_password

MECHANISM = "PLAIN"
_MAX_TOKEN = 4096
# Compared against when the user is unknown, so that timing does not reveal which
# usernames exist.
_DUMMY_HASH = (
    "pbkdf2_sha256$200000$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
)


def parse_token(token: bytes) -> tuple[str, str, str]:
    """Split ``authzid NUL authcid NUL passwd``; raises AuthenticationFailed."""
    if len(token) > _MAX_TOKEN:
        raise AuthenticationFailed("SASL/PLAIN token too long")
    parts = token.split(b"\x00")
    if len(parts) != 3:
        raise AuthenticationFailed("SASL/PLAIN token is not authzid NUL user NUL password")
    try:
        authzid, user, password = (p.decode("utf-8") for p in parts)
    except UnicodeDecodeError:
        raise AuthenticationFailed("SASL/PLAIN token is not UTF-8") from None
    if not user:
        raise AuthenticationFailed("SASL/PLAIN token has an empty username")
    if authzid and authzid != user:
        raise AuthenticationFailed("SASL/PLAIN authorization id must be empty or the username")
    return authzid, user, password


class PlainAuthenticator:
    """Checks SASL/PLAIN tokens against salted hashes."""

    def __init__(self, users: Iterable[UserConfig]) -> None:
        self._hashes = {u.name: u.password_hash for u in users}

    async def authenticate(self, token: bytes) -> Identity:
        _, user, password = parse_token(token)
        stored = self._hashes.get(user)
        # PBKDF2 takes tens of milliseconds by design: keep it off the event loop.
        ok = await asyncio.to_thread(verify_password, password, stored or _DUMMY_HASH)
        if stored is None or not ok:
            raise AuthenticationFailed(f"authentication failed for user {user!r}")
        return Identity(principal=user, mechanism=MECHANISM)
