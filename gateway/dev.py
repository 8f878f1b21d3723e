"""Local primary and secondary Apache Kafka clusters for trying and testing the gateway.

`python -m gateway dev up | down | status [--json]` runs two single-node Kafka 4.1.1
clusters in KRaft mode on loopback, straight from the jars published on Maven Central
(resolved once with Maven into a cache). Each cluster has one SASL_PLAINTEXT listener
with SCRAM-SHA-256/512 and an admin user whose generated password lives in a 0600 file,
so the gateway's upstream credentials are real. Integration tests and `make run` use
the same functions: `up()`, `down()`, `status()`.

Layout of the run directory (`$GATEWAY_DEV_DIR`, default `~/.cache/soc2-gateway/dev`):

    state.json                 pids and addresses of what `up` started (no secrets)
    broker-log4j2.xml          broker logging: INFO to the cluster's log file
    <name>/server.properties   0600: holds the inter-broker SCRAM password
    <name>/client.properties   0600: ready-made config for Kafka's Java tools
    <name>/admin.password      0600: the admin password, no trailing newline
    <name>/kafka.log           broker output
    <name>/data/               log.dirs and KRaft metadata, kept across down/up

Linux only: liveness checks read /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import fcntl
import functools
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from gateway.errors import DevClusterError

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
# Kafka 4.1 ships slf4j-api 1.7.x, so the binding must be the slf4j 1.x one
# (log4j-slf4j-impl); the slf4j2 binding would be ignored and the brokers would be silent.
LOG4J_VERSION = "2.24.3"
DEPENDENCY_PLUGIN_VERSION = "3.8.1"

ADMIN_USER = "gateway-admin"
SECURITY_PROTOCOL = "SASL_PLAINTEXT"
SASL_MECHANISM = "SCRAM-SHA-256"
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
HOST = "127.0.0.1"

CLUSTER_NAMES = ("primary", "secondary")
DEFAULT_PORTS = {"primary": 19092, "secondary": 29092}
PORT_ENV = {"primary": "GATEWAY_DEV_PRIMARY_PORT", "secondary": "GATEWAY_DEV_SECONDARY_PORT"}

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 5.0
LOG_ROTATE_BYTES = 20 * 1024 * 1024
LOG_TAIL_LINES = 40

BROKER_JVM_OPTS = (
    "-Xms256m",
    "-Xmx1g",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)
TOOL_JVM_OPTS = ("-Djava.awt.headless=true",)
TOOLS_LOG4J_NAME = "tools-log4j2.xml"

JAVA_HINT = "Java 17+ not found: apt-get install openjdk-17-jre-headless"
MVN_HINT = "Maven not found: apt-get install maven"

T = TypeVar("T")


class DevError(DevClusterError):
    """A dev-cluster operation failed; the message is one line meant for a person."""


class ToolMissingError(DevError):
    """Java or Maven is not installed (the CLI exits with 2)."""


@dataclass(frozen=True)
class ClusterInfo:
    """How to reach one dev cluster. Never holds the password itself."""

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


@dataclass(frozen=True)
class _Layout:
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

    def info(self, pid: int | None) -> ClusterInfo:
        return ClusterInfo(
            name=self.name,
            bootstrap=f"{HOST}:{self.port}",
            controller=f"{HOST}:{self.controller_port}",
            security_protocol=SECURITY_PROTOCOL,
            sasl_mechanism=SASL_MECHANISM,
            username=ADMIN_USER,
            password_file=str(self.password_file),
            pid=pid,
            log_file=str(self.log_file),
            data_dir=str(self.data_dir),
        )


# --------------------------------------------------------------------------- paths


def default_run_dir() -> Path:
    env = os.environ.get("GATEWAY_DEV_DIR")
    if env:
        return Path(env).expanduser().resolve()
    return Path.home() / ".cache" / "soc2-gateway" / "dev"


def default_lib_dir() -> Path:
    env = os.environ.get("GATEWAY_KAFKA_LIB")
    if env:
        return Path(env).expanduser().resolve()
    return Path.home() / ".cache" / "soc2-gateway" / f"kafka-{KAFKA_VERSION}" / "lib"


def _port(name: str) -> int:
    raw = os.environ.get(PORT_ENV[name])
    if not raw:
        return DEFAULT_PORTS[name]
    try:
        port = int(raw)
    except ValueError:
        raise DevError(f"{PORT_ENV[name]}={raw!r} is not a port number") from None
    if not 1024 <= port <= 65534:
        raise DevError(f"{PORT_ENV[name]}={port} must be between 1024 and 65534")
    return port


def _layouts(run_dir: Path) -> list[_Layout]:
    layouts = [_Layout(name, _port(name), run_dir / name) for name in CLUSTER_NAMES]
    used = [p for lay in layouts for p in (lay.port, lay.controller_port)]
    if len(set(used)) != len(used):
        raise DevError(f"dev cluster ports overlap: {sorted(used)} (controller = port + 1)")
    return layouts


def _resolve_run_dir(run_dir: Path | None) -> Path:
    path = (run_dir or default_run_dir()).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    # The run dir holds passwords: keep it private to the user.
    path.chmod(0o700)
    return path


# --------------------------------------------------------------------------- prerequisites


@functools.lru_cache(maxsize=4)
def _checked_java(path: str) -> str:
    try:
        result = subprocess.run(  # noqa: S603 - absolute path found by _java_path, fixed args
            [path, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        raise ToolMissingError(JAVA_HINT) from None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if match is None:
        raise ToolMissingError(JAVA_HINT)
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    if major < 17:
        raise ToolMissingError(f"Java {major} is too old, Kafka {KAFKA_VERSION} needs 17+")
    return path


def java_executable() -> str:
    """Absolute path of a Java 17+ `java`, preferring $JAVA_HOME."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    if candidate is not None and os.access(candidate, os.X_OK):
        return _checked_java(str(candidate))
    found = shutil.which("java")
    if found is None:
        raise ToolMissingError(JAVA_HINT)
    return _checked_java(found)


