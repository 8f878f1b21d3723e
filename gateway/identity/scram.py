"""SASL/SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka brokers offer them.

The exchange itself is ``scramp``'s: this module checks what Kafka does not support
before handing a message to it, looks the credential up, and turns every refusal into
:class:`~gateway.errors.AuthenticationFailed` with a fixed ``reason``:

- ``malformed``: not UTF-8, too long, out of order, or refused by scramp's parser;
- ``channel_binding``: a ``y`` or ``p=`` gs2 flag (Kafka speaks ``n,,`` only);
- ``delegation_token``: the ``tokenauth`` extension (Kafka's delegation tokens,
  which the gateway does not issue); ``unsupported_extension`` for any other one;
- ``unknown_user``: no such identity, or it has no credential for this hash size;
- ``bad_password``: the client proof does not match;
- ``disabled_account``: the identity exists, proved itself, and is disabled.

An unknown user runs the whole exchange against a made-up credential (a salt derived
from the name with a per-process key, so it is stable for a name and different across
names) and fails only at the end, so neither the first answer nor its timing tells
which names exist.

Credentials are stored as ``scram-sha-256$<iterations>$<salt>$<stored key>$<server
key>`` (standard base64): what a Kafka broker keeps in its metadata, never a password.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import scramp
from scramp.utils import ScramException, ServerError

from gateway.errors import AuthenticationFailed
from gateway.identity import Identity
from gateway.identity.mechanisms import AuthContext, Challenge, Exchange, Step, Verified

if TYPE_CHECKING:
    # Type-only: config validates credentials with parse_credential, and accounts
    # imports config, so a runtime import here would be circular.
    from gateway.config import UserConfig
    from gateway.identity.accounts import AccountStore
    from gateway.identity.guard import AuthGuard

ScramName = Literal["SCRAM-SHA-256", "SCRAM-SHA-512"]

DEFAULT_ITERATIONS = 4096  # Kafka's default, and the least RFC 7677 recommends
MIN_ITERATIONS = 4096
MAX_ITERATIONS = 10_000_000  # scramp's bound; a larger count only burns the client's CPU
# client-first is "n,," + n=<name, escaped: at most 3 x 255> + r=<nonce>; client-final
# is c=biws,r=<both nonces>,p=<proof, 88 characters for SHA-512>. Real clients send
# well under 300 bytes.
MAX_MESSAGE = 2048
_KINDS: dict[str, tuple[str, int]] = {
    "SCRAM-SHA-256": ("scram-sha-256", hashlib.sha256().digest_size),
    "SCRAM-SHA-512": ("scram-sha-512", hashlib.sha512().digest_size),
}
_SALT_BYTES = 16


@dataclass(frozen=True, slots=True)
class ScramCredential:
    """What the server keeps for one user and one hash size (RFC 5802 section 3)."""

    mechanism: ScramName
    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def format_credential(credential: ScramCredential) -> str:
    """The stored form, ``scram-sha-256$<iterations>$<salt>$<stored key>$<server key>``."""
    prefix, _ = _KINDS[credential.mechanism]
    return "$".join(
        (
            prefix,
            str(credential.iterations),
            _b64(credential.salt),
            _b64(credential.stored_key),
            _b64(credential.server_key),
        )
    )


def parse_credential(stored: str) -> ScramCredential:
    """Read the stored form; ValueError says what is wrong (never echoing key material)."""
    parts = stored.split("$")
    if len(parts) != 5:
        raise ValueError("a SCRAM credential has five '$'-separated parts")
    prefix, iterations_text, salt_text, stored_text, server_text = parts
    names = {p: name for name, (p, _) in _KINDS.items()}
    if prefix not in names:
        raise ValueError("a SCRAM credential starts with scram-sha-256 or scram-sha-512")
    mechanism: ScramName = "SCRAM-SHA-256" if names[prefix] == "SCRAM-SHA-256" else "SCRAM-SHA-512"
    size = _KINDS[mechanism][1]
    if not iterations_text.isdigit() or iterations_text.startswith("0"):
        raise ValueError("the iteration count is not a number")
    iterations = int(iterations_text)
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"the iteration count must be {MIN_ITERATIONS}..{MAX_ITERATIONS}")
    try:
        salt, stored_key, server_key = (
            base64.b64decode(t, validate=True) for t in (salt_text, stored_text, server_text)
        )
    except (binascii.Error, ValueError):
        raise ValueError("salt and keys must be standard base64") from None
    if len(salt) < 12:  # scramp's (and NIST's) minimum
        raise ValueError("the salt must be at least 12 bytes")
    if len(stored_key) != size or len(server_key) != size:
        raise ValueError(f"{mechanism} keys are {size} bytes each")
    return ScramCredential(mechanism, iterations, salt, stored_key, server_key)


def make_credential(
    mechanism: ScramName, password: str, iterations: int = DEFAULT_ITERATIONS
) -> ScramCredential:
    """Salt and hash ``password`` for ``mechanism`` (a fresh random salt each time)."""
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"the iteration count must be {MIN_ITERATIONS}..{MAX_ITERATIONS}")
    salt, stored_key, server_key, count = scramp.ScramMechanism(mechanism).make_auth_info(
        password, iteration_count=iterations, salt=secrets.token_bytes(_SALT_BYTES)
    )
    return ScramCredential(mechanism, count, salt, stored_key, server_key)


def _client_first_fields(message: str) -> tuple[str, list[str]]:
    """Split client-first into (user, extension names) after the Kafka-specific checks
    scramp does not make; scramp still parses the whole message afterwards."""
    if message.startswith(("y,", "p=")):
        raise AuthenticationFailed(
            "SCRAM channel binding requested; Kafka SCRAM has none", reason="channel_binding"
        )
    if not message.startswith("n,"):
        raise AuthenticationFailed("SCRAM client-first without a gs2 header", reason="malformed")
    header_end = message.find(",", 2)
    if header_end < 0:
        raise AuthenticationFailed("SCRAM client-first without a gs2 header", reason="malformed")
    attributes = message[header_end + 1 :].split(",")
    if (
        len(attributes) < 2
        or not attributes[0].startswith("n=")
        or not attributes[1].startswith("r=")
    ):
        raise AuthenticationFailed(
            "SCRAM client-first is not n=<user>,r=<nonce>", reason="malformed"
        )
    extensions = [a.partition("=")[0] for a in attributes[2:]]
    return attributes[0][2:], extensions


def _reason(exc: ScramException) -> str:
    if exc.server_error is ServerError.INVALID_PROOF:
        return "bad_password"
    if exc.server_error in (
        ServerError.CHANNEL_BINDINGS_DONT_MATCH,
        ServerError.CHANNEL_BINDING_NOT_SUPPORTED,
        ServerError.SERVER_DOES_SUPPORT_CHANNEL_BINDING,
        ServerError.UNSUPPORTED_CHANNEL_BINDING_TYPE,
    ):
        return "channel_binding"
    if exc.server_error is ServerError.EXTENSIONS_NOT_SUPPORTED:
        return "unsupported_extension"
    return "malformed"


class ScramMechanism:
    """One SCRAM hash size offered to clients, checked against the account store."""

    def __init__(self, name: ScramName, accounts: AccountStore, guard: AuthGuard) -> None:
        if name not in _KINDS:
            raise ValueError(f"not a SCRAM mechanism the gateway offers: {name}")
        self.name: str = name
        self.kind: ScramName = name
        self.accounts = accounts
        self.guard = guard
        self._scramp = scramp.ScramMechanism(name)
        self._field = "scram_sha_256" if name == "SCRAM-SHA-256" else "scram_sha_512"
        # The made-up credential for unknown users: fixed for this process, never
        # matching any password (its keys are random, not derived from one).
        self._dummy_key = secrets.token_bytes(32)
        size = _KINDS[name][1]
        self._dummy_stored = secrets.token_bytes(size)
        self._dummy_server = secrets.token_bytes(size)

    def start(self, context: AuthContext) -> Exchange:
        return _ScramExchange(self, context)

    def credential(self, account: UserConfig | None) -> ScramCredential | None:
        """The account's credential for this hash size; None when there is none."""
        stored: str | None = getattr(account, self._field, None)
        return parse_credential(stored) if stored is not None else None

    def dummy(self, user: str) -> ScramCredential:
        salt = hmac.digest(self._dummy_key, user.encode("utf-8"), "sha256")[:_SALT_BYTES]
        return ScramCredential(
            self.kind, DEFAULT_ITERATIONS, salt, self._dummy_stored, self._dummy_server
        )

    def server(self, credential: ScramCredential) -> scramp.core.ScramServer:
        def auth_fn(_user: str) -> tuple[bytes, bytes, bytes, int]:
            return (
                credential.salt,
                credential.stored_key,
                credential.server_key,
                credential.iterations,
            )

        return self._scramp.make_server(auth_fn)


