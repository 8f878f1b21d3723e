"""Kafka brokers in KRaft combined mode: configuration, storage, start and readiness.

One broker process per cluster, started from the cached jars (`jars.py`) with a
`server.properties` rewritten on every start, and ready once it accepts a SCRAM login
and answers Metadata.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from gateway.dev import processes
from gateway.dev.credentials import (
    ADMIN_USER,
    SASL_MECHANISM,
    SCRAM_MECHANISMS,
    SECURITY_PROTOCOL,
    client_properties,
    ensure_password,
    jaas,
    redact,
    write_private,
)
from gateway.dev.errors import DevError
from gateway.dev.java import TOOL_JVM_OPTS
from gateway.dev.layout import HOST, Layout

log = logging.getLogger(__name__)

MAIN_CLASS = "kafka.Kafka"
START_TIMEOUT_S = 90.0
PROBE_TIMEOUT_S = 5.0
BROKER_JVM_OPTS = (
    "-Xms256m",
    "-Xmx1g",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)


def server_properties(lay: Layout, password: str) -> str:
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "listeners": f"SASL_PLAINTEXT://{HOST}:{lay.port},CONTROLLER://{HOST}:{lay.controller_port}",
        "advertised.listeners": f"SASL_PLAINTEXT://{HOST}:{lay.port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        "sasl.mechanism.inter.broker.protocol": SASL_MECHANISM,
        "sasl.enabled.mechanisms": ",".join(SCRAM_MECHANISMS),
        "controller.quorum.bootstrap.servers": f"{HOST}:{lay.controller_port}",
        "log.dirs": str(lay.data_dir),
        "num.partitions": "1",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Kafka's own default: clients written against a stock broker expect it.
        "auto.create.topics.enable": "true",
    }
    for mechanism in SCRAM_MECHANISMS:
        key = f"listener.name.sasl_plaintext.{mechanism.lower()}.sasl.jaas.config"
        props[key] = jaas(password)
    body = "\n".join(f"{key}={value}" for key, value in props.items())
    return f"# Written by `python -m gateway dev up`; rewritten on every start.\n{body}\n"


def broker_argv(java: str, classpath: str, lay: Layout, log4j: Path) -> list[str]:
    return [
        java,
        *BROKER_JVM_OPTS,
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp",
        classpath,
        MAIN_CLASS,
        str(lay.config),
    ]


def is_our_broker(pid: int | None, lay: Layout) -> bool:
    return processes.is_ours(pid, MAIN_CLASS, lay.config)


def stop_broker(pid: int, lay: Layout) -> None:
    processes.stop_pid(pid, MAIN_CLASS, lay.config)


# --------------------------------------------------------------------------- storage


def _new_cluster_id() -> str:
    # Same shape as Kafka's Uuid.randomUuid(): URL-safe base64 of 16 random bytes, no
    # padding, and never starting with "-" (it would read as a command-line flag).
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _format_storage(lay: Layout, java: str, classpath: str, password: str) -> None:
    if (lay.data_dir / "meta.properties").is_file():
        return
    # A half-finished earlier format would make StorageTool refuse; start clean.
    shutil.rmtree(lay.data_dir, ignore_errors=True)
    cmd = [java, "-Xmx256m", *TOOL_JVM_OPTS, "-cp", classpath, "kafka.tools.StorageTool"]
    cmd += ["format", "--standalone", "-t", _new_cluster_id(), "-c", str(lay.config)]
    for mechanism in SCRAM_MECHANISMS:
        cmd += ["--add-scram", f"{mechanism}=[name={ADMIN_USER},password={password}]"]
    log.info("formatting %s storage in %s", lay.name, lay.data_dir)
    result = subprocess.run(  # noqa: S603 - absolute java path, args built here
        cmd, capture_output=True, text=True, timeout=300, check=False
    )
    if result.returncode != 0 or not (lay.data_dir / "meta.properties").is_file():
        shutil.rmtree(lay.data_dir, ignore_errors=True)
        output = redact((result.stdout + result.stderr).strip(), password)
        raise DevError(f"formatting {lay.name} failed ({result.returncode}): {output}")


def prepare(lay: Layout, java: str, classpath: str) -> str:
    """Write the cluster's config files, format its storage if new; return the password."""
    lay.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    lay.root.chmod(0o700)
    password = ensure_password(lay.password_file, [lay.data_dir])
    write_private(lay.config, server_properties(lay, password))
    write_private(lay.client_config, client_properties(password))
    _format_storage(lay, java, classpath, password)
    return password


# --------------------------------------------------------------------------- readiness


async def _probe(port: int, password: str) -> int:
    """Log in with SCRAM and fetch metadata; returns the number of brokers seen."""
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
    return len(response.brokers)


async def wait_ready(lay: Layout, pid: int, password: str, offset: int, deadline: float) -> None:
    """Return once the broker answers a SCRAM login; raise with its log's tail if it exits."""
    started = time.monotonic()
    last_error = "no answer yet"
    while True:
        if not is_our_broker(pid, lay):
            tail = redact(processes.log_tail(lay.log_file, offset), password)
            raise DevError(f"{lay.name} broker (pid {pid}) exited; end of {lay.log_file}:\n{tail}")
        try:
            if await _probe(lay.port, password) > 0:
                return
            last_error = "metadata listed no brokers"
        except Exception as err:  # any failure here just means "not ready yet"
            last_error = redact(f"{type(err).__name__}: {err}", password)
        if time.monotonic() >= deadline:
            tail = redact(processes.log_tail(lay.log_file, offset), password)
            waited = time.monotonic() - started
            raise DevError(
                f"{lay.name} not ready on {HOST}:{lay.port} after {waited:.0f}s "
                f"({last_error}); end of {lay.log_file}:\n{tail}"
            )
        await asyncio.sleep(0.5)
