"""`up`, `down` and `status` of the primary and secondary dev clusters.

The only module that combines the others: it holds the run dir lock, reads and writes
state.json, and starts or stops brokers through `kafka.py`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from gateway.dev import kafka, processes
from gateway.dev.credentials import ensure_password, write_private
from gateway.dev.errors import DevError
from gateway.dev.jars import kafka_classpath, log4j_xml
from gateway.dev.java import java_executable
from gateway.dev.layout import HOST, Layout, default_run_dir, layouts
from gateway.dev.state import (
    ClusterInfo,
    cluster_info,
    locked,
    read_state,
    resolve_run_dir,
    write_state,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


def _run_async(factory: Callable[[], Awaitable[T]]) -> T:
    """asyncio.run that also works when called from inside a running event loop."""

    async def runner() -> T:
        return await factory()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(runner())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, runner()).result()


@dataclass
class _Pending:
    lay: Layout
    pid: int
    password: str
    log_offset: int
    started_now: bool


def _check_running(lay: Layout, info: ClusterInfo | None) -> int | None:
    """The pid of this cluster's live broker from a previous `up`, if any."""
    if info is None or not kafka.is_our_broker(info.pid, lay):
        return None
    if info.bootstrap != f"{HOST}:{lay.port}":
        raise DevError(
            f"{lay.name} is running on {info.bootstrap}, not {HOST}:{lay.port}; "
            "run `python -m gateway dev down` first"
        )
    return info.pid


def _check_ports_free(lay: Layout) -> None:
    for port in (lay.port, lay.controller_port):
        if processes.port_answers(HOST, port):
            raise DevError(f"{HOST}:{port} for {lay.name} is in use by another process")


def _start(run_dir: Path, to_start: list[Layout]) -> list[_Pending]:
    java = java_executable()
    classpath = kafka_classpath()
    for lay in to_start:
        _check_ports_free(lay)
    log4j = run_dir / "broker-log4j2.xml"
    write_private(log4j, log4j_xml("INFO", "SYSTEM_OUT"))
    # Formatting starts one JVM per cluster; do both at once.
    with ThreadPoolExecutor(max_workers=len(to_start) or 1) as pool:
        passwords = list(pool.map(lambda lay: kafka.prepare(lay, java, classpath), to_start))
    pending = []
    for lay, password in zip(to_start, passwords, strict=True):
        offset = processes.open_log(lay.log_file, "broker")
        pid = processes.spawn(kafka.broker_argv(java, classpath, lay, log4j), lay.log_file)
        log.info("started %s broker (pid %d), log %s", lay.name, pid, lay.log_file)
        pending.append(_Pending(lay, pid, password, offset, started_now=True))
    return pending


async def _wait_all(pending: list[_Pending], deadline: float) -> list[BaseException | None]:
    results = await asyncio.gather(
        *(kafka.wait_ready(p.lay, p.pid, p.password, p.log_offset, deadline) for p in pending),
        return_exceptions=True,
    )
    return [r if isinstance(r, BaseException) else None for r in results]


def up(run_dir: Path | None = None, *, timeout: float = kafka.START_TIMEOUT_S) -> list[ClusterInfo]:
    """Start both clusters (idempotent) and return once each accepts a SCRAM login."""
    run = resolve_run_dir(run_dir)
    all_layouts = layouts(run)
    with locked(run):
        state = read_state(run)
        pending: list[_Pending] = []
        to_start: list[Layout] = []
        for lay in all_layouts:
            pid = _check_running(lay, state.get(lay.name))
            if pid is None:
                to_start.append(lay)
            else:
                password = ensure_password(lay.password_file, [lay.data_dir])
                pending.append(_Pending(lay, pid, password, 0, started_now=False))
        pending += _start(run, to_start) if to_start else []
        state.update({p.lay.name: cluster_info(p.lay, p.pid) for p in pending})
        # Record pids before waiting, so `down` can stop a broker that is slow to start.
        write_state(run, state)
        deadline = time.monotonic() + timeout
        errors = _run_async(lambda: _wait_all(pending, deadline))
        failed = [(p, e) for p, e in zip(pending, errors, strict=True) if e is not None]
        for p, _ in failed:
            if p.started_now:
                kafka.stop_broker(p.pid, p.lay)
                state[p.lay.name] = cluster_info(p.lay, None)
        write_state(run, state)
    if failed:
        raise DevError("\n".join(str(e) for _, e in failed))
    return [state[lay.name] for lay in all_layouts]


def down(run_dir: Path | None = None) -> None:
    """Stop the brokers that `up` started (only those, by recorded pid) and wait for exit."""
    run = resolve_run_dir(run_dir)
    with locked(run):
        state = read_state(run)
        for name, info in state.items():
            lay = Layout(name, 0, run / name)
            if info.pid is not None and kafka.is_our_broker(info.pid, lay):
                log.info("stopping %s broker (pid %d)", name, info.pid)
                kafka.stop_broker(info.pid, lay)
            elif info.pid is not None:
                log.info("%s: pid %d is no longer its broker; nothing to stop", name, info.pid)
            state[name] = dataclasses.replace(info, pid=None)
        if state:
            write_state(run, state)


def status(run_dir: Path | None = None) -> list[ClusterInfo]:
    """Both clusters' addresses and files; pid is None for a cluster that is not running."""
    run = (run_dir or default_run_dir()).expanduser().resolve()
    state = read_state(run) if run.is_dir() else {}
    result = []
    for lay in layouts(run):
        info = state.get(lay.name)
        if info is not None and kafka.is_our_broker(info.pid, lay):
            result.append(info)
        else:
            result.append(cluster_info(lay, None))
    return result