class _ScramExchange:
    """client-first -> server-first, client-final -> server-final and the identity."""

    def __init__(self, mechanism: ScramMechanism, context: AuthContext) -> None:
        self._mechanism = mechanism
        self._context = context
        self._server: scramp.core.ScramServer | None = None
        self._user = ""
        self._known = False
        self._done = False

    async def step(self, token: bytes) -> Step:
        if self._done:
            raise AuthenticationFailed("SCRAM exchange already finished", reason="malformed")
        try:
            message = _decode(token)
            if self._server is None:
                return Challenge(self._first(message).encode("utf-8"))
            return await self._final(message)
        except ScramException as exc:
            self._done = True
            raise AuthenticationFailed(
                f"SCRAM exchange for {self._user!r} refused: {exc}",
                reason=_reason(exc),
                attempted=self._user or None,
            ) from None
        except AuthenticationFailed as exc:
            # A refused exchange never continues, whatever the caller does next.
            self._done = True
            if exc.attempted is None:
                exc.attempted = self._user or None
            raise

    def _first(self, message: str) -> str:
        user, extensions = _client_first_fields(message)
        if "tokenauth" in extensions:
            raise AuthenticationFailed(
                "SCRAM delegation-token login (tokenauth); the gateway issues no delegation tokens",
                reason="delegation_token",
            )
        if extensions:
            raise AuthenticationFailed(
                f"SCRAM extensions not supported: {', '.join(sorted(set(extensions)))[:200]}",
                reason="unsupported_extension",
            )
        # The escaped name as sent; scramp unescapes and saslpreps it on its own, but
        # the account store is keyed by the configured name as Kafka's is.
        self._user = user.replace("=2C", ",").replace("=3D", "=")
        account = self._mechanism.accounts.get(self._user)
        credential = self._mechanism.credential(account)
        self._known = credential is not None
        server = self._mechanism.server(credential or self._mechanism.dummy(self._user))
        server.set_client_first(message)
        self._server = server
        first: str = server.get_server_first()
        return first

    async def _final(self, message: str) -> Step:
        server = self._server
        assert server is not None
        self._done = True
        # The proof check is a few HMACs: small, but it is CPU spent on the caller's
        # behalf, so it takes its turn in the caller's share of the workers.
        try:
            await self._mechanism.guard.run(self._context.address, server.set_client_final, message)
        except ScramException as exc:
            if not self._known:
                raise AuthenticationFailed(
                    f"no {self._mechanism.name} credential for {self._user!r}",
                    reason="unknown_user",
                ) from None
            raise AuthenticationFailed(
                f"SCRAM exchange for {self._user!r} refused: {exc}", reason=_reason(exc)
            ) from None
        if not self._known:
            # Fail closed even if a proof ever matched the made-up keys.
            raise AuthenticationFailed(
                f"no {self._mechanism.name} credential for {self._user!r}", reason="unknown_user"
            )
        account = self._mechanism.accounts.get(self._user)
        if account is None:
            raise AuthenticationFailed(
                f"{self._user!r} was removed during its SCRAM exchange", reason="unknown_user"
            )
        if account.disabled:
            raise AuthenticationFailed(f"{self._user!r} is disabled", reason="disabled_account")
        final: str = server.get_server_final()
        return Verified(
            Identity(
                principal=self._user, mechanism=self._mechanism.name, groups=tuple(account.groups)
            ),
            final=final.encode("utf-8"),
        )


def _decode(token: bytes) -> str:
    if len(token) > MAX_MESSAGE:
        raise AuthenticationFailed(
            f"SCRAM message of {len(token)} bytes (at most {MAX_MESSAGE})", reason="malformed"
        )
    if not token:
        raise AuthenticationFailed("empty SCRAM message", reason="malformed")
    try:
        return token.decode("utf-8")
    except UnicodeDecodeError:
        raise AuthenticationFailed("SCRAM message is not UTF-8", reason="malformed") from None