def _mvn_executable() -> str:
    found = shutil.which("mvn")
    if found is None:
        raise ToolMissingError(MVN_HINT)
    return found


# --------------------------------------------------------------------------- jars


def _required_jars() -> tuple[str, ...]:
    return (
        f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar",
        f"kafka-tools-{KAFKA_VERSION}.jar",
        f"connect-mirror-{KAFKA_VERSION}.jar",
        f"log4j-slf4j-impl-{LOG4J_VERSION}.jar",
        f"log4j-core-{LOG4J_VERSION}.jar",
    )


def _lib_complete(lib: Path) -> bool:
    return all((lib / jar).is_file() for jar in _required_jars())


def _pom() -> str:
    deps = [
        ("org.apache.kafka", f"kafka_{SCALA_VERSION}", KAFKA_VERSION),
        ("org.apache.kafka", "kafka-tools", KAFKA_VERSION),
        ("org.apache.kafka", "connect-mirror", KAFKA_VERSION),
        ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION),
        ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
    ]
    dep_xml = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in deps
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.soc2gateway</groupId>
  <artifactId>kafka-dev-classpath</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{dep_xml}
  </dependencies>
  <build>
    <pluginManagement>
      <plugins>
        <plugin>
          <groupId>org.apache.maven.plugins</groupId>
          <artifactId>maven-dependency-plugin</artifactId>
          <version>{DEPENDENCY_PLUGIN_VERSION}</version>
        </plugin>
      </plugins>
    </pluginManagement>
  </build>
