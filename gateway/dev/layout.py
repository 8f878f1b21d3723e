"""Where each dev cluster's files live and which loopback ports it uses.

Pure: reads only the environment it is given. Ports come from `GATEWAY_DEV_PRIMARY_PORT`
and `GATEWAY_DEV_SECONDARY_PORT`; the run dir from `GATEWAY_DEV_DIR`.
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


@dataclass(frozen=True)
class Layout:
    """Where one cluster's files live and which ports it uses."""

    name: str
    port: int
    root: Path

    @property
    def controller_port(self) -> int:
        return self.port + 1

    @property
    def config(self) -> Path:
        return self.root / "server.properties"

    @property
    def client_config(self) -> Path:
        return self.root / "client.properties"

    @property
    def password_file(self) -> Path:
        return self.root / "admin.password"

    @property
    def log_file(self) -> Path:
        return self.root / "kafka.log"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"


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


def layouts(run_dir: Path, environ: Mapping[str, str] = os.environ) -> list[Layout]:
    result = [Layout(name, _port(name, environ), run_dir / name) for name in CLUSTER_NAMES]
    used = [p for lay in result for p in (lay.port, lay.controller_port)]
    if len(set(used)) != len(used):
        raise DevError(f"dev cluster ports overlap: {sorted(used)} (controller = port + 1)")
    return result
