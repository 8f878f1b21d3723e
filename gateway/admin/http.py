"""Admin HTTP endpoints (aiohttp), and who may call them.

Every endpoint is one row of :data:`ROUTES`, which declares the roles that may call
it. The endpoints listed in ``admin.open_endpoints`` (by default ``/healthz``,
``/readyz`` and ``/metrics``) are served without a token; every other one, and every
path that matches no route, needs ``Authorization: Bearer <token>`` (see
:mod:`gateway.admin.auth`): no or a bad token gets 401, a token without one of the
route's roles 403. Failed authentications count against the caller's address in the
same guard as Kafka logins, so guessing tokens is delayed and limited.

``/healthz``: the process is serving. ``/readyz``: the active upstream cluster's
health as the gateway's background checks last found it (ready when ``up`` or
``degraded``; with a secondary configured, each cluster's state too); it never asks
the cluster itself, so it answers at once in every state
and callers cannot make the gateway load the cluster. With audit on and not
``fail_open``, it is also unavailable while the audit log cannot write (``audit``
says why). ``/metrics``: Prometheus text
format. ``GET /clusters``: each configured cluster's health (active or standby, state
and why, broker count, the last check's and canary's durations, the thresholds and how
far along them it is) and, with a standby, MirrorMaker's replication lag as the gateway
last measured it (``replication``). ``/whoami``: the caller as the API sees it.
``/sessions``: the client connections open now. ``GET /policy``: the policy in force
(version, files, rule count) and the last reload's outcome. ``POST /policy/reload``:
reload the policy directory now; 422 with the problems when the new set is invalid (the
policy in force stays). ``GET /audit/events``, ``/audit/sessions``,
``/audit/sessions/{id}``: the audit log read back (auditor, admin). With audit on,
every call but the open endpoints is recorded as an ``admin_action`` event before its
answer goes out. No endpoint returns configuration, credentials or tokens (policy files
hold neither: they are rules, and only their names are shown).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway import metrics
from gateway.admin.auth import AdminAuth, AdminCaller, AdminDenied, JwtCheck, authorize
from gateway.admin.sessions import describe_sessions
from gateway.admin.tls import AdminTls
from gateway.audit import query
from gateway.audit.log import AuditLog
from gateway.audit.recorder import Recorder
from gateway.config import AdminRole
from gateway.errors import AuditUnavailable, GatewayError
from gateway.failover.drill import drill_plan
from gateway.session import Services

log = logging.getLogger(__name__)

# Admin requests are small JSON documents; a larger body is refused before it is read.
MAX_BODY_BYTES = 64 * 1024

SERVICES = web.AppKey("services", Services)
AUTH = web.AppKey("auth", AdminAuth)
CALLER = web.RequestKey("caller", AdminCaller)


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint and who may call it: ``roles`` None means any authenticated
    caller; a path listed in ``admin.open_endpoints`` needs no token at all."""

    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    roles: frozenset[AdminRole] | None


def _roles(*names: AdminRole) -> frozenset[AdminRole]:
    return frozenset(names)


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    pool = services.pool
    health = pool.health
    ready = health.ready
    body: dict[str, object] = {
        "cluster": pool.name,
        "state": health.state.value,
        "for_seconds": round(time.monotonic() - health.since, 1),
        "brokers": len(pool.view.brokers),
    }
    if services.standby is not None:
        # States only: reasons name broker addresses, for authenticated callers
        # (GET /clusters).
        body["clusters"] = {each.name: each.health.state.value for each in (pool, services.standby)}
    recorder = services.audit
    if recorder is not None and isinstance(recorder.sink, AuditLog):
        audit_log = recorder.sink
        body["audit"] = {"healthy": audit_log.healthy, "reason": audit_log.unhealthy_reason}
        # Fail closed refuses every request while the log cannot write: not ready.
        ready = ready and (audit_log.healthy or recorder.settings.fail_open)
    body["status"] = "ready" if ready else "unavailable"
    return web.json_response(body, status=200 if ready else 503)