</project>
"""


def _run_maven(mvn: str, out_dir: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="kafka-dev-pom-") as pom_dir:
        (Path(pom_dir) / "pom.xml").write_text(_pom(), encoding="utf-8")
        cmd = [
            mvn,
            "-q",
            "-B",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={out_dir}",
            "-DincludeScope=runtime",
        ]
        result = subprocess.run(  # noqa: S603 - mvn found on PATH, args built here
            cmd, cwd=pom_dir, capture_output=True, text=True, timeout=1800, check=False
        )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise DevError(f"mvn dependency:copy-dependencies failed ({result.returncode}):\n{tail}")


def _resolve_jars(lib: Path) -> None:
    if lib.exists():
        raise DevError(f"{lib} exists but lacks the Kafka {KAFKA_VERSION} jars; remove it")
    mvn = _mvn_executable()
    lib.parent.mkdir(parents=True, exist_ok=True)
    log.info("resolving Kafka %s jars with Maven into %s (once)", KAFKA_VERSION, lib)
    started = time.monotonic()
    # Download into a sibling temp dir and rename, so an interrupted download is never
    # mistaken for a complete cache.
    tmp = Path(tempfile.mkdtemp(prefix=".lib-partial-", dir=lib.parent))
    try:
        _run_maven(mvn, tmp)
        (tmp / TOOLS_LOG4J_NAME).write_text(_log4j_xml("WARN", "SYSTEM_ERR"), encoding="utf-8")
        if not _lib_complete(tmp):
            raise DevError(f"Maven finished but {tmp} lacks {', '.join(_required_jars())}")
        # mkdtemp makes the dir private; these are public jars, so let any user read them.
        tmp.chmod(0o755)
        try:
            tmp.rename(lib)
        except OSError:
            # Another process finished first; its copy is as good as ours.
            if not _lib_complete(lib):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("resolved Kafka jars in %.1fs", time.monotonic() - started)


def kafka_classpath() -> str:
    """Classpath for `java -cp` with Kafka, its tools, MirrorMaker 2 and log4j.

    Resolves the jars with Maven the first time; with the cache present, Maven is not run.
    """
    lib = default_lib_dir()
    if not _lib_complete(lib):
        _resolve_jars(lib)
    return os.pathsep.join(str(jar) for jar in sorted(lib.glob("*.jar")))


def java_tool_command(main_class: str, *args: str) -> list[str]:
    """Command line running a Kafka class, e.g. `org.apache.kafka.tools.TopicCommand`.

    Shape: [java, <jvm -D options>, "-cp", classpath, main_class, *args]. Tool logging goes
    to stderr at WARN so stdout carries only the tool's own output.
    """
    classpath = kafka_classpath()
    opts = list(TOOL_JVM_OPTS)
    tools_log4j = default_lib_dir() / TOOLS_LOG4J_NAME
    if tools_log4j.is_file():
        opts.append(f"-Dlog4j2.configurationFile={tools_log4j}")
    return [java_executable(), *opts, "-cp", classpath, main_class, *args]


# --------------------------------------------------------------------------- files


def _write_private(path: Path, text: str) -> None:
    """Atomically write a file only the owner can read (it may hold a password)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _log4j_xml(level: str, target: str) -> str:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="OUT" target="{target}">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="{level}"><AppenderRef ref="OUT"/></Root>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="kafka.network.RequestChannel$" level="WARN"/>
    <Logger name="kafka.authorizer.logger" level="WARN"/>
  </Loggers>
</Configuration>
"""


def _jaas(password: str) -> str:
    return (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{ADMIN_USER}" password="{password}";'
    )


def _server_properties(lay: _Layout, password: str) -> str:
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
        props[key] = _jaas(password)
    body = "\n".join(f"{key}={value}" for key, value in props.items())
    return f"# Written by `python -m gateway dev up`; rewritten on every start.\n{body}\n"


def _client_properties(password: str) -> str:
    return (
        f"security.protocol={SECURITY_PROTOCOL}\n"
        f"sasl.mechanism={SASL_MECHANISM}\n"
        f"sasl.jaas.config={_jaas(password)}\n"
    )


def read_password(info: ClusterInfo) -> str:
    """The admin password of a dev cluster (from its 0600 password file)."""
    return Path(info.password_file).read_text(encoding="utf-8").strip()


def client_config_file(info: ClusterInfo) -> str:
    """Path of a 0600 client.properties for Kafka's Java tools (`--command-config`)."""
    return str(Path(info.password_file).with_name("client.properties"))


