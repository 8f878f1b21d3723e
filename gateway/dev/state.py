"""What `up` started, as recorded in the run dir: state.json and the lock around it.

state.json holds pids and addresses, never a secret. Every change to it (and to the
processes it describes) happens under `locked(run_dir)`, so `make run` and a test session
can share one run dir. A recorded pid counts only while /proc shows it running Kafka
with the node's own config file (`observe`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.dev import processes
from gateway.dev.credentials import (
    ADMIN_USER,
    SASL_MECHANISM,
    SECURITY_PROTOCOL,
    write_private,
)
from gateway.dev.kafka_config import MAIN_CLASS
from gateway.dev.layout import HOST, ClusterLayout, NodeLayout, default_run_dir

log = logging.getLogger(__name__)

RUNNING, PAUSED, STOPPED = "running", "paused", "stopped"


@dataclass(frozen=True)
class NodeInfo:
    """One node (broker and controller) of a dev cluster, as it is now.

    `bootstrap` is the node's current client address: its home port, or its spare port
    after `restart_node(..., new_address=True)`. `state` is "running", "paused" (SIGSTOP)
    or "stopped" (then `pid` is None).
    """

    cluster: str
    node_id: int
    bootstrap: str
    controller: str
    pid: int | None
    state: str
    config_file: str
    log_file: str
    data_dir: str

    @property
    def port(self) -> int:
        return int(self.bootstrap.rpartition(":")[2])


@dataclass(frozen=True)
class ClusterInfo:
    """How to reach one dev cluster. Never holds the password itself.

    `bootstrap`, `controller`, `log_file` and `data_dir` are those of the cluster's first
    node (the only one by default); `bootstrap_servers` lists every node's address, comma
    separated as Kafka clients take it; `pid` is the first live node's pid, None when no
    node runs. `nodes` holds each node.
    """

    name: str
    bootstrap: str
    controller: str
    security_protocol: str
    sasl_mechanism: str
    username: str
    password_file: str
    pid: int | None
    log_file: str
    data_dir: str
    bootstrap_servers: str
    nodes: tuple[NodeInfo, ...]


def node_info(node: NodeLayout, pid: int | None, port: int | None = None) -> NodeInfo:
    return NodeInfo(
        cluster=node.cluster,
        node_id=node.node_id,
        bootstrap=f"{HOST}:{port or node.port}",
        controller=f"{HOST}:{node.controller_port}",
        pid=pid,
        state=RUNNING if pid is not None else STOPPED,
        config_file=str(node.config),
        log_file=str(node.log_file),
        data_dir=str(node.data_dir),
    )


def cluster_info(cluster: ClusterLayout, nodes: Sequence[NodeInfo]) -> ClusterInfo:
    first = nodes[0]
    live = [n.pid for n in nodes if n.pid is not None]
    return ClusterInfo(
        name=cluster.name,
        bootstrap=first.bootstrap,
        controller=first.controller,
        security_protocol=SECURITY_PROTOCOL,
        sasl_mechanism=SASL_MECHANISM,
        username=ADMIN_USER,
        password_file=str(cluster.password_file),
        pid=live[0] if live else None,
        log_file=first.log_file,
        data_dir=first.data_dir,
        bootstrap_servers=",".join(n.bootstrap for n in nodes),
        nodes=tuple(nodes),
    )


def stopped_info(cluster: ClusterLayout) -> ClusterInfo:
    return cluster_info(cluster, [node_info(node, None) for node in cluster.nodes])


def observe(node: NodeInfo) -> NodeInfo:
    """The node with its pid and state as /proc shows them now."""
    proc_state = processes.process_state(node.pid, MAIN_CLASS, Path(node.config_file))
    if proc_state is None:
        return dataclasses.replace(node, pid=None, state=STOPPED)
    return dataclasses.replace(node, state=PAUSED if proc_state in ("T", "t") else RUNNING)


def observe_cluster(info: ClusterInfo) -> ClusterInfo:
    nodes = tuple(observe(n) for n in info.nodes)
    live = [n.pid for n in nodes if n.pid is not None]
    return dataclasses.replace(info, nodes=nodes, pid=live[0] if live else None)


def live_nodes(info: ClusterInfo | None) -> list[NodeInfo]:
    return [] if info is None else [n for n in info.nodes if n.pid is not None]


def resolve_run_dir(run_dir: Path | None) -> Path:
    """The run dir, created private to the user (it holds passwords)."""
    path = (run_dir or default_run_dir()).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _parse_cluster(name: str, fields: dict[str, Any]) -> ClusterInfo:
    if "nodes" not in fields:
        # Written before clusters had nodes: one node whose files sit in the cluster dir.
        root = Path(fields["password_file"]).parent
        node = {
            "cluster": name,
            "node_id": 1,
            "bootstrap": fields["bootstrap"],
            "controller": fields["controller"],
            "pid": fields["pid"],
            "state": RUNNING,
            "config_file": str(root / "server.properties"),
            "log_file": fields["log_file"],
            "data_dir": fields["data_dir"],
        }
        fields = {**fields, "bootstrap_servers": fields["bootstrap"], "nodes": [node]}
    nodes = tuple(NodeInfo(**node) for node in fields["nodes"])
    return ClusterInfo(**{**fields, "nodes": nodes})


def read_state(run_dir: Path) -> dict[str, ClusterInfo]:
    """The recorded clusters, each node observed as it is now."""
    path = run_dir / "state.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        recorded = {name: _parse_cluster(name, f) for name, f in raw["clusters"].items()}
    except FileNotFoundError:
        return {}
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        log.warning("ignoring unreadable %s: %s", path, err)
        return {}
    return {name: observe_cluster(info) for name, info in recorded.items()}


def write_state(run_dir: Path, clusters: dict[str, ClusterInfo]) -> None:
    doc = {"clusters": {name: dataclasses.asdict(info) for name, info in clusters.items()}}
    write_private(run_dir / "state.json", json.dumps(doc, indent=2) + "\n")


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Serialise changes across processes (e.g. `make run` and a test session)."""
    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