async def clusters(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    shown = [services.pool.describe("active")]
    if services.standby is not None:
        shown.append(services.standby.describe("standby"))
    body: dict[str, object] = {"active": services.pool.name, "clusters": shown}
    if services.replication is not None:
        body["replication"] = services.replication.describe()
    return web.json_response(body)


# How long a drill's dry run may read both clusters before it answers 504.
DRILL_READ_TIMEOUT_S = 60.0
_DRILL_BODY = 'a JSON object: {"to": "secondary", "dry_run": true}'


async def failover_drill(request: web.Request) -> web.Response:
    """``{"to": "secondary", "dry_run": true}``: what a drill would meet now (see
    :mod:`gateway.failover.drill`); nothing is changed. The drill itself is not built:
    without ``dry_run`` it answers 501."""
    config = request.app[SERVICES].config
    secondary = config.clusters.secondary
    if secondary is None:
        return _error(409, "no clusters.secondary is configured")
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return _error(400, f"body: {_DRILL_BODY}")
    if not isinstance(body, dict):
        return _error(400, f"body: {_DRILL_BODY}")
    if body.get("to") != "secondary":
        return _error(400, 'to: "secondary" (a drill back needs replication the other way)')
    if body.get("dry_run") is not True:
        return _error(
            501, "only a dry run is built: the drill itself (fence writes, switch, release) is not"
        )
    log.info("admin API: failover drill dry run requested by %s", request[CALLER].principal)
    replication = config.clusters.replication
    try:
        async with asyncio.timeout(DRILL_READ_TIMEOUT_S):
            plan = await drill_plan(
                config.clusters.primary,
                secondary,
                source_alias=replication.source_alias,
                target_alias=replication.target_alias,
                topics=replication.topic_pattern,
                groups=replication.group_pattern,
            )
    except TimeoutError:
        return _error(504, f"the clusters did not answer within {DRILL_READ_TIMEOUT_S:.0f}s")
    except Exception as exc:  # noqa: BLE001 - any cluster error: named, never quoted
        log.warning("admin API: a drill dry run could not read the clusters: %r", exc)
        return _error(502, f"the clusters could not be read ({type(exc).__name__})")
    return web.json_response(plan.as_json())


async def metrics_endpoint(_: web.Request) -> web.Response:
    response = web.Response(body=generate_latest())
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    response.charset = "utf-8"
    return response


async def whoami(request: web.Request) -> web.Response:
    caller = request[CALLER]
    return web.json_response(
        {
            "principal": caller.principal,
            "groups": list(caller.groups),
            "roles": sorted(caller.roles),
            "authenticated_by": caller.via,
            "expires_at": caller.expires_at,
        }
    )


async def sessions(request: web.Request) -> web.Response:
    open_sessions = request.app[SERVICES].sessions
    return web.json_response({"sessions": describe_sessions(open_sessions, time.time())})


async def policy(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICES].policies.status())


async def policy_reload(request: web.Request) -> web.Response:
    store = request.app[SERVICES].policies
    if store.directory is None:
        return _error(409, "no policy.dir is configured")
    log.info("admin API: policy reload requested by %s", request[CALLER].principal)
    # Reading and validating files blocks: off the loop, so clients are not stalled.
    outcome = await asyncio.to_thread(store.reload_now, "admin", request[CALLER].principal)
    body = store.status()
    if outcome is not None and outcome.result == "failure":
        body["error"] = f"invalid policy files; version {store.version} stays in force"
        return web.json_response(body, status=422)
    return web.json_response(body)


_AUDIT_LIMIT, _AUDIT_MAX_LIMIT = 100, 1000
_CONNECTION_ID = re.compile(r"[0-9a-f]{32}")


def _audit_dir(request: web.Request) -> Path:
    audit = request.app[SERVICES].config.audit
    if audit is None:
        raise web.HTTPNotFound(reason="audit is not configured (no audit: section)")
    return audit.dir


