"""`up`, `down`, `status` and `nodes` of the primary and secondary dev clusters.

Holds the run dir lock while it reads state.json, starts or stops nodes through
`kafka.py` and records what it did. The primary runs 1 node (default) or 3: asked for
with `up(primary_brokers=3)`, `dev up --primary-brokers 3` or
`GATEWAY_DEV_PRIMARY_BROKERS=3`; without a request, a running primary keeps its shape.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Mapping
from pathlib import Path

from gateway.dev import kafka, mirror, registry
from gateway.dev.certs import ensure_dev_certificates
from gateway.dev.credentials import ensure_password
from gateway.dev.errors import DevError
from gateway.dev.layout import (
    HOST,
    PRIMARY_BROKERS_ENV,
    ClusterLayout,
    NodeLayout,
    default_run_dir,
    layouts,
    requested_primary_brokers,
    tls_dir,
)
from gateway.dev.state import (
    PAUSED,
    STOPPED,
    ClusterInfo,
    NodeInfo,
    cluster_info,
    live_nodes,
    locked,
    node_info,
    read_state,
    resolve_run_dir,
    stopped_info,
    write_state,
)

log = logging.getLogger(__name__)


def cluster_sizes(
    state: Mapping[str, ClusterInfo], primary_brokers: int | None, *, strict: bool = True
) -> dict[str, int]:
    """Node counts: the request (argument, then env), else the running shape, else the
    shape last started (so `up` after a crash of every node restarts the same cluster,
    on its own data), else 1.

    With `strict`, a request that differs from a running primary is an error, because
    the two shapes keep separate data and one must stop before the other starts.
    """
    requested = primary_brokers if primary_brokers is not None else requested_primary_brokers()
    primary = state.get("primary")
    running = len(primary.nodes) if primary is not None and live_nodes(primary) else None
    recorded = len(primary.nodes) if primary is not None and primary.nodes else None
    if requested is None or (running is not None and not strict):
        return {"primary": running or requested or recorded or 1}
    if running is not None and running != requested:
        raise DevError(
            f"the primary runs {running} node(s), not {requested}; run "
            f"`python -m gateway dev down` first, or ask for {running} "
            f"(--primary-brokers / {PRIMARY_BROKERS_ENV})"
        )
    return {"primary": requested}


def restart_port(node: NodeLayout, recorded: NodeInfo | None, others_live: bool) -> int:
    """Where a stopped node starts again: its last address while the rest of its cluster
    runs (so a restart is a restart, not a move), else its home port."""
    if others_live and recorded is not None and recorded.port in (node.port, node.spare_port):
        return recorded.port
    return node.port


def _recorded_nodes(cluster: ClusterLayout, info: ClusterInfo | None) -> dict[int, NodeInfo]:
    if info is None or len(info.nodes) != len(cluster.nodes):
        return {}
    return {n.node_id: n for n in info.nodes}


def _check_live_node(node: NodeLayout, seen: NodeInfo) -> None:
    if seen.controller != f"{HOST}:{node.controller_port}":
        raise DevError(
            f"{node.label} is running with controller {seen.controller}, not "
            f"{HOST}:{node.controller_port}; run `python -m gateway dev down` first"
        )
    if seen.state == PAUSED:
        raise DevError(
            f"{node.label} (pid {seen.pid}) is paused; resume it with "
            f"`python -m gateway dev node resume {node.node_id} --cluster {node.cluster}`"
        )


def _plan(
    cluster: ClusterLayout, info: ClusterInfo | None
) -> tuple[list[kafka.Starting], list[tuple[NodeLayout, int]]]:
    """The cluster's live nodes (to wait for) and its stopped nodes with their ports."""
    recorded = _recorded_nodes(cluster, info)
    live, to_start = [], []
    for node in cluster.nodes:
        seen = recorded.get(node.node_id)
        if seen is not None and seen.pid is not None:
            _check_live_node(node, seen)
            password = ensure_password(cluster.password_file, [])
            live.append(kafka.Starting(node, seen.port, seen.pid, password, 0, started_now=False))
    live_ids = {s.node.node_id for s in live}
    for node in cluster.nodes:
        if node.node_id not in live_ids:
            others_live = bool(live_ids - {node.node_id})
            to_start.append((node, restart_port(node, recorded.get(node.node_id), others_live)))
    return live, to_start


def record(
    cluster: ClusterLayout, nodes: list[kafka.Starting], before: ClusterInfo | None = None
) -> ClusterInfo:
    """The cluster with `nodes` running; every other node stopped, at the address it had
    in `before` (so that a node restarted later comes back where it was)."""
    by_id = {s.node.node_id: s for s in nodes}
    recorded = _recorded_nodes(cluster, before)
    infos = []
    for node in cluster.nodes:
        s = by_id.get(node.node_id)
        if s is not None:
            infos.append(node_info(node, s.pid, s.port))
        else:
            last = recorded.get(node.node_id)
            infos.append(node_info(node, None, last.port if last is not None else None))
    return cluster_info(cluster, infos)


