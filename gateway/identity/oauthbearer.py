"""SASL/OAUTHBEARER (RFC 7628, KIP-255): clients prove who they are with a JSON Web
Token from the identity provider.

- :class:`JwksSource` holds the provider's signing keys, read from a JWKS URL or file,
  refreshed on a schedule and, for a token naming an unknown ``kid``, at most once per
  ``jwks_min_refetch_seconds`` however many such tokens arrive.
- :class:`JwtValidator` turns a token into an :class:`~gateway.identity.Identity`. The
  accepted algorithms come from the config, never from the token; keys come only from
  the configured source (``jku``, ``x5u``, ``jwk`` and ``x5c`` headers are ignored);
  a key's type (and curve) must fit the algorithm, RSA keys have at least 2048 bits;
  ``iss``, ``aud`` and ``exp`` are required. Signatures are checked on the guard's pool.
- :class:`OAuthBearerMechanism` parses the client's initial response (``n,a=..,
  \\x01auth=Bearer <token>\\x01key=value\\x01\\x01``), bounded, and validates its token.

Every refusal is an :class:`~gateway.errors.AuthenticationFailed` whose ``reason`` is a
fixed word (``too_large``, ``jwe``, ``malformed``, ``alg_not_allowed``,
``unknown_kid``, ``key_mismatch``, ``bad_key``, ``bad_signature``, ``missing_exp``,
``expired``, ``not_yet_valid``, ``bad_issuer``, ``bad_audience``, ``bad_principal``,
``bad_groups``, ``disabled_account``, ``authzid_mismatch``). No message holds the token,
its signature or a key; SASL extensions are parsed and checked, then dropped.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import os
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
from jose import jwk, jws
from jose.exceptions import JOSEError

from gateway import metrics
from gateway.config import OAuthBearerConfig
from gateway.errors import AuthenticationFailed, JwksUnavailable
from gateway.identity import Identity
from gateway.identity.accounts import AccountStore
from gateway.identity.guard import AuthGuard
from gateway.identity.mechanisms import AuthContext, Exchange, Step, Verified

log = logging.getLogger(__name__)

MECHANISM = "OAUTHBEARER"
MAX_TOKEN_BYTES = 8192
# The whole initial client response: the token plus the GS2 header and extensions.
MAX_MESSAGE_BYTES = 16384
MAX_EXTENSIONS = 16
MAX_EXTENSION_BYTES = 1024
MAX_JWKS_BYTES = 1 << 20
MAX_JWKS_KEYS = 100
MAX_GROUPS = 256
MAX_NAME_CHARS = 256
MIN_RSA_BITS = 2048  # shorter RSA keys are factorable: signatures by them prove nothing
FETCH_TIMEOUT_SECONDS = 10.0

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
# RFC 7628 section 3.1: key = 1*(ALPHA); value = *(VCHAR / SP / HTAB / CR / LF).
_EXTENSION_KEY = re.compile(r"[A-Za-z]+")
_EXTENSION_VALUE = re.compile(r"[\x21-\x7e \t\r\n]*")
_BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9._~+/-]+=*) *")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Which key type (and curve) an algorithm's signature can be checked with.
_KEY_TYPES = {"RS": "RSA", "ES": "EC"}
_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}

Fetch = Callable[[], Awaitable[bytes]]


def _refuse(message: str, reason: str) -> AuthenticationFailed:
    return AuthenticationFailed(message, reason=reason)


# -- the key set -----------------------------------------------------------------------


def parse_jwks(raw: bytes) -> dict[str, dict[str, Any]]:
    """The signing keys of a JWKS document by ``kid``; JwksUnavailable when it is not
    one. Keys without a ``kid`` or meant for encryption are left out."""
    if len(raw) > MAX_JWKS_BYTES:
        raise JwksUnavailable(f"JWKS larger than {MAX_JWKS_BYTES} bytes")
    try:
        document = json.loads(raw)
    except ValueError:
        raise JwksUnavailable("JWKS is not JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise JwksUnavailable("JWKS has no 'keys' list")
    if len(entries) > MAX_JWKS_KEYS:
        raise JwksUnavailable(f"JWKS has {len(entries)} keys, more than {MAX_JWKS_KEYS}")
    keys: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("kty"), str):
            raise JwksUnavailable("a JWKS entry is not a key (no kty)")
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid or entry.get("use", "sig") != "sig":
            continue
        if kid in keys:
            raise JwksUnavailable(f"JWKS names kid {kid[:64]!r} twice")
        keys[kid] = entry
    return keys


async def fetch_url(url: str, ca_file: Path | None) -> bytes:
    """GET a JWKS, bounded in size and time, without following redirects (a redirect
    could leave https)."""
    context: ssl.SSLContext | None = None
    if url.startswith("https:"):
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_SECONDS)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(
                url, ssl=context if context is not None else True, allow_redirects=False
            ) as response,
        ):
            if response.status != 200:
                raise JwksUnavailable(f"{url} answered HTTP {response.status}")
            body = bytearray()
            async for chunk in response.content.iter_chunked(65536):
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise JwksUnavailable(f"{url} sent more than {MAX_JWKS_BYTES} bytes")
            return bytes(body)
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        raise JwksUnavailable(f"{url}: {type(exc).__name__}: {exc}") from None


def _read_file(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_JWKS_BYTES + 1)
    except OSError as exc:
        raise JwksUnavailable(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_JWKS_BYTES:
        raise JwksUnavailable(f"{path} is larger than {MAX_JWKS_BYTES} bytes")
    return data


async def fetch_file(path: Path) -> bytes:
    return _read_file(path)


class JwksSource:
    """The provider's signing keys by ``kid``.

    Keys are read on first use, then again every ``jwks_refresh_seconds`` in the
    background (the current keys serve meanwhile), and whenever a JWKS file changes. A
    token naming an unknown kid triggers a read only when the last one started at least
    ``jwks_min_refetch_seconds`` ago; tokens arriving during a read wait for it and
    share its result. A failed read keeps the last good keys.
    """

    def __init__(
        self,
        config: OAuthBearerConfig,
        fetch: Fetch | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._refresh_seconds = config.jwks_refresh_seconds
        self._min_refetch = config.jwks_min_refetch_seconds
        self._file = config.jwks_file
        self._where = config.jwks_url or str(config.jwks_file)
        if fetch is None:
            if config.jwks_url is not None:
                fetch = partial(fetch_url, config.jwks_url, config.jwks_ca_file)
            elif config.jwks_file is not None:
                fetch = partial(fetch_file, config.jwks_file)
            else:
                raise ValueError("JwksSource needs jwks_url or jwks_file")
        self._fetch = fetch
        self._clock = clock
        self._keys: dict[str, dict[str, Any]] = {}
        self._started_at: float | None = None
        self._file_stamp: tuple[int, int, int] | None = None
        self._running: asyncio.Task[None] | None = None

    def _stamp(self) -> tuple[int, int, int] | None:
        if self._file is None:
            return None
        try:
            stat = os.stat(self._file)
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    def _start(self) -> asyncio.Task[None]:
        if self._running is None:
            self._started_at = self._clock()
            self._file_stamp = self._stamp()
            self._running = asyncio.get_running_loop().create_task(self._load())
            self._running.add_done_callback(self._finished)
        return self._running

    def _finished(self, _task: asyncio.Task[None]) -> None:
        self._running = None

    async def refresh(self) -> None:
        """Read the keys now (or join the read in progress)."""
        # Shielded: a cancelled waiter must not cancel the read others are waiting for.
        await asyncio.shield(self._start())

    async def _load(self) -> None:
        try:
            keys = parse_jwks(await self._fetch())
        except JwksUnavailable as exc:
            metrics.JWKS_FETCHES.labels("failed").inc()
            log.warning(
                "JWKS from %s not read, %d known keys stay: %s", self._where, len(self._keys), exc
            )
            return
        metrics.JWKS_FETCHES.labels("ok").inc()
        metrics.JWKS_KEYS.set(len(keys))
        if keys.keys() != self._keys.keys():
            log.info("JWKS from %s: %d signing keys", self._where, len(keys))
        self._keys = keys

    async def key(self, kid: str) -> dict[str, Any] | None:
        """The JWK named ``kid``, or None when the provider does not know it."""
        now = self._clock()
        if self._started_at is None or self._stamp() != self._file_stamp:
            await self.refresh()
        elif now - self._started_at >= self._refresh_seconds:
            self._start()
        found = self._keys.get(kid)
        if found is not None:
            return found
        if self._running is not None:
            await self.refresh()
        elif self._started_at is None or now - self._started_at >= self._min_refetch:
            # Perhaps the provider rotated its keys: look once, for everyone.
            await self.refresh()
        return self._keys.get(kid)

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def close(self) -> None:
        """Abandon a read in progress (the gateway is stopping)."""
        if self._running is not None:
            self._running.cancel()


# -- tokens ------------------------------------------------------------------------------


def _b64_json(segment: str, what: str) -> dict[str, Any]:
    if not _B64URL.fullmatch(segment):
        raise _refuse(f"token {what} is not base64url", "malformed")
    try:
        value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error):
        raise _refuse(f"token {what} is not base64url JSON", "malformed") from None
    if not isinstance(value, dict):
        raise _refuse(f"token {what} is not a JSON object", "malformed")
    return value


def token_header(token: str) -> dict[str, Any]:
    """The header of a compact JWS, after the checks that need no key."""
    if len(token) > MAX_TOKEN_BYTES:
        raise _refuse(f"token of {len(token)} bytes, over {MAX_TOKEN_BYTES}", "too_large")
    if not token.isascii():
        raise _refuse("token is not ASCII", "malformed")
    parts = token.split(".")
    if len(parts) == 5:
        raise _refuse("token is a JWE (encrypted), only signed tokens are accepted", "jwe")
    if len(parts) != 3:
        raise _refuse(f"token has {len(parts)} parts, a JWS has 3", "malformed")
    header = _b64_json(parts[0], "header")
    if "enc" in header:
        raise _refuse("token header names an encryption", "jwe")
    if "crit" in header:
        # RFC 7515 4.1.11: critical extensions the recipient does not know must fail.
        raise _refuse("token header has critical extensions", "malformed")
    return header


def _verify_signature(token: str, key_data: dict[str, Any] | str, alg: str) -> bytes:
    """Runs on the guard's pool: the payload when the signature is good."""
    try:
        key = jwk.construct(key_data, alg)
    except JOSEError:
        raise _refuse(f"the provider's key for {alg} is unusable", "bad_key") from None
    try:
        payload: bytes = jws.verify(token, key, algorithms=[alg])
    except JOSEError:
        raise _refuse("token signature does not verify", "bad_signature") from None
    return payload


