"""Fixtures shared by the integration tests: real Kafka clusters and a real gateway.

The two dev clusters are started once per test session with the product's own
``gateway.dev.up()`` (and stopped at the end only if this session started them).
The gateway runs in-process on the session's event loop; client libraries run in
worker threads so that the loop keeps serving them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import dev
from gateway.config import Config, parse_config
from gateway.identity.passwords import hash_password
from gateway.server.app import Gateway
from tests.integration.clients import Endpoint

CLIENT_USER = "it-client"
CLIENT_PASSWORD = "it-client-password"  # noqa: S105 - a gateway test user, not a secret
# Admin API tokens of every test gateway: one holding every role, one holding none.
ADMIN_TOKEN = "it-admin-token-0b6e1f9d4c2a7e58"  # noqa: S105 - test tokens, not secrets
NO_ROLE_TOKEN = "it-no-role-token-93a7c5d1e0f2b846"  # noqa: S105


def client_endpoint(sasl_port: int) -> Endpoint:
    """The test user (CLIENT_USER, SASL/PLAIN) on a test gateway's ``sasl`` listener."""
    return Endpoint(
        f"127.0.0.1:{sasl_port}",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        username=CLIENT_USER,
        password=CLIENT_PASSWORD,
    )


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``runs_last`` run after every other test of the session."""
    items.sort(key=lambda item: item.get_closest_marker("runs_last") is not None)


def admin_get(
    url: str, token: str | None = None, context: ssl.SSLContext | None = None
) -> tuple[int, dict[str, str], str]:
    """GET an admin API URL (blocking): status, headers and body text, errors included."""
    request = urllib.request.Request(url)  # noqa: S310 - a test URL
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:  # noqa: S310
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class GatewayUnderTest:
    gateway: Gateway
    config: Config
    plain: Endpoint  # no authentication
    sasl: Endpoint  # SASL/PLAIN as CLIENT_USER
    admin_url: str
    upstream_password: str
    admin_token: str  # holds every admin role
    no_role_token: str  # valid, but holds no role


class SessionLog(logging.Handler):
    """Keeps every log line of the session, for the secret-leak checks."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        # kafka-python is only ever a client here (the gateway does not use it), and it
        # logs its own requests at DEBUG, its SASL token included: that is the client's
        # log, not the gateway's.
        if record.name == "kafka" or record.name.startswith("kafka."):
            return
        self.lines.append(self.format(record))


# Topics and groups whose names match are mirrored to the secondary.
MIRRORED = "mirror-.*"


@pytest.fixture(scope="session")
def session_log() -> Iterator[SessionLog]:
    handler = SessionLog()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    # Everything, including aiokafka's per-request debug lines, is searched for leaks.
    root.setLevel(logging.DEBUG)
    logging.getLogger("aiokafka").setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old_level)


@pytest.fixture(scope="session")
def clusters() -> Iterator[dict[str, dev.ClusterInfo]]:
    was_running = {info.name for info in dev.status() if info.pid is not None}
    # Three primary nodes, so that routing to several leaders, leader moves and
    # coordinator moves are exercised (GATEWAY_DEV_PRIMARY_BROKERS=1 for one).
    brokers = int(os.environ.get("GATEWAY_DEV_PRIMARY_BROKERS", "3"))
    # MirrorMaker 2 mirrors only the tests' `mirror-` topics and groups, not the
    # hundreds of topics the other tests create.
    os.environ.setdefault(dev.MIRROR_TOPICS_ENV, MIRRORED)
    os.environ.setdefault(dev.MIRROR_GROUPS_ENV, MIRRORED)
    infos = {info.name: info for info in dev.up(primary_brokers=brokers)}
    yield infos
    if not was_running:
        dev.down()


@pytest.fixture(scope="session")
def schema_registry(clusters: dict[str, dev.ClusterInfo]) -> str:
    """The URL of the dev schema registry (Karapace, started by `dev up` beside the
    clusters). Where its folder is absent the tests that need it are skipped, and fail
    under CI, which must run them."""
    if dev.karapace_dir() is None:
        reason = (
            "Karapace is absent (../shared/tools/karapace next to the repository, or "
            "$GATEWAY_KARAPACE_DIR)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI runs the schema registry tests")
        pytest.skip(reason)
    run = dev.default_run_dir()
    info = dev.registry_status(run)
    if info is None or not info.running:
        # `dev up` logs a registry that did not start; here it fails what needs it.
        info = dev.start_registry(run, clusters["primary"])
    assert info is not None
    return info.url