def _redact(text: str, password: str | None) -> str:
    return text.replace(password, "***") if password else text


# --------------------------------------------------------------------------- state


def _read_state(run_dir: Path) -> dict[str, ClusterInfo]:
    path = run_dir / "state.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {name: ClusterInfo(**fields) for name, fields in raw["clusters"].items()}
    except FileNotFoundError:
        return {}
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        log.warning("ignoring unreadable %s: %s", path, err)
        return {}


def _write_state(run_dir: Path, clusters: dict[str, ClusterInfo]) -> None:
    doc = {"clusters": {name: dataclasses.asdict(info) for name, info in clusters.items()}}
    _write_private(run_dir / "state.json", json.dumps(doc, indent=2) + "\n")


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """Serialise up/down across processes (e.g. `make run` and a test session)."""
    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- processes


def _reap(pid: int) -> None:
    # A broker started by this process turns into a zombie when it exits; reap it so
    # that liveness checks see it gone.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _is_our_broker(pid: int | None, config: Path) -> bool:
    """True if pid is a live `kafka.Kafka` started with this cluster's config file."""
    if pid is None or pid <= 0:
        return False
    _reap(pid)
    proc = Path("/proc") / str(pid)
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        argv = (proc / "cmdline").read_bytes().split(b"\0")
    except (OSError, IndexError):
        return False
    if state in ("Z", "X"):
        return False
    return b"kafka.Kafka" in argv and str(config).encode() in argv


def _port_answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


def _stop_pid(pid: int, config: Path, timeout: float = STOP_TIMEOUT_S) -> None:
    if not _is_our_broker(pid, config):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _is_our_broker(pid, config):
            return
        time.sleep(0.2)
    log.warning("broker pid %d ignored SIGTERM for %.0fs; sending SIGKILL", pid, timeout)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    while _is_our_broker(pid, config):
        time.sleep(0.1)


def _spawn(argv: list[str], log_file: Path) -> int:
    # posix_spawn instead of subprocess.Popen: the broker must outlive this process, and a
    # Popen object dropped while its child runs emits a ResourceWarning (an error under
    # pytest's filterwarnings=error). setsid detaches it from our terminal's signals.
    file_actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log_file), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    return os.posix_spawn(argv[0], argv, dict(os.environ), file_actions=file_actions, setsid=True)


def _log_tail(log_file: Path, offset: int, password: str | None) -> str:
    try:
        with log_file.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except OSError as err:
        return f"(cannot read {log_file}: {err})"
    lines = data.decode("utf-8", errors="replace").splitlines()[-LOG_TAIL_LINES:]
    return _redact("\n".join(lines), password) or "(log is empty)"


def _open_log(log_file: Path) -> int:
    """Rotate an oversized log, write a start marker and return the offset of this run."""
    if log_file.exists() and log_file.stat().st_size > LOG_ROTATE_BYTES:
        os.replace(log_file, log_file.with_name(log_file.name + ".1"))
    fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(f"===== gateway dev up: starting broker at {time.ctime()} =====\n")
        handle.flush()
        return handle.tell()


# --------------------------------------------------------------------------- storage


def _new_cluster_id() -> str:
    # Same shape as Kafka's Uuid.randomUuid(): URL-safe base64 of 16 random bytes, no
    # padding, and never starting with "-" (it would read as a command-line flag).
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _ensure_password(lay: _Layout) -> str:
    """Return the cluster's admin password, creating it (and wiping old data) if new."""
    if lay.password_file.is_file():
        password = lay.password_file.read_text(encoding="utf-8").strip()
        if password:
            return password
    # Data formatted with a lost password is unusable: start that cluster afresh.
    if lay.data_dir.exists():
        shutil.rmtree(lay.data_dir)
    password = secrets.token_urlsafe(24)
    _write_private(lay.password_file, password)
    return password


def _format_storage(lay: _Layout, java: str, classpath: str, password: str) -> None:
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
        output = _redact((result.stdout + result.stderr).strip(), password)
        raise DevError(f"formatting {lay.name} failed ({result.returncode}): {output}")


