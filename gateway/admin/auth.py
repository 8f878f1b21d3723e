"""Who is calling the admin API, and which roles that grants.

A caller proves itself with ``Authorization: Bearer <token>``: a static API token
whose SHA-256 is configured in ``admin.tokens``, or (when ``admin.accept_oauthbearer``
and ``identity.oauthbearer`` are set) a JWT checked by the same validator as
SASL/OAUTHBEARER. Roles come from the caller's groups through ``admin.roles``.

Nothing here touches HTTP: :meth:`AdminAuth.authenticate` takes the header's value
and the caller's address and answers an :class:`AdminCaller` or raises
:class:`AdminDenied`. Neither the token nor any part of it is ever kept, logged or
put in an error.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from gateway.config import AdminConfig, AdminRole
from gateway.errors import AuthenticationFailed, GatewayError
from gateway.identity import Identity

# Validates a JWT for a caller at an address; raises AuthenticationFailed.
JwtCheck = Callable[[str, str], Awaitable[Identity]]

ROLES: tuple[AdminRole, ...] = ("operator", "approver", "auditor", "admin")

# Larger than any static token or JWT the gateway accepts (JWTs over 8 KiB are refused
# by the validator); refused before hashing or parsing anything.
MAX_TOKEN_CHARS = 8192


@dataclass(frozen=True, slots=True)
class AdminCaller:
    """An authenticated admin API caller."""

    principal: str
    groups: tuple[str, ...]
    roles: frozenset[AdminRole]
    via: Literal["static_token", "jwt"]
    # When the credential stops being valid (a JWT's exp), seconds since the epoch.
    expires_at: float | None = None


class AdminDenied(Exception):
    """The request is refused: ``status`` 401 (no or bad credentials), 403 (missing
    role) or 429 (too many failures from the address). ``reason`` is a fixed word for
    logs; ``message`` is safe to show the caller."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def roles_for(groups: Iterable[str], config: AdminConfig) -> frozenset[AdminRole]:
    """The roles any of ``groups`` grants."""
    held = set(groups)
    return frozenset(role for role, granting in config.roles.items() if held & set(granting))


class StaticTokens:
    """The configured API tokens, known only by their SHA-256."""

    def __init__(self, config: AdminConfig) -> None:
        self._tokens = [
            (bytes.fromhex(t.token_sha256), t.name, tuple(t.groups)) for t in config.tokens
        ]

    def match(self, token: str) -> tuple[str, tuple[str, ...]] | None:
        """The name and groups of the configured token equal to ``token``, or None.

        Every configured hash is compared, each in constant time, so the time taken
        does not tell which (or whether a) token matched.
        """
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found = None
        for expected, name, groups in self._tokens:
            if hmac.compare_digest(expected, digest) and found is None:
                found = (name, groups)
        return found


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header value."""
    if not authorization:
        raise AdminDenied(401, "no_token", "a bearer token is required")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AdminDenied(401, "not_bearer", "the Authorization header must be 'Bearer <token>'")
    if len(token) > MAX_TOKEN_CHARS:
        raise AdminDenied(401, "too_long", "invalid token")
    return token


def _looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


class AdminAuth:
    """Turns a request's bearer token into an :class:`AdminCaller`."""

    def __init__(self, config: AdminConfig, jwt: JwtCheck | None = None) -> None:
        self.config = config
        self.tokens = StaticTokens(config)
        self.jwt = jwt if config.accept_oauthbearer else None

    async def authenticate(self, authorization: str | None, address: str) -> AdminCaller:
        token = bearer_token(authorization)
        static = self.tokens.match(token)
        if static is not None:
            name, groups = static
            return AdminCaller(name, groups, roles_for(groups, self.config), "static_token")
        if self.jwt is not None and _looks_like_jwt(token):
            try:
                identity = await self.jwt(token, address)
            except AuthenticationFailed as exc:
                raise AdminDenied(401, f"jwt_{exc.reason}", "invalid token") from None
            except GatewayError:
                # The token could not be checked (e.g. no keys from the provider yet):
                # refused like a bad one, never let through.
                raise AdminDenied(401, "jwt_unverifiable", "invalid token") from None
            return AdminCaller(
                identity.principal,
                identity.groups,
                roles_for(identity.groups, self.config),
                "jwt",
                identity.expires_at,
            )
        raise AdminDenied(401, "unknown_token", "invalid token")


def authorize(caller: AdminCaller, allowed: frozenset[AdminRole] | None) -> None:
    """Raise 403 unless ``caller`` holds one of ``allowed`` (None: any caller)."""
    if allowed is not None and not caller.roles & allowed:
        raise AdminDenied(
            403,
            "missing_role",
            "this endpoint needs one of the roles " + ", ".join(sorted(allowed)),
        )