@pytest.fixture(scope="session")
def mirror(clusters: dict[str, dev.ClusterInfo]) -> dev.MirrorInfo:
    """MirrorMaker 2 from the primary to the secondary (started by `dev up`, which logs
    one that did not start; here that fails what needs it)."""
    run = dev.default_run_dir()
    info = dev.mirror_status(run)
    if info is None or not info.running:
        info = dev.start_mirror(run, clusters["primary"], clusters["secondary"])
    return info


@pytest.fixture(scope="session")
def primary(clusters: dict[str, dev.ClusterInfo]) -> dev.ClusterInfo:
    return clusters["primary"]


def cluster_endpoint(info: dev.ClusterInfo, bootstrap: str | None = None) -> Endpoint:
    """A dev cluster itself (at ``bootstrap``, else its first node), with the gateway's
    own SCRAM credentials."""
    return Endpoint(
        bootstrap or info.bootstrap,
        security_protocol=info.security_protocol,
        sasl_mechanism=info.sasl_mechanism,
        username=info.username,
        password=dev.read_password(info),
    )


@pytest.fixture(scope="session")
def secondary_direct(clusters: dict[str, dev.ClusterInfo]) -> Endpoint:
    """The secondary cluster itself, with the gateway's own SCRAM credentials."""
    return cluster_endpoint(clusters["secondary"])


@pytest.fixture(scope="session")
def direct(primary: dev.ClusterInfo) -> Endpoint:
    """The primary cluster itself, with the gateway's own SCRAM credentials."""
    return cluster_endpoint(primary)


def gateway_config(
    primary: dev.ClusterInfo,
    *,
    users: Sequence[Mapping[str, Any]] = (),
    identity: Mapping[str, Any] | None = None,
    sasl_mechanisms: Sequence[str] | None = None,
    listeners: Sequence[Mapping[str, Any]] = (),
    admin: Mapping[str, Any] | None = None,
    policy_dir: Path | None = None,
    **limits: object,
) -> tuple[Config, dict[str, int]]:
    """A config in front of ``primary``: listeners ``plain`` and ``sasl`` (which offers
    ``sasl_mechanisms``, by default PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512) plus
    ``listeners`` (e.g. TLS ones), CLIENT_USER plus ``users``, the ``identity`` section,
    admin tokens ADMIN_TOKEN (every role) and NO_ROLE_TOKEN with ``admin`` merged into
    the admin section, the policy files of ``policy_dir`` (None: no policy, so
    every client may do what the upstream account may) and ``limits``."""
    data, ports = gateway_config_data(
        primary,
        users=users,
        identity=identity,
        sasl_mechanisms=sasl_mechanisms,
        listeners=listeners,
        admin=admin,
        policy_dir=policy_dir,
        **limits,
    )
    return parse_config(data, "integration-test", environ={}), ports


def cluster_section(info: dev.ClusterInfo) -> dict[str, Any]:
    """A dev cluster as the gateway config's ``clusters.<name>`` names it: its brokers
    and the admin's SCRAM login (the password by file)."""
    return {
        "bootstrap_servers": info.bootstrap_servers.split(","),
        "security_protocol": info.security_protocol,
        "sasl": {
            "mechanism": info.sasl_mechanism,
            "username": info.username,
            "password": {"file": info.password_file},
        },
    }


def gateway_config_data(
    primary: dev.ClusterInfo,
    *,
    users: Sequence[Mapping[str, Any]] = (),
    identity: Mapping[str, Any] | None = None,
    sasl_mechanisms: Sequence[str] | None = None,
    listeners: Sequence[Mapping[str, Any]] = (),
    admin: Mapping[str, Any] | None = None,
    policy_dir: Path | None = None,
    **limits: object,
) -> tuple[dict[str, Any], dict[str, int]]:
    """What :func:`gateway_config` validates, as a config file holds it (for a gateway
    run as its own process), and the ports it listens on."""
    mechanisms = {"sasl_mechanisms": list(sasl_mechanisms)} if sasl_mechanisms else {}
    ports = {"plain": free_port(), "sasl": free_port(), "admin": free_port()}
    data = {
        "gateway": {"node_id": 7, "cluster_id": "it-gateway"},
        "listeners": [
            {
                "name": "plain",
                "bind": f"127.0.0.1:{ports['plain']}",
                "security_protocol": "PLAINTEXT",
            },
            {
                "name": "sasl",
                "bind": f"127.0.0.1:{ports['sasl']}",
                "security_protocol": "SASL_PLAINTEXT",
                **mechanisms,
            },
            *listeners,
        ],
        "clusters": {
            # The canary's own clients would add three logins per gateway to every
            # test; test_cluster_health.py runs it.
            "primary": {**cluster_section(primary), "health": {"canary_topic": None}}
        },
        "users": [
            {"name": CLIENT_USER, "password_hash": hash_password(CLIENT_PASSWORD, 20_000)},
            *users,
        ],
        "identity": dict(identity or {}),
        "admin": {
            "bind": f"127.0.0.1:{ports['admin']}",
            "tokens": [
                {"name": "it-admin", "token_sha256": _sha256(ADMIN_TOKEN), "groups": ["it-ops"]},
                {"name": "it-nobody", "token_sha256": _sha256(NO_ROLE_TOKEN), "groups": []},
            ],
            "roles": {role: ["it-ops"] for role in ("operator", "approver", "auditor", "admin")},
            **(admin or {}),
        },
        "limits": {
            "shutdown_grace_seconds": 2,
            # Every test client connects from 127.0.0.1 and librdkafka retries refused
            # logins: the per-address failure limit and delay are tested on their own
            # (test_pre_trust_limits.py), not imposed on every test.
            "failed_authentications_per_address": 100_000,
            "failed_authentication_delay_seconds": 0.2,
            **limits,
        },
    }
    if policy_dir is not None:
        data["policy"] = {"dir": str(policy_dir)}
    return data, ports