def _prepare(lay: _Layout, java: str, classpath: str) -> str:
    lay.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    lay.root.chmod(0o700)
    password = _ensure_password(lay)
    _write_private(lay.config, _server_properties(lay, password))
    _write_private(lay.client_config, _client_properties(password))
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


async def _wait_ready(lay: _Layout, pid: int, password: str, offset: int, deadline: float) -> None:
    started = time.monotonic()
    last_error = "no answer yet"
    while True:
        if not _is_our_broker(pid, lay.config):
            tail = _log_tail(lay.log_file, offset, password)
            raise DevError(f"{lay.name} broker (pid {pid}) exited; end of {lay.log_file}:\n{tail}")
        try:
            if await _probe(lay.port, password) > 0:
                return
            last_error = "metadata listed no brokers"
        except Exception as err:  # any failure here just means "not ready yet"
            last_error = _redact(f"{type(err).__name__}: {err}", password)
        if time.monotonic() >= deadline:
            tail = _log_tail(lay.log_file, offset, password)
            waited = time.monotonic() - started
            raise DevError(
                f"{lay.name} not ready on {HOST}:{lay.port} after {waited:.0f}s "
                f"({last_error}); end of {lay.log_file}:\n{tail}"
            )
        await asyncio.sleep(0.5)


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


# --------------------------------------------------------------------------- up / down


@dataclass
class _Pending:
    lay: _Layout
    pid: int
    password: str
    log_offset: int
    started_now: bool


def _check_running(lay: _Layout, info: ClusterInfo | None) -> int | None:
    """The pid of this cluster's live broker from a previous `up`, if any."""
    if info is None or not _is_our_broker(info.pid, lay.config):
        return None
    if info.bootstrap != f"{HOST}:{lay.port}":
        raise DevError(
            f"{lay.name} is running on {info.bootstrap}, not {HOST}:{lay.port}; "
            "run `python -m gateway dev down` first"
        )
    return info.pid


def _check_ports_free(lay: _Layout) -> None:
    for port in (lay.port, lay.controller_port):
        if _port_answers(port):
            raise DevError(f"{HOST}:{port} for {lay.name} is in use by another process")


def _broker_argv(java: str, classpath: str, lay: _Layout, log4j: Path) -> list[str]:
    return [
        java,
        *BROKER_JVM_OPTS,
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp",
        classpath,
        "kafka.Kafka",
        str(lay.config),
    ]


def _start(run_dir: Path, layouts: list[_Layout]) -> list[_Pending]:
    java = java_executable()
    classpath = kafka_classpath()
    for lay in layouts:
        _check_ports_free(lay)
    log4j = run_dir / "broker-log4j2.xml"
    _write_private(log4j, _log4j_xml("INFO", "SYSTEM_OUT"))
    # Formatting starts one JVM per cluster; do both at once.
    with ThreadPoolExecutor(max_workers=len(layouts) or 1) as pool:
        passwords = list(pool.map(lambda lay: _prepare(lay, java, classpath), layouts))
    pending = []
    for lay, password in zip(layouts, passwords, strict=True):
        offset = _open_log(lay.log_file)
        pid = _spawn(_broker_argv(java, classpath, lay, log4j), lay.log_file)
        log.info("started %s broker (pid %d), log %s", lay.name, pid, lay.log_file)
        pending.append(_Pending(lay, pid, password, offset, started_now=True))
    return pending


async def _wait_all(pending: list[_Pending], deadline: float) -> list[BaseException | None]:
    results = await asyncio.gather(
        *(_wait_ready(p.lay, p.pid, p.password, p.log_offset, deadline) for p in pending),
        return_exceptions=True,
    )
    return [r if isinstance(r, BaseException) else None for r in results]