def start_and_wait(
    run: Path,
    state: dict[str, ClusterInfo],
    plan: list[tuple[ClusterLayout, list[kafka.Starting], list[tuple[NodeLayout, int]]]],
    timeout: float,
    *,
    wait_live: bool = True,
) -> None:
    """Start the planned nodes, record them, wait until ready; stop and raise on failure.

    Each plan entry is (cluster, its live nodes, its nodes to start with their ports).
    Live nodes are waited for too unless `wait_live` is False.
    """
    waiting = {cluster.name: list(live) for cluster, live, _ in plan}
    to_start = [(cluster, starting) for cluster, _, starting in plan if starting]
    for started in kafka.start_nodes(run, to_start) if to_start else []:
        waiting[started.node.cluster].append(started)
    # Record pids before waiting, so `down` can stop a node that is slow to start.
    for cluster, _, _ in plan:
        state[cluster.name] = record(cluster, waiting[cluster.name], state.get(cluster.name))
    write_state(run, state)
    every = [s for nodes in waiting.values() for s in nodes if s.started_now or wait_live]
    errors = kafka.wait_ready(every, timeout)
    failed = [(s, err) for s, err in zip(every, errors, strict=True) if err is not None]
    if not failed:
        return
    kafka.stop_nodes([node_info(s.node, s.pid, s.port) for s, _ in failed if s.started_now])
    gone = {id(s) for s, _ in failed}
    for cluster, _, _ in plan:
        ready = [s for s in waiting[cluster.name] if id(s) not in gone]
        state[cluster.name] = record(cluster, ready, state.get(cluster.name))
    write_state(run, state)
    raise DevError("\n".join(str(err) for _, err in failed))


def up(
    run_dir: Path | None = None,
    *,
    timeout: float = kafka.START_TIMEOUT_S,
    primary_brokers: int | None = None,
    only: Collection[str] | None = None,
) -> list[ClusterInfo]:
    """Start every node of both clusters (or of the clusters named in `only`) that is
    not running and return once each node accepts a SCRAM login and lists itself as a
    live broker (idempotent).

    A node that died while the rest of its cluster runs starts again on its last address.
    """
    run = resolve_run_dir(run_dir)
    with locked(run):
        # The gateway's TLS listeners (make run, tests) use these; created once.
        ensure_dev_certificates(tls_dir(run))
        state = read_state(run)
        every = layouts(run, cluster_sizes(state, primary_brokers))
        clusters = [c for c in every if only is None or c.name in only]
        plan = [(c, *_plan(c, state.get(c.name))) for c in clusters]
        start_and_wait(run, state, plan, timeout)
        if "primary" in {c.name for c in clusters}:
            # Beside the clusters when its folder is there (see registry.py). A registry
            # that does not start leaves the clusters serving; what needs it fails then,
            # naming its log.
            try:
                registry.start(run, state["primary"])
            except DevError as err:
                log.error("the dev schema registry did not start: %s", err)
        _start_mirror(run, state, every)
    return [state[c.name] for c in clusters]


def _start_mirror(run: Path, state: Mapping[str, ClusterInfo], every: list[ClusterLayout]) -> None:
    """MirrorMaker 2 from the primary to the secondary once both serve (see mirror.py).

    It is given each cluster's home addresses, so that a node restarted on its spare
    port does not change its settings (and restart it); it finds the brokers from
    there. One that does not start leaves the clusters serving.
    """
    source, target = state.get(mirror.SOURCE), state.get(mirror.TARGET)
    if source is None or target is None or not live_nodes(source) or not live_nodes(target):
        return
    home = {c.name: ",".join(f"{HOST}:{n.port}" for n in c.nodes) for c in every}
    try:
        mirror.start(
            run,
            dataclasses.replace(source, bootstrap_servers=home[source.name]),
            dataclasses.replace(target, bootstrap_servers=home[target.name]),
        )
    except DevError as err:
        log.error("MirrorMaker 2 did not start: %s", err)


def down(run_dir: Path | None = None) -> None:
    """Stop every node that `up` started (only those, by recorded pid) and wait for exit."""
    run = resolve_run_dir(run_dir)
    with locked(run):
        # Before the brokers: the registry stores its schemas on the primary, and
        # MirrorMaker would log every broker leaving.
        mirror.stop(run)
        registry.stop(run)
        state = read_state(run)
        live = [node for info in state.values() for node in live_nodes(info)]
        for node in live:
            log.info("stopping %s node %d (pid %d)", node.cluster, node.node_id, node.pid)
        kafka.stop_nodes(live)
        for name, info in state.items():
            nodes = tuple(dataclasses.replace(n, pid=None, state=STOPPED) for n in info.nodes)
            state[name] = dataclasses.replace(info, pid=None, nodes=nodes)
        if state:
            write_state(run, state)


def status(run_dir: Path | None = None) -> list[ClusterInfo]:
    """Both clusters' addresses, files and nodes; pid is None where nothing runs."""
    run = (run_dir or default_run_dir()).expanduser().resolve()
    state = read_state(run) if run.is_dir() else {}
    result = []
    for cluster in layouts(run, cluster_sizes(state, None, strict=False)):
        info = state.get(cluster.name)
        if info is not None and live_nodes(info) and _recorded_nodes(cluster, info):
            result.append(info)
        else:
            result.append(stopped_info(cluster))
    return result


def nodes(cluster: str = "primary", run_dir: Path | None = None) -> list[NodeInfo]:
    """Each node of `cluster` as it is now: node id, pid, state and client address."""
    for info in status(run_dir):
        if info.name == cluster:
            return list(info.nodes)
    raise DevError(f"no dev cluster named {cluster!r}")