@contextlib.asynccontextmanager
async def running_gateway(
    cluster: dev.ClusterInfo,
    *,
    users: Sequence[Mapping[str, Any]] = (),
    identity: Mapping[str, Any] | None = None,
    sasl_mechanisms: Sequence[str] | None = None,
    listeners: Sequence[Mapping[str, Any]] = (),
    admin: Mapping[str, Any] | None = None,
    policy_dir: Path | None = None,
    **limits: object,
) -> AsyncIterator[GatewayUnderTest]:
    """A gateway in front of ``cluster``, on free ports, stopped on exit (see
    ``gateway_config`` for ``users``, ``identity``, ``sasl_mechanisms``, ``listeners``,
    ``admin`` and ``policy_dir``)."""
    config, ports = gateway_config(
        cluster,
        users=users,
        identity=identity,
        sasl_mechanisms=sasl_mechanisms,
        listeners=listeners,
        admin=admin,
        policy_dir=policy_dir,
        **limits,
    )
    running = Gateway(config)
    await running.start()
    try:
        yield GatewayUnderTest(
            gateway=running,
            config=config,
            plain=Endpoint(f"127.0.0.1:{ports['plain']}"),
            sasl=Endpoint(
                f"127.0.0.1:{ports['sasl']}",
                security_protocol="SASL_PLAINTEXT",
                sasl_mechanism="PLAIN",
                username=CLIENT_USER,
                password=CLIENT_PASSWORD,
            ),
            admin_url=f"{'https' if config.admin.tls else 'http'}://127.0.0.1:{ports['admin']}",
            upstream_password=Path(cluster.password_file).read_text(encoding="utf-8").strip(),
            admin_token=ADMIN_TOKEN,
            no_role_token=NO_ROLE_TOKEN,
        )
    finally:
        await running.stop()


@pytest.fixture(scope="session")
async def gateway(
    primary: dev.ClusterInfo, session_log: SessionLog
) -> AsyncIterator[GatewayUnderTest]:
    async with running_gateway(primary) as running:
        yield running


@dataclass
class GatewaySubprocess:
    """``python -m gateway run`` started by :func:`gateway_subprocess`."""

    process: subprocess.Popen[bytes]
    admin_url: str
    log_path: Path


def _healthy(admin_url: str) -> bool:
    status, _, _ = admin_get(f"{admin_url}/healthz")
    return status == 200


@contextlib.asynccontextmanager
async def gateway_subprocess(
    data: dict[str, Any], admin_port: int, tmp_path: Path
) -> AsyncIterator[GatewaySubprocess]:
    """The gateway as its own process (signals, real start-up), with the config
    ``data``; ready once its admin API answers, stopped with SIGTERM on exit (SIGKILL
    after 30 s). Its output goes to ``tmp_path / "gateway.log"``."""
    config_path = tmp_path / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(data), encoding="utf-8")
    log_path = tmp_path / "gateway.log"
    root = Path(dev.__file__).resolve().parents[2]
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "gateway", "run", "--config", str(config_path)],
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    admin_url = f"http://127.0.0.1:{admin_port}"
    try:
        for _ in range(600):
            assert process.poll() is None, log_path.read_text(encoding="utf-8")
            with contextlib.suppress(OSError):
                if await asyncio.to_thread(_healthy, admin_url):
                    break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the gateway did not start")
        yield GatewaySubprocess(process, admin_url, log_path)
    finally:
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 30)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait, 10)