def up(run_dir: Path | None = None, *, timeout: float = START_TIMEOUT_S) -> list[ClusterInfo]:
    """Start both clusters (idempotent) and return once each accepts a SCRAM login."""
    run = _resolve_run_dir(run_dir)
    layouts = _layouts(run)
    with _locked(run):
        state = _read_state(run)
        pending: list[_Pending] = []
        to_start: list[_Layout] = []
        for lay in layouts:
            pid = _check_running(lay, state.get(lay.name))
            if pid is None:
                to_start.append(lay)
            else:
                pending.append(_Pending(lay, pid, _ensure_password(lay), 0, started_now=False))
        pending += _start(run, to_start) if to_start else []
        state.update({p.lay.name: p.lay.info(p.pid) for p in pending})
        # Record pids before waiting, so `down` can stop a broker that is slow to start.
        _write_state(run, state)
        deadline = time.monotonic() + timeout
        errors = _run_async(lambda: _wait_all(pending, deadline))
        failed = [(p, e) for p, e in zip(pending, errors, strict=True) if e is not None]
        for p, _ in failed:
            if p.started_now:
                _stop_pid(p.pid, p.lay.config)
                state[p.lay.name] = p.lay.info(None)
        _write_state(run, state)
    if failed:
        raise DevError("\n".join(str(e) for _, e in failed))
    return [state[lay.name] for lay in layouts]


def down(run_dir: Path | None = None) -> None:
    """Stop the brokers that `up` started (only those, by recorded pid) and wait for exit."""
    run = _resolve_run_dir(run_dir)
    with _locked(run):
        state = _read_state(run)
        for name, info in state.items():
            config = run / name / "server.properties"
            if info.pid is not None and _is_our_broker(info.pid, config):
                log.info("stopping %s broker (pid %d)", name, info.pid)
                _stop_pid(info.pid, config)
            elif info.pid is not None:
                log.info("%s: pid %d is no longer its broker; nothing to stop", name, info.pid)
            state[name] = dataclasses.replace(info, pid=None)
        if state:
            _write_state(run, state)


def status(run_dir: Path | None = None) -> list[ClusterInfo]:
    """Both clusters' addresses and files; pid is None for a cluster that is not running."""
    run = (run_dir or default_run_dir()).expanduser().resolve()
    state = _read_state(run) if run.is_dir() else {}
    result = []
    for lay in _layouts(run):
        info = state.get(lay.name)
        if info is not None and _is_our_broker(info.pid, lay.config):
            result.append(info)
        else:
            result.append(lay.info(None))
    return result


# --------------------------------------------------------------------------- CLI


def _print_table(infos: list[ClusterInfo]) -> None:
    rows = [("NAME", "STATE", "BOOTSTRAP", "CONTROLLER", "PID", "LOG")]
    for info in infos:
        state = "running" if info.pid is not None else "stopped"
        pid = str(info.pid) if info.pid is not None else "-"
        rows.append((info.name, state, info.bootstrap, info.controller, pid, info.log_file))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]))
    if infos:
        first = infos[0]
        print(
            f"\nlogin: {first.username} / {first.sasl_mechanism} over {first.security_protocol}; "
            f"password in {Path(first.password_file).parent.parent}/<name>/admin.password"
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway dev",
        description="Run local primary and secondary Kafka clusters for the gateway.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up", help="start both clusters (no-op if running)")
    up_parser.add_argument("--json", action="store_true", help="print cluster info as JSON")
    sub.add_parser("down", help="stop the clusters started by `up` (data is kept)")
    status_parser = sub.add_parser("status", help="show addresses and whether each is running")
    status_parser.add_argument("--json", action="store_true", help="print cluster info as JSON")
    return parser


def main(argv: list[str]) -> int:
    """`python -m gateway dev ...`; returns the process exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    # The readiness probe's per-login INFO lines are noise on a terminal.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        if args.command == "down":
            down()
            print("dev clusters stopped")
            return 0
        infos = up() if args.command == "up" else status()
    except ToolMissingError as err:
        print(err, file=sys.stderr)
        return 2
    except DevError as err:
        print(f"gateway dev {args.command}: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([dataclasses.asdict(info) for info in infos], indent=2))
    else:
        _print_table(infos)
    return 0