def _audit_filter(query_args: Mapping[str, str]) -> tuple[query.Filter, int]:
    """The filter and page size the query parameters ask for; HTTPBadRequest naming
    the parameter otherwise."""
    times: dict[str, float | None] = {}
    for name in ("from", "to"):
        value = query_args.get(name)
        try:
            times[name] = None if value is None else query.parse_time(value)
        except ValueError:
            raise web.HTTPBadRequest(
                reason=f"{name}: not an RFC 3339 time or epoch seconds"
            ) from None
    raw_limit = query_args.get("limit", str(_AUDIT_LIMIT))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= _AUDIT_MAX_LIMIT:
        raise web.HTTPBadRequest(reason=f"limit: a number from 1 to {_AUDIT_MAX_LIMIT}")
    where = query.Filter(
        since=times["from"],
        until=times["to"],
        principal=query_args.get("principal"),
        topic=query_args.get("topic"),
        connection=query_args.get("connection"),
        types=frozenset(t for t in query_args.get("type", "").split(",") if t),
    )
    return where, int(raw_limit)


async def audit_events(request: web.Request) -> web.Response:
    """Events by the export's filters, ``limit`` at a time; ``next_cursor`` pages on."""
    directory = _audit_dir(request)
    where, limit = _audit_filter(request.query)
    after = None
    if "cursor" in request.query:
        try:
            after = query.parse_cursor(request.query["cursor"])
        except ValueError as exc:
            raise web.HTTPBadRequest(reason=f"cursor: {exc}") from None
    # Reading segment files blocks: off the loop.
    found, cursor = await asyncio.to_thread(query.page, [directory], where, after, limit)
    return web.json_response({"events": found, "next_cursor": cursor})


async def audit_sessions(request: web.Request) -> web.Response:
    directory = _audit_dir(request)
    where, limit = _audit_filter(request.query)
    found = await asyncio.to_thread(query.sessions, [directory], where)
    # The most recent ``limit`` sessions (a listing is for finding one to replay).
    chosen = found[-limit:]
    return web.json_response(
        {"sessions": [s.as_json() for s in chosen], "more": len(found) > len(chosen)}
    )


async def audit_session(request: web.Request) -> web.Response:
    directory = _audit_dir(request)
    connection = request.match_info["id"]
    if not _CONNECTION_ID.fullmatch(connection):
        raise web.HTTPBadRequest(reason="id: a connection id is 32 hex digits")
    found = await asyncio.to_thread(query.replay, [directory], connection)
    if not found:
        raise web.HTTPNotFound(reason=f"no events of connection {connection}")
    return web.json_response({"connection": connection, "events": found})


ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", healthz, None),
    Route("GET", "/readyz", readyz, None),
    Route("GET", "/metrics", metrics_endpoint, None),
    Route("GET", "/whoami", whoami, None),
    Route("GET", "/clusters", clusters, _roles("operator", "auditor", "admin")),
    Route("GET", "/sessions", sessions, _roles("operator", "auditor", "admin")),
    Route("GET", "/policy", policy, _roles("operator", "auditor", "admin")),
    Route("POST", "/policy/reload", policy_reload, _roles("operator", "admin")),
    Route("POST", "/failover/drill", failover_drill, _roles("operator", "admin")),
    Route("GET", "/audit/events", audit_events, _roles("auditor", "admin")),
    Route("GET", "/audit/sessions", audit_sessions, _roles("auditor", "admin")),
    Route("GET", "/audit/sessions/{id}", audit_session, _roles("auditor", "admin")),
)


def _result(status: int) -> str:
    """The fixed word a response status is counted under."""
    words = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "not_allowed"}
    words |= {409: "conflict", 422: "invalid"}
    words |= {413: "too_large", 429: "rate_limited"}
    if status < 400:
        return "ok"
    if status >= 500:
        return "error"
    return words.get(status, "client_error")


def _error(status: int, message: str, reason: str = "") -> web.Response:
    response = web.json_response({"error": message}, status=status)
    if status == 401:
        # RFC 6750: tell the caller how to authenticate (and that a given token failed).
        challenge = 'Bearer realm="gateway-admin"'
        if reason != "no_token":
            challenge += ', error="invalid_token"'
        response.headers["WWW-Authenticate"] = challenge
    return response


