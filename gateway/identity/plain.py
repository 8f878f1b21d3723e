"""SASL/PLAIN (RFC 4616) against the salted password hashes of the configured identities."""

from __future__ import annotations

from gateway.errors import AuthenticationFailed
from gateway.identity import Identity
from gateway.identity.accounts import AccountStore
from gateway.identity.guard import AuthGuard
from gateway.identity.mechanisms import AuthContext, Exchange, Step, Verified
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
        raise AuthenticationFailed("SASL/PLAIN token too long", reason="malformed")
    parts = token.split(b"\x00")
    if len(parts) != 3:
        raise AuthenticationFailed(
            "SASL/PLAIN token is not authzid NUL user NUL password", reason="malformed"
        )
    try:
        authzid, user, password = (p.decode("utf-8") for p in parts)
    except UnicodeDecodeError:
        raise AuthenticationFailed("SASL/PLAIN token is not UTF-8", reason="malformed") from None
    if not user:
        raise AuthenticationFailed("SASL/PLAIN token has an empty username", reason="malformed")
    if authzid and authzid != user:
        raise AuthenticationFailed(
            "SASL/PLAIN authorization id must be empty or the username", reason="malformed"
        )
    return authzid, user, password


class PlainMechanism:
    """Checks SASL/PLAIN tokens against PBKDF2 hashes, off the event loop."""

    name = MECHANISM

    def __init__(self, accounts: AccountStore, guard: AuthGuard) -> None:
        self._accounts = accounts
        self._guard = guard

    def start(self, context: AuthContext) -> Exchange:
        return _PlainExchange(self, context)

    async def verify(self, token: bytes, context: AuthContext) -> Identity:
        _, user, password = parse_token(token)
        account = self._accounts.get(user)
        stored = account.password_hash if account is not None else None
        # PBKDF2 takes tens of milliseconds by design: the guard keeps it off the loop
        # and gives each source address only its share of the workers.
        ok = await self._guard.run(
            context.address, verify_password, password, stored or _DUMMY_HASH
        )
        if account is None or stored is None:
            raise AuthenticationFailed(
                f"no PLAIN credential for {user!r}", reason="unknown_user", attempted=user
            )
        if not ok:
            raise AuthenticationFailed(
                f"wrong password for {user!r}", reason="bad_password", attempted=user
            )
        if account.disabled:
            raise AuthenticationFailed(
                f"{user!r} is disabled", reason="disabled_account", attempted=user
            )
        return Identity(principal=user, mechanism=MECHANISM, groups=tuple(account.groups))


class _PlainExchange:
    def __init__(self, mechanism: PlainMechanism, context: AuthContext) -> None:
        self._mechanism = mechanism
        self._context = context

    async def step(self, token: bytes) -> Step:
        return Verified(await self._mechanism.verify(token, self._context))