def _modulus_bits(n: object) -> int:
    """The size of a JWK's base64url RSA modulus (0 when it is not one)."""
    if not isinstance(n, str) or not _B64URL.fullmatch(n):
        return 0
    try:
        raw = base64.urlsafe_b64decode(n + "=" * (-len(n) % 4))
    except (ValueError, binascii.Error):
        return 0
    return int.from_bytes(raw, "big").bit_length()


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _refuse(f"claim {name} is not a number", "malformed")
    return float(value)


def _name(value: object) -> str | None:
    """A principal or group name fit for logs and metrics, else None."""
    if isinstance(value, str) and 0 < len(value) <= MAX_NAME_CHARS and not _CONTROL.search(value):
        return value
    return None


def _groups(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value.split() if isinstance(value, str) else value
    if not isinstance(items, list) or len(items) > MAX_GROUPS:
        raise _refuse(f"groups claim is not a list of at most {MAX_GROUPS} names", "bad_groups")
    names = [_name(item) for item in items]
    if any(name is None for name in names):
        raise _refuse("groups claim holds something other than a name", "bad_groups")
    return tuple(n for n in names if n is not None)


@dataclass(frozen=True, slots=True)
class _Claims:
    principal: str
    groups: tuple[str, ...]
    expires_at: float
    pairs: tuple[tuple[str, str], ...] = ()


# What policies may match a token's claims on: bounded, so that a large token cannot
# make every identity large.
MAX_CLAIM_PAIRS = 128
MAX_CLAIM_TEXT = 256


def _claim_pairs(claims: dict[str, object]) -> tuple[tuple[str, str], ...]:
    """(name, value) for each scalar claim and each scalar item of a list claim, as text
    (true/false for booleans, as in JSON); nested objects are left out."""
    pairs: list[tuple[str, str]] = []
    for name, value in claims.items():
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, bool):
                text = "true" if item else "false"
            elif isinstance(item, str | int | float):
                text = str(item)
            else:
                continue
            if len(name) <= MAX_CLAIM_TEXT and len(text) <= MAX_CLAIM_TEXT:
                pairs.append((name, text))
            if len(pairs) >= MAX_CLAIM_PAIRS:
                return tuple(pairs)
    return tuple(pairs)


