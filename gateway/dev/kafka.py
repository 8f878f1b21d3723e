"""Kafka nodes of a dev cluster: prepare their storage, start, wait until ready, stop.

Each node is one `kafka.Kafka` process (broker and controller, KRaft combined mode),
started from the cached jars with a `server.properties` rewritten on every start
(`kafka_config.py`). A node is ready once it accepts a SCRAM login and lists itself
among the live brokers in a Metadata answer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from gateway.dev import processes
from gateway.dev.credentials import (
    ADMIN_USER,
    SASL_MECHANISM,
    SECURITY_PROTOCOL,
    client_properties,
    ensure_password,
    redact,
    write_private,
)
from gateway.dev.errors import DevError
from gateway.dev.jars import kafka_classpath, log4j_xml
from gateway.dev.java import java_executable
from gateway.dev.kafka_config import (
    MAIN_CLASS,
    broker_argv,
    format_argv,
    server_properties,
)
from gateway.dev.layout import HOST, ClusterLayout, NodeLayout
from gateway.dev.state import NodeInfo

log = logging.getLogger(__name__)

START_TIMEOUT_S = 90.0
PROBE_TIMEOUT_S = 5.0

T = TypeVar("T")


@dataclass
class Starting:
    """A node `up` or `start_node` is waiting for (or found already running)."""

    node: NodeLayout
    port: int
    pid: int
    password: str
    log_offset: int
    started_now: bool


# --------------------------------------------------------------------------- storage


def _new_cluster_id() -> str:
    # Same shape as Kafka's Uuid.randomUuid(): URL-safe base64 of 16 random bytes, no
    # padding, and never starting with "-" (it would read as a command-line flag).
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _formatted(node: NodeLayout) -> bool:
    return (node.data_dir / "meta.properties").is_file()


def _format_node(cmd: list[str], node: NodeLayout, password: str) -> None:
    # A half-finished earlier format would make StorageTool refuse; start clean.
    shutil.rmtree(node.data_dir, ignore_errors=True)
    log.info("formatting %s storage in %s", node.label, node.data_dir)
    result = subprocess.run(  # noqa: S603 - absolute java path, args built here
        cmd, capture_output=True, text=True, timeout=300, check=False
    )
    if result.returncode != 0 or not _formatted(node):
        shutil.rmtree(node.data_dir, ignore_errors=True)
        output = redact((result.stdout + result.stderr).strip(), password)
        raise DevError(f"formatting {node.label} failed ({result.returncode}): {output}")


def _format_storage(
    cluster: ClusterLayout, starting: Sequence[NodeLayout], java: str, classpath: str, pw: str
) -> None:
    """Format every node with one new cluster id, unless all are formatted already."""
    if all(_formatted(node) for node in cluster.nodes):
        return
    if len(starting) != len(cluster.nodes):
        missing = next(n for n in cluster.nodes if not _formatted(n))
        raise DevError(
            f"{missing.label} has no storage in {missing.data_dir} while other nodes run; "
            "run `python -m gateway dev down`, then `up` formats the cluster afresh"
        )
    cluster_id = _new_cluster_id()
    size = len(cluster.nodes)
    with ThreadPoolExecutor(max_workers=size) as pool:
        futures = [
            pool.submit(_format_node, format_argv(java, classpath, n, size, cluster_id, pw), n, pw)
            for n in cluster.nodes
        ]
        for future in futures:
            future.result()


def _prepare(
    cluster: ClusterLayout, starting: Sequence[tuple[NodeLayout, int]], java: str, cp: str
) -> str:
    """Write the config files of the nodes to start, format storage if new; the password."""
    cluster.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    cluster.root.chmod(0o700)
    password = ensure_password(cluster.password_file, [n.data_dir for n in cluster.nodes])
    write_private(cluster.client_config, client_properties(password))
    for node, port in starting:
        node.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(node.config, server_properties(cluster, node, port, password))
    _format_storage(cluster, [n for n, _ in starting], java, cp, password)
    return password


# --------------------------------------------------------------------------- start / stop


def _check_ports_free(node: NodeLayout, port: int) -> None:
    for candidate in (port, node.controller_port):
        if processes.port_answers(HOST, candidate):
            raise DevError(f"{HOST}:{candidate} for {node.label} is in use by another process")


def start_nodes(
    run_dir: Path, plan: Sequence[tuple[ClusterLayout, Sequence[tuple[NodeLayout, int]]]]
) -> list[Starting]:
    """Start the given nodes of each cluster, each with its client listener on its port."""
    java = java_executable()
    classpath = kafka_classpath()
    for _, starting in plan:
        for node, port in starting:
            _check_ports_free(node, port)
    log4j = run_dir / "broker-log4j2.xml"
    write_private(log4j, log4j_xml("INFO", "SYSTEM_OUT"))
    # Formatting starts a JVM per node; prepare the clusters at once.
    with ThreadPoolExecutor(max_workers=len(plan) or 1) as pool:
        passwords = list(pool.map(lambda item: _prepare(item[0], item[1], java, classpath), plan))
    result = []
    for (cluster, starting), password in zip(plan, passwords, strict=True):
        for node, port in starting:
            offset = processes.open_log(node.log_file, "broker")
            argv = broker_argv(java, classpath, node, len(cluster.nodes), log4j)
            pid = processes.spawn(argv, node.log_file)
            log.info("started %s (pid %d) on port %d, log %s", node.label, pid, port, node.log_file)
            result.append(Starting(node, port, pid, password, offset, started_now=True))
    return result


def stop_nodes(nodes: Sequence[NodeInfo], timeout: float = processes.STOP_TIMEOUT_S) -> None:
    """Stop nodes gracefully, all at once, and wait for them to exit (SIGKILL on timeout).

    All at once, because a node's controlled shutdown needs a controller quorum: stopped
    one by one, the last nodes of a three-node cluster would wait for a quorum that left.
    """
    procs = [(n.pid, Path(n.config_file)) for n in nodes if n.pid is not None]
    for pid, _ in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            # A paused node handles SIGTERM only once it runs again.
            os.kill(pid, signal.SIGCONT)
    processes.wait_exit(procs, MAIN_CLASS, timeout)


# --------------------------------------------------------------------------- readiness


async def _probe(port: int, password: str) -> set[int]:
    """Log in with SCRAM and fetch metadata; returns the ids of the live brokers listed."""
    from aiokafka.conn import create_conn
    from aiokafka.protocol.metadata import MetadataRequest

    conn: Any = await asyncio.wait_for(
        create_conn(
            HOST,
            port,
            client_id="gateway-dev-probe",
            request_timeout_ms=int(PROBE_TIMEOUT_S * 1000),
            security_protocol=SECURITY_PROTOCOL,
            sasl_mechanism=SASL_MECHANISM,
            sasl_plain_username=ADMIN_USER,
            sasl_plain_password=password,
        ),
        PROBE_TIMEOUT_S * 2,
    )
    try:
        response: Any = await conn.send(MetadataRequest([]))
    finally:
        conn.close()
    return {int(broker[0]) for broker in response.brokers}


async def _wait_ready(s: Starting, deadline: float) -> None:
    node = s.node
    started = time.monotonic()
    last_error = "no answer yet"
    while True:
        if not processes.is_ours(s.pid, MAIN_CLASS, node.config):
            tail = redact(processes.log_tail(node.log_file, s.log_offset), s.password)
            raise DevError(f"{node.label} (pid {s.pid}) exited; end of {node.log_file}:\n{tail}")
        try:
            if node.node_id in await _probe(s.port, s.password):
                return
            last_error = f"metadata does not list node {node.node_id} yet"
        except Exception as err:  # any failure here just means "not ready yet"
            last_error = redact(f"{type(err).__name__}: {err}", s.password)
        if time.monotonic() >= deadline:
            tail = redact(processes.log_tail(node.log_file, s.log_offset), s.password)
            waited = time.monotonic() - started
            raise DevError(
                f"{node.label} not ready on {HOST}:{s.port} after {waited:.0f}s "
                f"({last_error}); end of {node.log_file}:\n{tail}"
            )
        await asyncio.sleep(0.5)


def run_async(factory: Callable[[], Awaitable[T]]) -> T:
    """asyncio.run that also works when called from inside a running event loop."""

    async def runner() -> T:
        return await factory()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(runner())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, runner()).result()


def wait_ready(starting: Sequence[Starting], timeout: float) -> list[DevError | None]:
    """Wait for every node at once; per node, None once ready or the error that stopped it."""
    deadline = time.monotonic() + timeout

    async def wait_all() -> list[BaseException | None]:
        return await asyncio.gather(
            *(_wait_ready(s, deadline) for s in starting), return_exceptions=True
        )

    results = run_async(wait_all)
    errors: list[DevError | None] = []
    for result in results:
        if isinstance(result, DevError) or result is None:
            errors.append(result)
        else:
            errors.append(DevError(f"{type(result).__name__}: {result}"))
    return errors