def _template(request: web.Request) -> str:
    """The route's template (never the raw path, whose values are the caller's)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


async def _admit(request: web.Request, route: Route | None) -> None:
    """Authenticate and authorize ``request`` for ``route``; AdminDenied when refused."""
    auth = request.app[AUTH]
    if route is not None and route.path in auth.config.open_endpoints:
        return
    guard = request.app[SERVICES].authenticator.guard
    address = request.remote or "unknown"
    try:
        guard.check_allowed(address)
    except GatewayError:
        raise AdminDenied(429, "rate_limited", "too many failed authentications") from None
    try:
        caller = await auth.authenticate(request.headers.get("Authorization"), address)
    except AdminDenied as denied:
        log.warning(
            "admin API: refused %s %s from %s: %s",
            request.method,
            _template(request),
            address,
            denied.reason,
        )
        await guard.failed(address)
        raise
    request[CALLER] = caller
    if route is not None:
        try:
            authorize(caller, route.roles)
        except AdminDenied as denied:
            log.info(
                "admin API: %s %s by %s refused: %s",
                request.method,
                route.path,
                caller.principal,
                denied.reason,
            )
            raise


async def _record(
    recorder: Recorder, request: web.Request, template: str, response: web.StreamResponse
) -> web.StreamResponse:
    """The call's ``admin_action`` event, durable before the answer goes out; an answer
    whose event cannot be written is not given (503)."""
    caller = request.get(CALLER)
    principal = caller.principal if isinstance(caller, AdminCaller) else None
    try:
        await recorder.admin_action(
            principal, request.method, template, response.status, request.remote
        )
    except AuditUnavailable:
        log.error("admin API: %s %s by %s not recorded", request.method, template, principal)
        return _error(503, "the audit log cannot write; retry")
    return response


def _guard(routes: dict[tuple[str, str], Route]) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        template = _template(request)
        route = routes.get((request.method, template))
        recorder = request.app[SERVICES].audit
        open_endpoint = route is not None and route.path in request.app[AUTH].config.open_endpoints
        # Every call but the open endpoints (polled by probes and scrapers) is recorded.
        audited = recorder if not open_endpoint else None
        try:
            if (request.content_length or 0) > MAX_BODY_BYTES:
                raise AdminDenied(413, "too_large", "request body too large")
            await _admit(request, route)
            if audited is not None and request.method != "GET":
                # Fail closed: no change is made while it could not be recorded.
                audited.sink.ensure_writable()
            response = await handler(request)
        except AdminDenied as denied:
            response = _error(denied.status, denied.message, denied.reason)
        except AuditUnavailable:
            response = _error(503, "the audit log cannot write; retry")
        except web.HTTPError as exc:
            response = _error(exc.status, exc.reason)
        except Exception:
            log.exception("admin API: %s %s failed", request.method, template)
            response = _error(500, "internal error")
        if audited is not None:
            response = await _record(audited, request, template, response)
        metrics.ADMIN_REQUESTS.labels(template, _result(response.status)).inc()
        return response

    return guard


def make_app(services: Services, jwt: JwtCheck | None = None) -> web.Application:
    """The admin application. ``jwt`` validates bearer JWTs (the SASL/OAUTHBEARER
    validator); without it only static API tokens are accepted."""
    routes = {(route.method, route.path): route for route in ROUTES}
    app = web.Application(middlewares=[_guard(routes)], client_max_size=MAX_BODY_BYTES)
    app[SERVICES] = services
    app[AUTH] = AdminAuth(services.config.admin, jwt)
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
    return app


def _jwt_check(services: Services) -> JwtCheck | None:
    """The SASL/OAUTHBEARER token validator, when ``identity.oauthbearer`` is set."""
    validator = services.authenticator.jwt_validator
    return validator.validate if validator is not None else None


class AdminServer:
    def __init__(self, services: Services, host: str, port: int) -> None:
        self._runner = web.AppRunner(make_app(services, _jwt_check(services)), access_log=None)
        self._tls = services.config.admin.tls
        self._host, self._port = host, port

    async def start(self) -> None:
        context = AdminTls(self._tls).served if self._tls is not None else None
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self._host, self._port, reuse_address=True, ssl_context=context
        )
        try:
            await site.start()
        except OSError as exc:
            raise GatewayError(
                f"admin HTTP: cannot listen on {self._host}:{self._port}: {exc.strerror}"
            ) from exc
        log.info("admin %s on %s:%d", "HTTPS" if context else "HTTP", self._host, self._port)

    async def stop(self) -> None:
        await self._runner.cleanup()