class JwtValidator:
    """Checks a token's signature and claims and names who it belongs to."""

    def __init__(
        self,
        config: OAuthBearerConfig,
        guard: AuthGuard,
        accounts: AccountStore | None = None,
        jwks: JwksSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._guard = guard
        self._accounts = accounts
        self._clock = clock
        self._algorithms = frozenset(config.algorithms)
        # Resolved once: a missing secret is a config error at start, not a refusal later.
        self._secret = config.shared_secret.resolve() if config.shared_secret else None
        if self._secret is None and jwks is None:
            jwks = JwksSource(config)
        self.jwks = jwks

    def close(self) -> None:
        if self.jwks is not None:
            self.jwks.close()

    async def validate(self, token: str, address: str = "") -> Identity:
        """The identity ``token`` proves; AuthenticationFailed otherwise. ``address``
        is the caller's IP address, whose share of the guard's pool the check uses."""
        header = token_header(token)
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise _refuse("token header names no algorithm", "malformed")
        if alg not in self._algorithms:
            raise _refuse(f"token algorithm {alg[:16]!r} is not accepted", "alg_not_allowed")
        key = await self._key(header, alg)
        payload = await self._guard.run(address, _verify_signature, token, key, alg)
        try:
            claims = json.loads(payload)
        except ValueError:
            raise _refuse("token payload is not JSON", "malformed") from None
        if not isinstance(claims, dict):
            raise _refuse("token payload is not a JSON object", "malformed")
        checked = self._check_claims(claims)
        return self._identity(checked)

    async def _key(self, header: dict[str, Any], alg: str) -> dict[str, Any] | str:
        if alg.startswith("HS"):
            # The config allows HS* only with a shared secret and no JWKS.
            assert self._secret is not None
            return self._secret
        assert self.jwks is not None
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _refuse("token names no kid", "unknown_kid")
        key = await self.jwks.key(kid)
        if key is None:
            raise _refuse(f"no key with kid {kid[:64]!r}", "unknown_kid")
        if key.get("kty") != _KEY_TYPES[alg[:2]] or key.get("alg", alg) != alg:
            raise _refuse(f"key {kid[:64]!r} is not a {alg} key", "key_mismatch")
        if alg in _CURVES and key.get("crv") != _CURVES[alg]:
            raise _refuse(f"key {kid[:64]!r} is not on the curve of {alg}", "key_mismatch")
        if alg.startswith("RS") and _modulus_bits(key.get("n")) < MIN_RSA_BITS:
            raise _refuse(f"key {kid[:64]!r} is shorter than {MIN_RSA_BITS} bits", "bad_key")
        return key

    def _check_claims(self, claims: dict[str, Any]) -> _Claims:
        now, leeway = self._clock(), self._config.leeway_seconds
        exp = _number(claims, "exp")
        if exp is None:
            raise _refuse("token has no exp", "missing_exp")
        if now >= exp + leeway:
            raise _refuse(f"token expired {now - exp:.0f} s ago", "expired")
        for name in ("nbf", "iat"):
            at = _number(claims, name)
            if at is not None and at - leeway > now:
                raise _refuse(f"token {name} is {at - now:.0f} s ahead", "not_yet_valid")
        if claims.get("iss") != self._config.issuer:
            raise _refuse("token issuer is not the configured one", "bad_issuer")
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if self._config.audience not in audiences:
            raise _refuse("token audience does not include the configured one", "bad_audience")
        principal = _name(claims.get(self._config.principal_claim))
        if principal is None:
            raise _refuse(
                f"claim {self._config.principal_claim} does not name a principal", "bad_principal"
            )
        groups_claim = self._config.groups_claim
        groups = _groups(claims.get(groups_claim)) if groups_claim else ()
        return _Claims(principal, groups, exp, _claim_pairs(claims))

    def _identity(self, claims: _Claims) -> Identity:
        groups = claims.groups
        account = self._accounts.get(claims.principal) if self._accounts else None
        if account is not None:
            if account.disabled:
                raise _refuse(f"{claims.principal!r} is disabled", "disabled_account")
            groups = tuple(dict.fromkeys([*groups, *account.groups]))
        return Identity(
            principal=claims.principal,
            mechanism=MECHANISM,
            groups=groups,
            expires_at=claims.expires_at,
            claims=claims.pairs,
        )


# -- the SASL mechanism --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientResponse:
    """A parsed initial client response (RFC 7628 section 3.1)."""

    token: str
    authzid: str = ""
    extensions: dict[str, str] = field(default_factory=dict)


def _authzid(gs2: str) -> str:
    # saslname escapes (RFC 5801): "=2C" is ",", "=3D" is "=".
    if not gs2:
        return ""
    if not gs2.startswith("a=") or re.search(r"=(?!2C|3D)", gs2[2:]):
        raise _refuse("malformed authzid in the GS2 header", "malformed")
    return gs2[2:].replace("=2C", ",").replace("=3D", "=")


def _pairs(body: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in body.split("\x01"):
        key, sep, value = item.partition("=")
        if not sep or not _EXTENSION_KEY.fullmatch(key) or not _EXTENSION_VALUE.fullmatch(value):
            raise _refuse("malformed key=value pair", "malformed")
        if key in pairs:
            raise _refuse(f"key {key[:32]!r} given twice", "malformed")
        if key != "auth" and len(key) + len(value) > MAX_EXTENSION_BYTES:
            raise _refuse(f"extension {key[:32]!r} too long", "malformed")
        pairs[key] = value
    return pairs


def parse_client_response(message: bytes) -> ClientResponse:
    """Split ``gs2-header \\x01 auth=Bearer <token> \\x01 *(key=value \\x01) \\x01``."""
    if len(message) > MAX_MESSAGE_BYTES:
        raise _refuse(f"message of {len(message)} bytes", "too_large")
    try:
        text = message.decode("utf-8")
    except UnicodeDecodeError:
        raise _refuse("message is not UTF-8", "malformed") from None
    # Channel binding ("p=") is not offered: only "n" or "y" are valid flags.
    if not text.startswith(("n,", "y,")):
        raise _refuse("message does not start with a GS2 header", "malformed")
    gs2, comma, rest = text[2:].partition(",")
    if not comma or not rest.startswith("\x01") or not rest.endswith("\x01\x01"):
        raise _refuse("message is not framed by \\x01 separators", "malformed")
    authzid = _authzid(gs2)
    pairs = _pairs(rest[1:-2])
    auth = pairs.pop("auth", None)
    if auth is None:
        raise _refuse("message has no auth=Bearer", "malformed")
    if len(pairs) > MAX_EXTENSIONS:
        raise _refuse(f"{len(pairs)} extensions, over {MAX_EXTENSIONS}", "malformed")
    bearer = _BEARER.fullmatch(auth)
    if bearer is None:
        raise _refuse("auth is not 'Bearer <token>'", "malformed")
    return ClientResponse(token=bearer.group(1), authzid=authzid, extensions=pairs)


class OAuthBearerMechanism:
    """SASL/OAUTHBEARER: one client message carrying a token, one verdict.

    A refused token is answered with SASL_AUTHENTICATION_FAILED directly rather than
    RFC 7628's error challenge; Kafka's Java client and librdkafka both end the
    attempt with an authentication error on that answer.
    """

    name = MECHANISM

    def __init__(self, validator: JwtValidator) -> None:
        self.validator = validator

    def start(self, context: AuthContext) -> Exchange:
        return _OAuthBearerExchange(self.validator, context)


class _OAuthBearerExchange:
    def __init__(self, validator: JwtValidator, context: AuthContext) -> None:
        self._validator = validator
        self._context = context

    async def step(self, token: bytes) -> Step:
        response = parse_client_response(token)
        identity = await self._validator.validate(response.token, self._context.address)
        if response.authzid and response.authzid != identity.principal:
            raise _refuse(
                f"authzid differs from the token's principal {identity.principal!r}",
                "authzid_mismatch",
            )
        return Verified(identity)
