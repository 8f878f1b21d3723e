"""A pool per upstream cluster: credentials, negotiated versions, layout, health.

The pool owns what every client connection shares about one cluster: the gateway's
credentials for it, the API versions it speaks, its layout (:mod:`.view`), the cache of
coordinators, and its health (:mod:`.health`). One background task keeps the layout and
the health current: a check every ``health.interval_seconds``, sooner when a request
reports a broker failure, with backoff and jitter while nothing answers. Metadata is
read from the broker that answered last, then the other known brokers, then the
configured bootstrap servers (Kafka's re-bootstrap, KIP-899), so a cluster whose every
broker moved or restarted is found again. Refreshes are shared by all callers and paced,
so neither clients' requests nor ``/readyz`` can make the gateway hammer the cluster.

Each client connection reaches the brokers through its own
:class:`~gateway.upstream.connections.UpstreamSession`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Any

from aiokafka import errors as aiokafka_errors
from aiokafka.conn import AIOKafkaConnection, create_conn

from gateway.config import ClusterConfig
from gateway.errors import ConfigError, UpstreamError, UpstreamUnavailable
from gateway.protocol import codec
from gateway.protocol.versions import API_VERSIONS, METADATA, VersionRange
from gateway.upstream.boundary import map_errors
from gateway.upstream.canary import Canary, CanaryFailed
from gateway.upstream.clients import cluster_ssl_context
from gateway.upstream.connections import UpstreamSession
from gateway.upstream.coordinators import Coordinators
from gateway.upstream.health import ClusterHealth
from gateway.upstream.view import ClusterView

log = logging.getLogger(__name__)

# aiokafka's own per-request timer would cut long-polls and JoinGroups short; the
# gateway sets a budget per request instead (see UpstreamSession.wait).
_CONNECTION_TIMEOUT_MS = 15 * 60 * 1000
_GATEWAY_CLIENT_ID = "soc2-gateway"

_AUTH_ERRORS = (
    aiokafka_errors.AuthenticationFailedError,
    aiokafka_errors.SaslAuthenticationFailed,
)

# Metadata refreshes start at most this often, however many callers ask.
MIN_REFRESH_INTERVAL_S = 0.1
# How long a metadata request may go unanswered before the next broker is asked too.
STAGGER_S = 0.5
# Kafka clients' retry.backoff.ms / retry.backoff.max.ms, with 20% jitter.
BACKOFF_INITIAL_S = 0.1
BACKOFF_MAX_S = 1.0
BACKOFF_JITTER = 0.2


class Backoff:
    """Exponential backoff with jitter, as Kafka clients retry."""

    def __init__(self, initial: float = BACKOFF_INITIAL_S, maximum: float = BACKOFF_MAX_S) -> None:
        self.initial, self.maximum = initial, maximum
        self.attempts = 0

    def next(self) -> float:
        delay: float = min(self.maximum, self.initial * 2.0**self.attempts)
        self.attempts = min(self.attempts + 1, 30)
        return delay * random.uniform(1 - BACKOFF_JITTER, 1 + BACKOFF_JITTER)  # noqa: S311

    def reset(self) -> None:
        self.attempts = 0


class ClusterPool:
    """One upstream cluster: credentials, negotiated versions, layout, connections."""

    def __init__(self, name: str, config: ClusterConfig, timeout: float) -> None:
        self.name = name
        self.config = config
        self.timeout = timeout
        self.check_timeout = min(timeout, config.health.timeout_seconds)
        self.view = ClusterView()
        health = config.health
        self.health = ClusterHealth(name, health.down_after_failures, health.up_after_successes)
        self.canary = Canary(name, config, health.canary_topic) if health.canary_topic else None
        self.api_versions: dict[int, VersionRange] = {}
        self.coordinators: Coordinators = Coordinators(self)
        self._password = config.sasl.password.resolve() if config.sasl else None
        uses_tls = config.security_protocol.endswith("SSL")
        self._ssl = cluster_ssl_context(config) if uses_tls else None
        self._control: UpstreamSession = UpstreamSession(self)
        self._last_answered: int | None = None
        self._credentials_refused = False
        self._refreshing: asyncio.Future[None] | None = None
        self._last_refresh = float("-inf")
        self._background: set[asyncio.Future[Any]] = set()
        self._wake = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<ClusterPool {self.name} {','.join(self.config.bootstrap_servers)}>"

    async def start(self, *, first_check: bool = True) -> None:
        """Check the cluster once (unless ``first_check`` is False: a standby cluster
        must not delay the start), then keep checking it in the background.

        An unreachable cluster does not stop the gateway: it starts not ready and
        serves as soon as a check succeeds.
        """
        if first_check:
            with contextlib.suppress(UpstreamError):
                await self.check()
        self._watcher = asyncio.ensure_future(self._watch())

    def describe(self, role: str) -> dict[str, object]:
        """The cluster's health as ``GET /clusters`` shows it (no address, no secret
        beyond what check failures name: broker ids and addresses for operators)."""
        health = self.health
        return {
            "name": self.name,
            "role": role,
            "state": health.state.value,
            "reason": health.reason,
            "for_seconds": round(time.monotonic() - health.since, 1),
            "brokers": len(self.view.brokers),
            "checked_at": health.checked_at,
            "check_seconds": _rounded(health.check_seconds),
            "canary_seconds": _rounded(health.canary_seconds),
            "canary_topic": self.canary.topic if self.canary is not None else None,
            "failures_in_a_row": health.failures,
            "successes_in_a_row": health.successes,
            "down_after_failures": health.down_after,
            "up_after_successes": health.up_after,
            "recoveries": health.recoveries,
        }

    async def close(self) -> None:
        tasks = [t for t in (self._watcher, self._refreshing, *self._background) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._control.close()
        if self.canary is not None:
            await self.canary.close()

    def session(self) -> UpstreamSession:
        return UpstreamSession(self)

    async def connect(
        self, host: str, port: int, budget: float | None = None
    ) -> AIOKafkaConnection:
        """Open an authenticated connection to one broker.

        When the cluster refuses the gateway's credentials, the secret is read again
        from its source, so that a password rotated in its file or variable is used
        from the next attempt on, without a restart.
        """
        sasl = self.config.sasl
        try:
            return await self._connect(host, port, budget)
        except UpstreamUnavailable as exc:
            if sasl is not None and isinstance(exc.__cause__, _AUTH_ERRORS):
                self._reread_secret()
                # The check's own connections were opened with the old credentials:
                # the next check logs in afresh, so that health tells the truth.
                self._credentials_refused = True
                self.report_failure()
            raise

    def _reread_secret(self) -> None:
        assert self.config.sasl is not None
        try:
            self._password = self.config.sasl.password.resolve()
        except ConfigError as exc:
            log.warning("cluster %s: credentials refused and not re-read: %s", self.name, exc)

    async def _connect(self, host: str, port: int, budget: float | None) -> AIOKafkaConnection:
        sasl = self.config.sasl
        with map_errors(f"cluster {self.name} connect {host}:{port}"):
            return await asyncio.wait_for(
                create_conn(
                    host,
                    port,
                    client_id=_GATEWAY_CLIENT_ID,
                    request_timeout_ms=_CONNECTION_TIMEOUT_MS,
                    ssl_context=self._ssl,
                    security_protocol=self.config.security_protocol,
                    sasl_mechanism=sasl.mechanism if sasl else None,
                    sasl_plain_username=sasl.username if sasl else None,
                    sasl_plain_password=self._password,
                ),
                self.timeout if budget is None else budget,
            )

    # -- health -----------------------------------------------------------------------

    async def check(self) -> None:
        """Read the layout, ask every other broker it lists for its API versions, then
        send the canary round trip; the outcome sets :attr:`health`. Raises
        UpstreamError when nothing answered."""
        started = time.monotonic()
        canary_seconds: float | None = None
        try:
            if self._credentials_refused:
                self._credentials_refused = False
                self._control.reset()
            await self.refresh()
            unreachable: dict[int, str] = {}
            others = [n for n in self.view.brokers if n != self._last_answered]
            results = await asyncio.gather(
                *(self._ping(node) for node in others), return_exceptions=True
            )
            for node, result in zip(others, results, strict=True):
                if isinstance(result, UpstreamError):
                    unreachable[node] = str(result)
                elif isinstance(result, BaseException):
                    raise result
            canary_failure: str | None = None
            if self.canary is not None:
                try:
                    # Its first round trip also creates the topic and logs in twice.
                    canary_seconds = await self.canary.round_trip(
                        len(self.view.brokers), 2 * self.check_timeout
                    )
                except CanaryFailed as exc:
                    canary_failure = exc.reason
            self.health.checked(unreachable, canary_failure)
        finally:
            self.health.timed(time.monotonic() - started, canary_seconds)

    async def _ping(self, node: int) -> None:
        conn = await self._control.connection(node, self.check_timeout)
        await self._control.send_on(conn, self._api_versions_request(), None, self.check_timeout)

    def report_failure(self) -> None:
        """A request failed for want of a broker: check the cluster soon."""
        self._wake.set()

    async def _watch(self) -> None:
        backoff = Backoff()
        interval = self.config.health.interval_seconds
        while True:
            try:
                await self.check()
                backoff.reset()
                delay = interval
            except UpstreamError:
                delay = backoff.next()
            except Exception:
                log.exception("cluster %s: health check failed unexpectedly", self.name)
                delay = backoff.next()
            if self.health.settling:
                # Counting towards a threshold: the next check decides sooner.
                delay = min(delay, backoff.maximum)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    # -- layout -----------------------------------------------------------------------

    async def refresh(self) -> None:
        """Re-read the whole layout; concurrent callers share one request, and a new
        one starts at most every :data:`MIN_REFRESH_INTERVAL_S`."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._paced_refresh())
            self._refreshing.add_done_callback(_retrieve)
        await asyncio.shield(self._refreshing)

    def refresh_soon(self) -> None:
        """Start a refresh without waiting for it (its failure is in the health state)."""
        task = asyncio.ensure_future(self.refresh())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_retrieve)

    async def _paced_refresh(self) -> None:
        loop = asyncio.get_running_loop()
        wait = self._last_refresh + MIN_REFRESH_INTERVAL_S - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        self._last_refresh = loop.time()
        try:
            await self._refresh_from_any()
        except UpstreamError as exc:
            self.health.failed(str(exc))
            raise

    async def _refresh_from_any(self) -> None:
        """Ask the candidates in turn, starting the next one as soon as one fails or
        has not answered within :data:`STAGGER_S` (a paused broker holds a request
        until the timeout); the first usable answer wins, the rest are cancelled."""
        waiting = self._candidates()
        failures: list[str] = []
        pending: dict[asyncio.Future[Any], tuple[int | None, str, int]] = {}
        try:
            while waiting or pending:
                if waiting:
                    start = waiting.pop(0)
                    pending[asyncio.ensure_future(self._metadata_from(*start))] = start
                done, _ = await asyncio.wait(
                    pending,
                    timeout=STAGGER_S if waiting else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                for task in done:
                    if self._take(task, *pending.pop(task), failures):
                        return
        finally:
            for task in pending:
                task.cancel()
        raise UpstreamUnavailable(f"cluster {self.name}: no broker answered: {'; '.join(failures)}")

    def _take(
        self, task: asyncio.Future[Any], node: int | None, host: str, port: int, failures: list[str]
    ) -> bool:
        """Use a candidate's answer if it is a usable one; else note why not."""
        exc = task.exception()
        if isinstance(exc, UpstreamError):
            failures.append(f"{host}:{port}: {exc}")
            return False
        if exc is not None:
            raise exc
        if not self.view.update(task.result()):
            failures.append(f"{host}:{port}: the answer listed no broker")
            return False
        self._last_answered = node if node is not None else self._node_at(host, port)
        return True

    def _candidates(self) -> list[tuple[int | None, str, int]]:
        """Where to ask: the broker that answered last, the other known brokers, then
        the bootstrap servers not among them."""
        known = sorted(self.view.brokers.items(), key=lambda b: b[0] != self._last_answered)
        found: list[tuple[int | None, str, int]] = [(n, h, p) for n, (h, p) in known]
        addresses = set(self.view.brokers.values())
        found += [(None, h, p) for h, p in self.config.addresses if (h, p) not in addresses]
        return found

    def _node_at(self, host: str, port: int) -> int | None:
        return next((n for n, a in self.view.brokers.items() if a == (host, port)), None)

    async def _metadata_from(self, node: int | None, host: str, port: int) -> Any:
        budget = self.check_timeout
        if node is not None:
            conn = await self._control.connection(node, budget)
            if not self.api_versions:
                await self._learn_versions(conn)
            return await self._control.send_on(conn, self._metadata_request(), None, budget)
        conn = await self.connect(host, port, budget)
        try:
            # A bootstrap server may be a new broker or a new version: learn afresh.
            await self._learn_versions(conn)
            return await self._control.send_on(conn, self._metadata_request(), None, budget)
        finally:
            conn.close()

    async def _learn_versions(self, conn: AIOKafkaConnection) -> None:
        response = await self._control.send_on(
            conn, self._api_versions_request(), None, self.check_timeout
        )
        self.api_versions = {
            k.api_key: VersionRange(k.min_version, k.max_version) for k in response.api_keys
        }

    def _api_versions_request(self) -> Any:
        return codec.build(codec.request_schema(API_VERSIONS, 0))

    def metadata_version(self) -> int:
        supported = self.api_versions.get(METADATA, VersionRange(0, 0))
        return min(12, supported.max)

    def _metadata_request(self) -> Any:
        return codec.build(
            codec.request_schema(METADATA, self.metadata_version()),
            topics=None,
            allow_auto_topic_creation=False,
            include_cluster_authorized_operations=False,
            include_topic_authorized_operations=False,
        )

    def any_broker(self) -> int:
        """A broker to send cluster-wide requests to (the controller if known)."""
        if self.view.controller_id in self.view.brokers:
            return self.view.controller_id
        if not self.view.brokers:
            raise UpstreamUnavailable(f"cluster {self.name}: no broker known")
        return min(self.view.brokers)


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 4)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a background failure as seen: the health state already reports it."""
    if not task.cancelled():
        task.exception()
