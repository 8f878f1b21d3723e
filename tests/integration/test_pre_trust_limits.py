"""Before a client is trusted it can cost the gateway only bounded memory, time and CPU.

Measured from outside, against a gateway run as its own process (so that its RSS and
CPU time are its own, not the test's clients'):

- 1,000 wrong SASL/PLAIN passwords, 200 at a time, from 127.0.0.2: other clients keep
  producing and logging in, their login median stays within twice its quiet median,
  and only a bounded number of the attacker's passwords are ever hashed;
- 200 connections each sending 60 MiB of a declared 100 MiB frame: the gateway's RSS
  stays under the request budget plus a stated overhead;
- 300 connections trickling a byte every 2 s without authenticating: each is closed
  at the authentication deadline while another client's produce latency stays normal;
- connections beyond the per-address limit are refused at accept, counted, and
  logged once.

Figures (medians, CPU seconds, RSS) are printed (``pytest -s``) and never asserted
as absolute times.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import struct
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from gateway import dev
from gateway.identity.passwords import hash_password
from tests.integration.clients import ClientError, Endpoint, acreate_topic, unique_topic
from tests.integration.clients.probes import (
    LoginProbe,
    ProduceProbe,
    attempt_plain_login,
    plain_login,
    plain_login_frames,
)
from tests.integration.conftest import (
    SessionLog,
    free_port,
    gateway_config_data,
    gateway_subprocess,
    running_gateway,
)

pytestmark = pytest.mark.integration

MiB = 1 << 20
USER = "pre-trust-user"
PASSWORD = "pre-trust-password"  # noqa: S105 - a gateway test user, not a secret


def report(name: str, figures: dict[str, Any]) -> None:
    print(f"\n[{name}] " + ", ".join(f"{k}={v}" for k, v in figures.items()), flush=True)


# -- the gateway as its own process -----------------------------------------------------


@dataclass
class GatewayProcess:
    process: subprocess.Popen[bytes]
    plain: Endpoint
    sasl: Endpoint
    admin_url: str
    log_path: Path

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.process.pid)

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(f"{self.admin_url}/metrics", timeout=10) as answer:  # noqa: S310
            text = answer.read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    async def ametric(self, name: str, **labels: str) -> float:
        return await asyncio.to_thread(self.metric, name, **labels)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@contextlib.asynccontextmanager
async def gateway_process(
    cluster: dev.ClusterInfo, tmp_path: Path, **limits: object
) -> AsyncIterator[GatewayProcess]:
    """``python -m gateway run`` in front of ``cluster``, with ``USER`` (hashed with
    the default PBKDF2 cost, as in production) added; stopped with SIGTERM on exit."""
    user = {"name": USER, "password_hash": hash_password(PASSWORD)}
    data, ports = gateway_config_data(cluster, users=[user], **limits)
    async with gateway_subprocess(data, ports["admin"], tmp_path) as running:
        yield GatewayProcess(
            process=running.process,
            plain=Endpoint(f"127.0.0.1:{ports['plain']}"),
            sasl=Endpoint(
                f"127.0.0.1:{ports['sasl']}",
                security_protocol="SASL_PLAINTEXT",
                sasl_mechanism="PLAIN",
                username=USER,
                password=PASSWORD,
            ),
            admin_url=running.admin_url,
            log_path=running.log_path,
        )


def within_twice(during: float, quiet: float) -> bool:
    return during <= 2 * quiet


# -- 1,000 wrong passwords --------------------------------------------------------------

ATTEMPTS = 1000
PARALLEL = 200
ATTACKER = "127.0.0.2"
# The gateway's defaults (Kafka-like: a 1 s delay on every failure).
FAILURES_PER_MINUTE = 20
CHECKS_PER_ADDRESS = 2


async def _burst(ep: Endpoint) -> dict[str, int]:
    """ATTEMPTS wrong-password logins from ATTACKER, PARALLEL at a time; outcome counts."""
    outcomes: dict[str, int] = {}
    queue = iter(range(ATTEMPTS))

    async def attacker() -> None:
        for _ in queue:
            try:
                outcome = await attempt_plain_login(ep, USER, "not-the-password", ATTACKER)
            except OSError as exc:
                outcome = f"connect failed: {exc.strerror}"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1

    await asyncio.gather(*(attacker() for _ in range(PARALLEL)))
    return outcomes


async def test_wrong_password_burst_leaves_other_clients_producing_and_logging_in(
    primary: dev.ClusterInfo, tmp_path: Path
) -> None:
    async with gateway_process(
        primary,
        tmp_path,
        failed_authentications_per_address=FAILURES_PER_MINUTE,
        failed_authentication_delay_seconds=1.0,
        authentications_per_address=CHECKS_PER_ADDRESS,
    ) as gw:
        topic = unique_topic("auth-burst")
        await acreate_topic(gw.plain, topic, 1)
        logins = LoginProbe(gw.sasl)
        producer = ProduceProbe(gw.sasl, topic)
        logins.start()
        producer.start()
        try:
            started = time.monotonic()
            cpu_start = gw.cpu_seconds()
            await asyncio.sleep(8)  # the quiet period
            quiet_end = time.monotonic()
            cpu_before = gw.cpu_seconds()
            outcomes = await _burst(gw.sasl)
            burst_end = time.monotonic()
            cpu = gw.cpu_seconds() - cpu_before
        finally:
            logins.stop()
            producer.stop()

        quiet_login = logins.median_between(started, quiet_end)
        burst_login = logins.median_between(quiet_end, burst_end)
        during = logins.between(quiet_end, burst_end)
        checked = await gw.ametric(
            "gateway_authentication_failures_total",
            listener="sasl",
            mechanism="PLAIN",
            reason="bad_password",
        )
        limited = await gw.ametric(
            "gateway_authentication_failures_total",
            listener="sasl",
            mechanism="PLAIN",
            reason="rate_limited",
        )
        report(
            "wrong-password burst",
            {
                "outcomes": outcomes,
                "burst_s": round(burst_end - quiet_end, 2),
                "gateway_cpu_s": round(cpu, 2),
                "gateway_cpu_quiet_s": round(cpu_before - cpu_start, 2),
                "quiet_s": round(quiet_end - started, 2),
                "quiet_login_median_ms": round(quiet_login * 1000, 1),
                "burst_login_median_ms": round(burst_login * 1000, 1),
                "burst_login_max_ms": round(max(during) * 1000, 1),
                "logins_during_burst": len(during),
                "produce_quiet_median_ms": round(
                    producer.median_between(started, quiet_end) * 1000, 2
                ),
                "produce_burst_median_ms": round(
                    producer.median_between(quiet_end, burst_end) * 1000, 2
                ),
                "passwords_checked": checked,
                "refused_unchecked": limited,
            },
        )
        assert "accepted" not in outcomes
        assert sum(outcomes.values()) == ATTEMPTS
        assert set(outcomes) <= {"refused", "closed"}, outcomes
        assert logins.errors == [] and producer.errors == []
        assert producer.between(quiet_end, burst_end), "no record produced during the burst"
        assert within_twice(burst_login, quiet_login)
        # The attacker's passwords were hashed only until its failure budget ran out
        # (plus the checks already running when it did).
        assert checked <= FAILURES_PER_MINUTE + CHECKS_PER_ADDRESS
        assert limited > 0


# -- partial giant frames ---------------------------------------------------------------

BUDGET = 64 * MiB
GIANTS = 200
DECLARED = 100 * MiB
SENT = 60 * MiB
# RSS allowed beyond the budget: per waiting connection the read lookahead (64 KiB)
# and the stream reader's buffer (up to 128 KiB plus one 256 KiB socket read), and
# the allocator's slack for the frame being read.
OVERHEAD = GIANTS * (64 + 128 + 256) * 1024 + 16 * MiB
_CHUNK = b"\x00" * MiB


async def _giant(ep: Endpoint) -> int:
    """Declare a DECLARED-byte frame and send SENT bytes of it (or until the gateway
    closes the connection); how many bytes the socket took."""
    host, port = ep.bootstrap.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    sent = 0
    try:
        writer.write(struct.pack(">i", DECLARED))
        while sent < SENT:
            writer.write(_CHUNK)
            await writer.drain()
            sent += len(_CHUNK)
        await reader.read(1)  # hold the connection until the gateway closes it
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return sent


async def test_partial_giant_frames_keep_the_gateways_memory_within_the_request_budget(
    primary: dev.ClusterInfo, tmp_path: Path
) -> None:
    async with gateway_process(
        primary, tmp_path, queued_max_request_bytes=BUDGET, frame_timeout_seconds=3
    ) as gw:
        topic = unique_topic("giants")
        await acreate_topic(gw.plain, topic, 1)
        rss_before = gw.rss()
        senders = [asyncio.ensure_future(_giant(gw.plain)) for _ in range(GIANTS)]
        peak = rss_before
        reserved_peak = 0.0
        for _ in range(60):  # 15 s: several connections get the budget in turn
            await asyncio.sleep(0.25)
            peak = max(peak, gw.rss())
            reserved_peak = max(reserved_peak, await gw.ametric("gateway_request_bytes_reserved"))
        waits = await gw.ametric("gateway_request_budget_waits_total")
        timed_out = await gw.ametric(
            "gateway_connections_closed_total", listener="plain", reason="frame timeout"
        )
        for sender in senders:
            sender.cancel()
        await asyncio.gather(*senders, return_exceptions=True)

        producer = ProduceProbe(gw.plain, topic)
        producer.start()
        await asyncio.sleep(1)
        producer.stop()
        report(
            "partial giant frames",
            {
                "rss_before_mib": round(rss_before / MiB, 1),
                "rss_peak_mib": round(peak / MiB, 1),
                "growth_mib": round((peak - rss_before) / MiB, 1),
                "allowed_mib": round((BUDGET + OVERHEAD) / MiB, 1),
                "reserved_peak_mib": round(reserved_peak / MiB, 1),
                "budget_waits": waits,
                "frame_timeouts": timed_out,
            },
        )
        assert peak - rss_before <= BUDGET + OVERHEAD
        assert reserved_peak <= BUDGET
        assert waits >= GIANTS / 2  # most connections had to wait for the budget
        assert timed_out >= 1  # and the budget passed from one to the next
        assert producer.samples and producer.errors == []


# -- trickling connections --------------------------------------------------------------

TRICKLERS = 300
TRICKLER = "127.0.0.3"
AUTH_DEADLINE = 3.0


async def _trickle(ep: Endpoint, started: float) -> float | None:
    """Send a login one byte every 2 s from TRICKLER; seconds from connect until the
    gateway closed the connection (None if it never did within 30 s)."""
    host, port = ep.bootstrap.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port), local_addr=(TRICKLER, 0))
    connected = time.monotonic()
    closed = asyncio.ensure_future(reader.read(1))
    try:
        for byte in plain_login_frames(USER, PASSWORD):
            writer.write(bytes([byte]))
            done, _ = await asyncio.wait({closed}, timeout=2)
            if done:
                return time.monotonic() - connected
            if time.monotonic() - started > 30:
                return None
        return None
    except (ConnectionError, OSError):
        return time.monotonic() - connected
    finally:
        closed.cancel()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_trickling_unauthenticated_connections_are_closed_at_the_deadline(
    primary: dev.ClusterInfo, tmp_path: Path
) -> None:
    async with gateway_process(
        primary, tmp_path, authentication_timeout_seconds=AUTH_DEADLINE
    ) as gw:
        topic = unique_topic("tricklers")
        await acreate_topic(gw.plain, topic, 1)
        producer = ProduceProbe(gw.sasl, topic)
        producer.start()
        try:
            quiet_from = time.monotonic()
            await asyncio.sleep(5)
            trickle_from = time.monotonic()
            closed_after = await asyncio.gather(
                *(_trickle(gw.sasl, trickle_from) for _ in range(TRICKLERS))
            )
            trickle_end = time.monotonic()
        finally:
            producer.stop()
        timeouts = await gw.ametric(
            "gateway_connections_closed_total", listener="sasl", reason="authentication timeout"
        )
        delays = [d for d in closed_after if d is not None]
        quiet = producer.median_between(quiet_from, trickle_from)
        during = producer.median_between(trickle_from, trickle_end)
        report(
            "trickling connections",
            {
                "closed_by_gateway": len(delays),
                "closed_after_s_min": round(min(delays), 2) if delays else None,
                "closed_after_s_median": round(statistics.median(delays), 2) if delays else None,
                "closed_after_s_max": round(max(delays), 2) if delays else None,
                "authentication_timeouts": timeouts,
                "produce_quiet_median_ms": round(quiet * 1000, 2),
                "produce_during_median_ms": round(during * 1000, 2),
                "produced_during": len(producer.between(trickle_from, trickle_end)),
            },
        )
        assert len(delays) == TRICKLERS
        # Closed at the authentication deadline, not by the (60 s) frame deadline.
        assert timeouts == TRICKLERS
        assert producer.errors == []
        assert within_twice(during, quiet)


# -- connections per address ------------------------------------------------------------


async def _open_from(
    ep: Endpoint, source: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = ep.bootstrap.rsplit(":", 1)
    return await asyncio.open_connection(host, int(port), local_addr=(source, 0))


async def _closed_at_once(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 10) == b""
    except ConnectionError:
        return True


def _refused() -> float:
    labels = {"listener": "sasl", "reason": "too many connections"}
    return REGISTRY.get_sample_value("gateway_connections_refused_total", labels) or 0.0


async def _login_once_admitted(ep: Endpoint, source: str) -> float:
    """Log in from ``source``, retrying while the gateway has not yet seen a closed
    connection of that address go."""
    for _ in range(50):
        with contextlib.suppress(ClientError, ConnectionError):
            return await asyncio.to_thread(plain_login, ep, source=source)
        await asyncio.sleep(0.1)
    raise AssertionError(f"no login from {source}")


async def test_connections_over_the_per_address_limit_are_refused_at_accept(
    primary: dev.ClusterInfo, session_log: SessionLog
) -> None:
    source = "127.0.0.4"
    async with running_gateway(primary, max_connections_per_address=5) as gw:
        before = _refused()
        held = [await _open_from(gw.sasl, source) for _ in range(5)]
        extra = [await _open_from(gw.sasl, source) for _ in range(40)]

        assert all([await _closed_at_once(reader) for reader, _ in extra])
        assert _refused() == before + 40
        refusals = [line for line in session_log.lines if f"connections from {source}" in line]
        assert len(refusals) == 1, refusals
        # Another address is served; the limited one again once it has closed one.
        assert await asyncio.to_thread(plain_login, gw.sasl) > 0
        for _, writer in [*held[:1], *extra]:
            writer.close()
        assert await _login_once_admitted(gw.sasl, source) > 0
        for _, writer in held[1:]:
            writer.close()


async def test_a_tls_listener_refuses_connections_over_the_limit_before_their_handshake(
    primary: dev.ClusterInfo,
) -> None:
    certs = dev.dev_certificates(dev.tls_dir(dev.default_run_dir()))
    server = {"cert_file": str(certs.server.cert_file), "key_file": str(certs.server.key_file)}
    listener = {
        "name": "tls-limited",
        "bind": f"127.0.0.1:{free_port()}",
        "security_protocol": "SSL",
        "tls": server,
    }
    source = "127.0.0.5"
    labels = {"listener": "tls-limited", "reason": "too many connections"}
    async with running_gateway(primary, listeners=[listener], max_connections_per_address=2) as gw:
        host, port = gw.gateway.bound["tls-limited"]
        endpoint = Endpoint(f"{host}:{port}")
        before = REGISTRY.get_sample_value("gateway_connections_refused_total", labels) or 0.0
        # Two connections that never start their handshake hold the address's share.
        held = [await _open_from(endpoint, source) for _ in range(2)]
        reader, writer = await _open_from(endpoint, source)

        assert await _closed_at_once(reader)
        assert REGISTRY.get_sample_value("gateway_connections_refused_total", labels) == before + 1
        for _, w in [*held, (reader, writer)]:
            w.close()
