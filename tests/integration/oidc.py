"""A test identity provider on loopback: a JWKS and an OAuth 2 token endpoint.

``IdentityProvider`` serves ``/jwks`` and ``/token`` (the client-credentials grant,
RFC 6749 section 4.4; client id and secret by HTTP basic auth or in the form) from its
own thread and event loop, so that clients which block while they fetch a token
(librdkafka calls the endpoint from its own threads, Java from a subprocess) are served
whatever the test's loop is doing. It signs RS256 tokens with keys the test generates
(``SigningKey``), for a configurable lifetime, and can rotate its keys.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import functools
import ipaddress
import secrets
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from jose import jwk, jwt


def _b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class SigningKey:
    """An RSA key pair with a kid, signing JWTs and publishing its public JWK."""

    kid: str
    private: rsa.RSAPrivateKey

    @classmethod
    def generate(cls, kid: str | None = None) -> SigningKey:
        return cls(kid or secrets.token_hex(8), rsa.generate_private_key(65537, 2048))

    def private_pem(self) -> str:
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def public_jwk(self) -> dict[str, str]:
        numbers = self.private.public_key().public_numbers()
        return {
            "kty": "RSA",
            "kid": self.kid,
            "use": "sig",
            "alg": "RS256",
            "n": _b64(numbers.n),
            "e": _b64(numbers.e),
        }

    @functools.cached_property
    def _jose_key(self) -> Any:
        # Loading a PEM private key checks it (slow): once per key, not per token.
        return jwk.construct(self.private_pem(), "RS256")

    def sign(self, claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
        token: str = jwt.encode(
            claims,
            self._jose_key,
            algorithm="RS256",
            headers={"kid": self.kid, **(headers or {})},
        )
        return token


def tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it, as PEM files
    ``(ca, certificate, key)`` in ``directory``."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test identity provider CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def jwks(*keys: SigningKey) -> dict[str, list[dict[str, str]]]:
    return {"keys": [k.public_jwk() for k in keys]}


@dataclass
class Client:
    """An OAuth client of the provider: its secret and the claims its tokens carry."""

    secret: str
    groups: list[str] = field(default_factory=list)
    # Extra or overriding claims (e.g. {"aud": "elsewhere"}).
    claims: dict[str, Any] = field(default_factory=dict)
    # Seconds its tokens live; None: the provider's lifetime.
    lifetime: float | None = None


class IdentityProvider:
    """Serves ``/jwks`` and ``/token`` on 127.0.0.1 from a thread; a context manager."""

    def __init__(
        self,
        audience: str = "kafka-gateway",
        lifetime: float = 300,
        clients: dict[str, Client] | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        """``tls``: serve https with this (certificate, key) pair."""
        self.audience = audience
        self.lifetime = lifetime
        self.clients = dict(clients or {})
        self.keys = [SigningKey.generate()]
        self.jwks_requests = 0
        self.tokens_issued = 0  # by the token endpoint
        self.issued: list[str] = []  # every token signed, for leak checks
        self.port = 0
        self._tls = tls
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    # -- addresses ------------------------------------------------------------------------

    @property
    def issuer(self) -> str:
        scheme = "https" if self._tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/jwks"

    @property
    def token_url(self) -> str:
        return f"{self.issuer}/token"

    # -- keys and tokens ------------------------------------------------------------------

    @property
    def signing_key(self) -> SigningKey:
        return self.keys[0]

    def rotate(self, keep_old: bool = True) -> SigningKey:
        """Sign with a new key from now on; the JWKS lists it first."""
        new = SigningKey.generate()
        self.keys = [new, *self.keys] if keep_old else [new]
        return new

    def claims_for(self, client_id: str, lifetime: float | None = None) -> dict[str, Any]:
        client = self.clients.get(client_id, Client(secret=""))
        if lifetime is None:
            lifetime = client.lifetime if client.lifetime is not None else self.lifetime
        now = int(time.time())
        return {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": client_id,
            "client_id": client_id,
            "azp": client_id,
            "scope": "kafka",
            "groups": list(client.groups),
            "iat": now,
            "nbf": now,
            "exp": now + int(lifetime),
            "jti": secrets.token_hex(8),
            **client.claims,
        }

    def token_for(self, client_id: str, lifetime: float | None = None) -> str:
        token = self.signing_key.sign(self.claims_for(client_id, lifetime))
        self.issued.append(token)
        return token

    # -- HTTP -----------------------------------------------------------------------------

    async def _jwks(self, _request: web.Request) -> web.Response:
        self.jwks_requests += 1
        return web.json_response(jwks(*self.keys))

    async def _huge_jwks(self, _request: web.Request) -> web.StreamResponse:
        """A valid JWKS padded to 2 MiB, streamed: more than any client should read."""
        self.jwks_requests += 1
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(_request)
        await response.write(b'{"keys": []' + b" " * 65536)
        for _ in range(32):
            await response.write(b" " * 65536)
        await response.write(b"}")
        return response

    async def _redirect(self, _request: web.Request) -> web.Response:
        self.jwks_requests += 1
        raise web.HTTPFound(self.jwks_url)

    def _credentials(self, request: web.Request, form: Any) -> tuple[str, str] | None:
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            client_id, sep, secret = decoded.partition(":")
            return (client_id, secret) if sep else None
        if "client_id" in form and "client_secret" in form:
            return str(form["client_id"]), str(form["client_secret"])
        return None

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        credentials = self._credentials(request, form)
        client = self.clients.get(credentials[0]) if credentials else None
        if credentials is None or client is None or client.secret != credentials[1]:
            return web.json_response({"error": "invalid_client"}, status=401)
        self.tokens_issued += 1
        return web.json_response(
            {
                "access_token": self.token_for(credentials[0]),
                "token_type": "Bearer",
                "expires_in": int(client.lifetime or self.lifetime),
                "scope": "kafka",
            }
        )

    async def _start(self) -> int:
        app = web.Application()
        app.router.add_get("/jwks", self._jwks)
        app.router.add_get("/huge-jwks", self._huge_jwks)
        app.router.add_get("/moved-jwks", self._redirect)
        app.router.add_post("/token", self._token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        context = None
        if self._tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*self._tls)
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        server = site._server
        assert server is not None
        return int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def start(self) -> IdentityProvider:
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()

    def __enter__(self) -> IdentityProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def running_provider(**kwargs: Any) -> Iterator[IdentityProvider]:
    """For fixtures: ``yield from running_provider(...)``."""
    with IdentityProvider(**kwargs) as provider:
        yield provider
