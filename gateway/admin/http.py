"""Admin HTTP endpoints (aiohttp).

``/healthz``: the process is serving. ``/readyz``: the active upstream cluster's
health as the gateway's background checks last found it (ready when ``up`` or
``degraded``); it never asks the cluster itself, so it answers at once in every state
and callers cannot make the gateway load the cluster. ``/metrics``: Prometheus text
format. No endpoint returns configuration or credentials.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.errors import GatewayError
from gateway.session import Services

log = logging.getLogger(__name__)


def make_app(services: Services) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        pool = services.pool
        health = pool.health
        body = {
            "status": "ready" if health.ready else "unavailable",
            "cluster": pool.name,
            "state": health.state.value,
            "for_seconds": round(time.monotonic() - health.since, 1),
            "brokers": len(pool.view.brokers),
        }
        return web.json_response(body, status=200 if health.ready else 503)

    async def metrics_endpoint(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest())
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        response.charset = "utf-8"
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    return app


class AdminServer:
    def __init__(self, services: Services, host: str, port: int) -> None:
        self._runner = web.AppRunner(make_app(services), access_log=None)
        self._host, self._port = host, port

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise GatewayError(
                f"admin HTTP: cannot listen on {self._host}:{self._port}: {exc.strerror}"
            ) from exc
        log.info("admin HTTP on %s:%d", self._host, self._port)

    async def stop(self) -> None:
        await self._runner.cleanup()
