"""A client of a Confluent-compatible schema registry (Confluent Schema Registry,
Karapace, ...) over its REST API, with the caches masking needs.

- ``GET /schemas/ids/{id}``: a schema by id. Ids never change meaning, so a schema is
  kept until the LRU of ``cache_size`` entries evicts it; a registry outage with a warm
  cache changes nothing. Concurrent lookups of one id share one request. An id the
  registry does not know is asked again only after :data:`NOT_FOUND_RETRY_S` (a
  consumer retrying a partition that holds it must not turn into a request per fetch).
- ``POST /subjects/{subject}`` (with the schema's text): whether a schema is one of a
  subject's versions, trusted for ``subject_ttl_seconds``.

Basic auth or a bearer token; TLS with a CA bundle. Errors name the registry's URL
and what was asked, never a credential (see :mod:`gateway.masking.schemas`).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import quote

import aiohttp

from gateway import metrics
from gateway.config import RegistryConfig
from gateway.masking.schemas import (
    RegisteredSchema,
    RegistryUnavailable,
    SchemaNotFound,
)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"

# How long an id the registry answered "not found" for is answered so without asking.
NOT_FOUND_RETRY_S = 2.0


class RegistryClient:
    """Schemas from one registry; one per gateway, shared by every connection."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout_seconds: float = 5.0,
        cache_size: int = 1000,
        subject_ttl_seconds: float = 300.0,
    ) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Accept": CONTENT_TYPE, "Content-Type": CONTENT_TYPE}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        if username is not None and password is not None:
            self._headers["Authorization"] = aiohttp.encode_basic_auth(username, password)
        self._ssl = ssl_context
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._cache_size = cache_size
        self._ttl = subject_ttl_seconds
        self._schemas: OrderedDict[int, RegisteredSchema] = OrderedDict()
        self._pending: dict[int, asyncio.Future[RegisteredSchema]] = {}
        # Ids the registry did not know: the answer and when to ask again.
        self._missing: OrderedDict[int, tuple[SchemaNotFound, float]] = OrderedDict()
        self._registered: dict[tuple[str, int], tuple[bool, float]] = {}
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_config(cls, config: RegistryConfig) -> RegistryClient:
        context = None
        if config.url.startswith("https://"):
            context = ssl.create_default_context(
                cafile=str(config.ca_file) if config.ca_file else None
            )
        return cls(
            config.url,
            username=config.username,
            password=config.password.resolve() if config.password is not None else None,
            token=config.token.resolve() if config.token is not None else None,
            ssl_context=context,
            timeout_seconds=config.timeout_seconds,
            cache_size=config.cache_size,
            subject_ttl_seconds=config.subject_ttl_seconds,
        )

    async def schema_by_id(self, schema_id: int) -> RegisteredSchema:
        found = self._schemas.get(schema_id)
        if found is not None:
            self._schemas.move_to_end(schema_id)
            metrics.REGISTRY_CACHE.labels("hit").inc()
            return found
        missing = self._missing.get(schema_id)
        if missing is not None:
            if missing[1] > time.monotonic():
                metrics.REGISTRY_CACHE.labels("hit").inc()
                raise SchemaNotFound(str(missing[0]))
            del self._missing[schema_id]
        metrics.REGISTRY_CACHE.labels("miss").inc()
        pending = self._pending.get(schema_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[RegisteredSchema] = asyncio.get_running_loop().create_future()
        self._pending[schema_id] = future
        try:
            body = await self._request("GET", f"/schemas/ids/{schema_id}", f"schema {schema_id}")
            schema = RegisteredSchema(
                id=schema_id,
                schema=_text(body, "schema", f"schema {schema_id}", self.url),
                schema_type=str(body.get("schemaType") or "AVRO"),
                references=tuple(body.get("references") or ()),
            )
        except BaseException as exc:
            if isinstance(exc, SchemaNotFound):
                self._missing[schema_id] = (exc, time.monotonic() + NOT_FOUND_RETRY_S)
                while len(self._missing) > self._cache_size:
                    self._missing.popitem(last=False)
            future.set_exception(exc)
            future.exception()  # retrieved: waiters get it through shield
            raise
        finally:
            self._pending.pop(schema_id, None)
        future.set_result(schema)
        self._schemas[schema_id] = schema
        while len(self._schemas) > self._cache_size:
            self._schemas.popitem(last=False)
        return schema

    async def registered(self, subject: str, schema_id: int) -> bool:
        key = (subject, schema_id)
        known = self._registered.get(key)
        now = time.monotonic()
        if known is not None and known[1] > now:
            metrics.REGISTRY_CACHE.labels("hit").inc()
            return known[0]
        metrics.REGISTRY_CACHE.labels("miss").inc()
        schema = await self.schema_by_id(schema_id)
        payload: dict[str, Any] = {"schema": schema.schema}
        if schema.schema_type != "AVRO":
            payload["schemaType"] = schema.schema_type
        if schema.references:
            payload["references"] = list(schema.references)
        what = f"subject {subject}"
        try:
            body = await self._request(
                "POST", f"/subjects/{quote(subject, safe='')}", what, payload
            )
            answer = body.get("id") == schema_id
        except SchemaNotFound:
            answer = False
        self._registered[key] = (answer, now + self._ttl)
        if len(self._registered) > self._cache_size:
            self._registered = {k: v for k, v in self._registered.items() if v[1] > now}
        return answer

    async def _request(
        self, method: str, path: str, what: str, payload: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        session = self._session
        if session is None or session.closed:
            session = self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=self._timeout
            )
        started = time.perf_counter()
        result = "error"
        try:
            async with session.request(
                method, self.url + path, json=payload, ssl=self._ssl if self._ssl else True
            ) as response:
                status = response.status
                try:
                    body = await response.json(content_type=None)
                except (aiohttp.ContentTypeError, ValueError):
                    body = None
            if status == 200 and isinstance(body, dict):
                result = "ok"
                return body
            if status == 404:
                result = "not_found"
                raise SchemaNotFound(f"registry {self.url}: {what} not found ({_code(body)})")
            if status in (401, 403):
                result = "unauthorized"
                raise RegistryUnavailable(f"registry {self.url}: {what}: not authorized ({status})")
            raise RegistryUnavailable(f"registry {self.url}: {what}: HTTP {status} {_code(body)}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            result = "unreachable"
            raise RegistryUnavailable(f"registry {self.url}: {what}: {type(exc).__name__}") from exc
        finally:
            metrics.REGISTRY_REQUESTS.labels(result).inc()
            metrics.REGISTRY_SECONDS.observe(time.perf_counter() - started)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _text(body: dict[str, Any], field: str, what: str, url: str) -> str:
    value = body.get(field)
    if not isinstance(value, str):
        raise RegistryUnavailable(f"registry {url}: {what}: the answer has no {field}")
    return value


def _code(body: Any) -> str:
    if isinstance(body, dict) and "error_code" in body:
        return f"error_code {body['error_code']}"
    return "no error body"
