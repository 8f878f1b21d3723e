"""Fault controls for tests: pause, resume, kill, stop, start and move one node.

Each function names a node by cluster and node id (see `nodes()` for the ids: 1 for a
single-node cluster, 1..3 for a three-node primary) and returns the node as it is
afterwards. They act only on processes `up` recorded, and keep state.json true:

    pause_node    SIGSTOP: the process stays, answers nothing (a long GC pause, a frozen VM)
    resume_node   SIGCONT after a pause
    kill_node     SIGKILL: a crash; `up` or `start_node` brings the node back
    stop_node     SIGTERM: a graceful (controlled) shutdown, leaders move away first
    start_node    start a stopped node again on its last address
    restart_node  stop_node then start; with new_address=True the node comes back with
                  the same id on its other client port (home <-> spare, see layout.py),
                  so its advertised listener changes: "a broker restarted elsewhere"
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from gateway.dev import kafka, processes
from gateway.dev.clusters import record, start_and_wait
from gateway.dev.errors import DevError
from gateway.dev.kafka_config import MAIN_CLASS
from gateway.dev.layout import ClusterLayout, NodeLayout, layouts
from gateway.dev.state import (
    PAUSED,
    RUNNING,
    ClusterInfo,
    NodeInfo,
    locked,
    observe,
    read_state,
    resolve_run_dir,
    write_state,
)

SIGNAL_TIMEOUT_S = 10.0


def _recorded(run: Path, cluster: str) -> tuple[ClusterLayout, ClusterInfo]:
    info = read_state(run).get(cluster)
    if info is None:
        raise DevError(f"{cluster} was never started here; run `python -m gateway dev up` first")
    for lay in layouts(run, {cluster: len(info.nodes)}):
        if lay.name == cluster:
            return lay, info
    raise DevError(f"no dev cluster named {cluster!r}")


def _node(run: Path, cluster: str, node_id: int) -> tuple[ClusterLayout, NodeLayout, NodeInfo]:
    lay, info = _recorded(run, cluster)
    node = lay.node(node_id)
    (seen,) = [n for n in info.nodes if n.node_id == node_id]
    return lay, node, seen


def _running(seen: NodeInfo) -> int:
    if seen.pid is None:
        raise DevError(f"{seen.cluster} node {seen.node_id} is not running")
    return seen.pid


def _signal_and_wait(seen: NodeInfo, signum: signal.Signals, want: str) -> NodeInfo:
    pid = _running(seen)
    processes.kill(pid, MAIN_CLASS, Path(seen.config_file), signum)
    deadline = time.monotonic() + SIGNAL_TIMEOUT_S
    while (now := observe(seen)).state != want:
        if now.pid is None or time.monotonic() > deadline:
            raise DevError(f"{seen.cluster} node {seen.node_id} (pid {pid}) did not become {want}")
        time.sleep(0.05)
    return now


def pause_node(cluster: str, node_id: int, *, run_dir: Path | None = None) -> NodeInfo:
    """Freeze the node with SIGSTOP; returns once /proc shows it stopped ("paused")."""
    _, _, seen = _node(resolve_run_dir(run_dir), cluster, node_id)
    return _signal_and_wait(seen, signal.SIGSTOP, PAUSED)


def resume_node(cluster: str, node_id: int, *, run_dir: Path | None = None) -> NodeInfo:
    """Let a paused node run again with SIGCONT; returns once /proc shows it running."""
    _, _, seen = _node(resolve_run_dir(run_dir), cluster, node_id)
    return _signal_and_wait(seen, signal.SIGCONT, RUNNING)


def _stopped(run: Path, lay: ClusterLayout, seen: NodeInfo) -> NodeInfo:
    """Record that the node no longer runs; the others keep their pids and addresses."""
    with locked(run):
        state = read_state(run)
        live = [s for s in _live(state[lay.name], lay) if s.node.node_id != seen.node_id]
        state[lay.name] = record(lay, live, state[lay.name])
        write_state(run, state)
    (after,) = [n for n in state[lay.name].nodes if n.node_id == seen.node_id]
    return after


def kill_node(cluster: str, node_id: int, *, run_dir: Path | None = None) -> NodeInfo:
    """SIGKILL the node (no shutdown at all) and wait until it has exited."""
    run = resolve_run_dir(run_dir)
    lay, _, seen = _node(run, cluster, node_id)
    pid = _running(seen)
    config = Path(seen.config_file)
    processes.kill(pid, MAIN_CLASS, config, signal.SIGKILL)
    processes.wait_exit([(pid, config)], MAIN_CLASS)
    return _stopped(run, lay, seen)


def stop_node(
    cluster: str,
    node_id: int,
    *,
    run_dir: Path | None = None,
    timeout: float = processes.STOP_TIMEOUT_S,
) -> NodeInfo:
    """Stop the node gracefully (SIGTERM, controlled shutdown), SIGKILL after `timeout`."""
    run = resolve_run_dir(run_dir)
    lay, _, seen = _node(run, cluster, node_id)
    _running(seen)
    kafka.stop_nodes([seen], timeout)
    return _stopped(run, lay, seen)


def _live(info: ClusterInfo, lay: ClusterLayout) -> list[kafka.Starting]:
    return [
        kafka.Starting(lay.node(n.node_id), n.port, n.pid, "", 0, started_now=False)
        for n in info.nodes
        if n.pid is not None
    ]


def _start(run: Path, cluster: str, node_id: int, port: int | None, timeout: float) -> NodeInfo:
    with locked(run):
        lay, node, seen = _node(run, cluster, node_id)
        if seen.pid is not None:
            if port is None or seen.port == port:
                return seen
            raise DevError(f"{node.label} is running on {seen.bootstrap}; stop it first")
        state = read_state(run)
        plan = [(lay, _live(state[cluster], lay), [(node, port or seen.port)])]
        # The others are not waited for: one of them may be paused on purpose.
        start_and_wait(run, state, plan, timeout, wait_live=False)
    (after,) = [n for n in state[cluster].nodes if n.node_id == node_id]
    return after


def start_node(
    cluster: str,
    node_id: int,
    *,
    run_dir: Path | None = None,
    timeout: float = kafka.START_TIMEOUT_S,
) -> NodeInfo:
    """Start a stopped (or killed) node on its last address; returns once it is ready."""
    return _start(resolve_run_dir(run_dir), cluster, node_id, None, timeout)


def restart_node(
    cluster: str,
    node_id: int,
    *,
    new_address: bool = False,
    run_dir: Path | None = None,
    timeout: float = kafka.START_TIMEOUT_S,
) -> NodeInfo:
    """Stop the node gracefully and start it again, on its other client port (home or
    spare) if `new_address`: same node id and data, a different advertised listener."""
    run = resolve_run_dir(run_dir)
    _, node, seen = _node(run, cluster, node_id)
    if seen.pid is not None:
        stop_node(cluster, node_id, run_dir=run)
    port = seen.port
    if new_address:
        port = node.spare_port if seen.port == node.port else node.port
    return _start(run, cluster, node_id, port, timeout)
