"""Where each dev cluster's files live and which loopback ports its nodes use.

Pure: reads only the environment it is given. The primary's first port comes from
`GATEWAY_DEV_PRIMARY_PORT` (default 19092), the secondary's from
`GATEWAY_DEV_SECONDARY_PORT` (default 29092), the primary's node count from
`GATEWAY_DEV_PRIMARY_BROKERS` (1 or 3, default 1), the run dir from `GATEWAY_DEV_DIR`.

Ports of a cluster of n nodes whose first port is P (node ids 1..n, i = id - 1):

    node i client listener      P + 2i
    node i controller listener  P + 2i + 1
    node i spare client port    P + 2n + i   (where `restart_node(new_address=True)`
                                              moves the node's client listener)

so a single node uses P, P+1 (spare P+2) as it always did, and three nodes use
P..P+5 (spares P+6..P+8). No two ports of all clusters may coincide.

A single node keeps its files in `<run>/<cluster>/`; each node of a three-node cluster
has `<run>/<cluster>/node-<id>/`, so the two shapes never share data and switching
between them (after `dev down`) keeps both.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.dev.errors import DevError

HOST = "127.0.0.1"
CLUSTER_NAMES = ("primary", "secondary")
DEFAULT_PORTS = {"primary": 19092, "secondary": 29092}
PORT_ENV = {"primary": "GATEWAY_DEV_PRIMARY_PORT", "secondary": "GATEWAY_DEV_SECONDARY_PORT"}
PRIMARY_BROKERS_ENV = "GATEWAY_DEV_PRIMARY_BROKERS"
# One node, or a quorum of three that survives losing any one of them.
NODE_COUNTS = (1, 3)


@dataclass(frozen=True)
class NodeLayout:
    """One Kafka process (broker and controller) of a cluster: its ports and files."""

    cluster: str
    node_id: int
    port: int
    controller_port: int
    spare_port: int
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "server.properties"

    @property
    def log_file(self) -> Path:
        return self.root / "kafka.log"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def label(self) -> str:
        return f"{self.cluster} node {self.node_id}"


@dataclass(frozen=True)
class ClusterLayout:
    """A cluster's nodes and the files they share (the admin credential)."""

    name: str
    port: int
    root: Path
    nodes: tuple[NodeLayout, ...]

    @property
    def password_file(self) -> Path:
        return self.root / "admin.password"

    @property
    def client_config(self) -> Path:
        return self.root / "client.properties"

    @property
    def ports(self) -> list[int]:
        return [p for n in self.nodes for p in (n.port, n.controller_port, n.spare_port)]

    def node(self, node_id: int) -> NodeLayout:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        ids = ", ".join(str(n.node_id) for n in self.nodes)
        raise DevError(f"{self.name} has no node {node_id} (its nodes: {ids})")


def cluster_layout(name: str, port: int, root: Path, size: int = 1) -> ClusterLayout:
    """The layout of a cluster of `size` nodes whose first client port is `port`."""
    if size not in NODE_COUNTS:
        raise DevError(f"{name} can have 1 or 3 nodes, not {size}")
    nodes = tuple(
        NodeLayout(
            cluster=name,
            node_id=i + 1,
            port=port + 2 * i,
            controller_port=port + 2 * i + 1,
            spare_port=port + 2 * size + i,
            root=root if size == 1 else root / f"node-{i + 1}",
        )
        for i in range(size)
    )
    return ClusterLayout(name, port, root, nodes)


def tls_dir(run_dir: Path) -> Path:
    """Where the dev CA and the gateway's dev certificates live (see certs.py)."""
    return run_dir / "tls"


def default_run_dir() -> Path:
    env = os.environ.get("GATEWAY_DEV_DIR")
    if env:
        return Path(env).expanduser().resolve()
    return Path.home() / ".cache" / "soc2-gateway" / "dev"


def _port(name: str, environ: Mapping[str, str]) -> int:
    raw = environ.get(PORT_ENV[name])
    if not raw:
        return DEFAULT_PORTS[name]
    try:
        port = int(raw)
    except ValueError:
        raise DevError(f"{PORT_ENV[name]}={raw!r} is not a port number") from None
    if not 1024 <= port <= 65534:
        raise DevError(f"{PORT_ENV[name]}={port} must be between 1024 and 65534")
    return port


def first_port(name: str, environ: Mapping[str, str] = os.environ) -> int:
    """The first client port of cluster ``name`` (from its environment variable)."""
    return _port(name, environ)


def requested_primary_brokers(environ: Mapping[str, str] = os.environ) -> int | None:
    """The primary's node count asked for by `GATEWAY_DEV_PRIMARY_BROKERS`, if set."""
    raw = environ.get(PRIMARY_BROKERS_ENV, "").strip()
    if not raw:
        return None
    if raw not in {str(n) for n in NODE_COUNTS}:
        raise DevError(f"{PRIMARY_BROKERS_ENV}={raw!r} must be 1 or 3")
    return int(raw)


def layouts(
    run_dir: Path, sizes: Mapping[str, int] | None = None, environ: Mapping[str, str] = os.environ
) -> list[ClusterLayout]:
    """Every cluster's layout; `sizes` gives node counts by name (default 1 each)."""
    sizes = sizes or {}
    result = [
        cluster_layout(name, _port(name, environ), run_dir / name, sizes.get(name, 1))
        for name in CLUSTER_NAMES
    ]
    used = [p for cluster in result for p in cluster.ports]
    if len(set(used)) != len(used):
        shown = ", ".join(f"{c.name} {min(c.ports)}-{max(c.ports)}" for c in result)
        raise DevError(
            f"dev cluster ports overlap ({shown}); set {PORT_ENV['primary']} and "
            f"{PORT_ENV['secondary']} further apart"
        )
    if max(used) > 65535:
        raise DevError(f"dev cluster ports run past 65535 ({max(used)}); choose lower ports")
    return result
