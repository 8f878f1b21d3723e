"""MirrorMaker 2 beside the dev clusters: the primary replicated to the secondary.

One dedicated-mode MirrorMaker 2 (``org.apache.kafka.connect.mirror.MirrorMaker``, from
the cached Kafka jars) runs the primary→secondary flow only, over both clusters' SCRAM
listeners as the dev admin: topic names kept (IdentityReplicationPolicy), consumer group
offsets synced onto the secondary, committed data only (``read_committed``: records of
aborted transactions are not mirrored). Which topics and groups it mirrors are regular
expressions from ``$GATEWAY_DEV_MIRROR_TOPICS`` and ``$GATEWAY_DEV_MIRROR_GROUPS``
(default: all). `settings()` is the list of what the gateway relies on; the README
documents it for users who run their own MirrorMaker.

Files in the run dir: ``mirror/mm2.properties`` (0600: it holds both clusters' admin
passwords), ``mirror/mirrormaker.log`` (its output) and ``mirror.json`` (pid and what
it mirrors; no secrets). A pid counts only while /proc shows it running MirrorMaker with
that properties file. `up` starts it once both clusters serve, and restarts it when its
settings change; it is ready once it writes heartbeats to the secondary. `down` stops
it before the brokers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gateway.dev import processes
from gateway.dev.credentials import ADMIN_USER, jaas, read_password, redact, write_private
from gateway.dev.errors import DevError
from gateway.dev.jars import kafka_classpath, log4j_xml
from gateway.dev.java import java_executable
from gateway.dev.kafka import run_async
from gateway.dev.state import ClusterInfo

MAIN_CLASS = "org.apache.kafka.connect.mirror.MirrorMaker"
TOPICS_ENV = "GATEWAY_DEV_MIRROR_TOPICS"
GROUPS_ENV = "GATEWAY_DEV_MIRROR_GROUPS"
SOURCE, TARGET = "primary", "secondary"
# MirrorHeartbeatConnector's topic on the target (IdentityReplicationPolicy's name).
HEARTBEATS_TOPIC = "heartbeats"
CHECKPOINTS_TOPIC = f"{SOURCE}.checkpoints.internal"
HEAP = ("-Xms64m", "-Xmx256m")
# Starting the JVM and the three connectors takes about 10 s; more on a busy machine.
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 5.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MirrorInfo:
    """The dev MirrorMaker 2: what it mirrors, where, and what runs it (pid None when it
    does not run)."""

    source: str
    target: str
    topics: str
    groups: str
    pid: int | None
    config_file: str
    log_file: str

    @property
    def running(self) -> bool:
        return self.pid is not None


def _folder(run: Path) -> Path:
    folder = run / "mirror"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def _state_file(run: Path) -> Path:
    return run / "mirror.json"


def selection(environ: Mapping[str, str] = os.environ) -> tuple[str, str]:
    """The topic and group regular expressions to mirror (environment, else all)."""
    return environ.get(TOPICS_ENV) or ".*", environ.get(GROUPS_ENV) or ".*"


def settings(source: ClusterInfo, target: ClusterInfo, topics: str, groups: str) -> dict[str, str]:
    """MirrorMaker 2's settings, without credentials: those the gateway relies on and
    those that size it for the dev clusters."""
    flow = f"{SOURCE}->{TARGET}"
    return {
        "clusters": f"{SOURCE}, {TARGET}",
        f"{SOURCE}.bootstrap.servers": source.bootstrap_servers,
        f"{TARGET}.bootstrap.servers": target.bootstrap_servers,
        f"{flow}.enabled": "true",
        f"{TARGET}->{SOURCE}.enabled": "false",
        f"{flow}.topics": topics,
        f"{flow}.groups": groups,
        # The gateway serves the same topic names on either cluster.
        "replication.policy.class": "org.apache.kafka.connect.mirror.IdentityReplicationPolicy",
        # Committed data only: what a read_committed consumer of the source would see.
        f"{SOURCE}.consumer.isolation.level": "read_committed",
        # Groups continue on the target from offsets translated by the checkpoints.
        "sync.group.offsets.enabled": "true",
        "sync.group.offsets.interval.seconds": "1",
        "emit.checkpoints.interval.seconds": "1",
        "emit.heartbeats.interval.seconds": "1",
        # An offset sync for every record, so translated offsets trail the real ones
        # as little as the data allows (the default, 100, re-delivers up to that many).
        "offset.lag.max": "0",
        # New topics and groups within seconds (the defaults are 600 s).
        "refresh.topics.interval.seconds": "5",
        "refresh.groups.interval.seconds": "5",
        "sync.topic.configs.enabled": "true",
        # The dev clusters run no authorizer, so there are no ACLs to copy.
        "sync.topic.acls.enabled": "false",
        "tasks.max": "1",
        # Mirrored topics and MirrorMaker's own topics on the one-node secondary; the
        # offset syncs live on the source, replicated like its other topics.
        "replication.factor": str(len(target.nodes)),
        "checkpoints.topic.replication.factor": str(len(target.nodes)),
        "heartbeats.topic.replication.factor": str(len(target.nodes)),
        "offset-syncs.topic.replication.factor": str(len(source.nodes)),
        "offset.storage.replication.factor": str(len(target.nodes)),
        "config.storage.replication.factor": str(len(target.nodes)),
        "status.storage.replication.factor": str(len(target.nodes)),
    }


def properties(source: ClusterInfo, target: ClusterInfo, topics: str, groups: str) -> str:
    """mm2.properties: `settings()` and each cluster's SCRAM login (its admin password)."""
    props = settings(source, target, topics, groups)
    for name, info in ((SOURCE, source), (TARGET, target)):
        props[f"{name}.security.protocol"] = info.security_protocol
        props[f"{name}.sasl.mechanism"] = info.sasl_mechanism
        props[f"{name}.sasl.jaas.config"] = jaas(read_password(info))
    body = "\n".join(f"{key} = {value}" for key, value in props.items())
    return f"# Written by `python -m gateway dev up`; rewritten on every start.\n{body}\n"


def _recorded(run: Path) -> MirrorInfo | None:
    try:
        return MirrorInfo(**json.loads(_state_file(run).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def _record(run: Path, info: MirrorInfo) -> None:
    write_private(_state_file(run), json.dumps(asdict(info), indent=2) + "\n")


def _alive(info: MirrorInfo) -> bool:
    return processes.is_ours(info.pid, MAIN_CLASS, Path(info.config_file))


def status(run: Path) -> MirrorInfo | None:
    """The MirrorMaker `up` started here (pid None when it no longer runs), or None when
    none was ever started."""
    info = _recorded(run)
    if info is None or info.pid is None or _alive(info):
        return info
    return MirrorInfo(**{**asdict(info), "pid": None})


def _secrets(*clusters: ClusterInfo) -> list[str]:
    found = []
    for info in clusters:
        try:
            found.append(read_password(info))
        except OSError:
            continue
    return found


def _tail(log_file: Path, offset: int, clusters: tuple[ClusterInfo, ...]) -> str:
    text = processes.log_tail(log_file, offset)
    for password in _secrets(*clusters):
        text = redact(text, password)
    return text


async def heartbeats(target: ClusterInfo) -> int | None:
    """The end offset of the heartbeats topic on ``target``, None while it has none."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer: Any = AIOKafkaConsumer(
        bootstrap_servers=target.bootstrap_servers,
        client_id="gateway-dev-mirror-probe",
        security_protocol=target.security_protocol,
        sasl_mechanism=target.sasl_mechanism,
        sasl_plain_username=ADMIN_USER,
        sasl_plain_password=read_password(target),
        request_timeout_ms=int(PROBE_TIMEOUT_S * 1000),
    )
    await asyncio.wait_for(consumer.start(), PROBE_TIMEOUT_S * 2)
    try:
        if HEARTBEATS_TOPIC not in await consumer.topics():
            return None
        partition = TopicPartition(HEARTBEATS_TOPIC, 0)
        ends = await asyncio.wait_for(consumer.end_offsets([partition]), PROBE_TIMEOUT_S)
        return int(ends[partition])
    finally:
        await consumer.stop()


async def _wait_ready(
    info: MirrorInfo,
    target: ClusterInfo,
    offset: int,
    clusters: tuple[ClusterInfo, ...],
    deadline: float,
) -> None:
    """Until MirrorMaker writes a heartbeat to the target after this start."""
    started = time.monotonic()
    before: int | None = None
    first = True
    last_error = "no heartbeat yet"
    while True:
        if not _alive(info):
            raise DevError(
                "MirrorMaker 2 exited during start-up; end of "
                f"{info.log_file}:\n{_tail(Path(info.log_file), offset, clusters)}"
            )
        try:
            end = await heartbeats(target)
            if first:
                before, first = end, False
            elif end is not None and (before is None or end > before):
                return
        except Exception as err:  # any failure here means "not ready yet"
            last_error = f"{type(err).__name__}: {err}"
            for password in _secrets(*clusters):
                last_error = redact(last_error, password)
        if time.monotonic() >= deadline:
            raise DevError(
                f"MirrorMaker 2 wrote no heartbeat to {target.name} within "
                f"{time.monotonic() - started:.0f}s "
                f"({last_error}); end of {info.log_file}:\n"
                f"{_tail(Path(info.log_file), offset, clusters)}"
            )
        await asyncio.sleep(1.0)


def start(
    run: Path,
    source: ClusterInfo,
    target: ClusterInfo,
    *,
    timeout: float = START_TIMEOUT_S,
    environ: Mapping[str, str] = os.environ,
) -> MirrorInfo:
    """Start MirrorMaker 2 from ``source`` to ``target`` and wait until it writes
    heartbeats; a no-op while one runs here with the same settings, a restart when they
    changed."""
    topics, groups = selection(environ)
    folder = _folder(run)
    config = folder / "mm2.properties"
    text = properties(source, target, topics, groups)
    running = status(run)
    if running is not None and running.running:
        try:
            same = config.read_text(encoding="utf-8") == text
        except OSError:
            same = False
        if same:
            return running
        log.info("MirrorMaker 2's settings changed; restarting it")
        stop(run)
    write_private(config, text)
    log4j = folder / "log4j2.xml"
    write_private(
        log4j,
        log4j_xml("WARN", "SYSTEM_OUT", {"org.apache.kafka.connect.mirror": "INFO"}),
    )
    log_file = folder / "mirrormaker.log"
    offset = processes.open_log(log_file, "MirrorMaker 2")
    argv = [
        java_executable(),
        *HEAP,
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp",
        kafka_classpath(),
        MAIN_CLASS,
        str(config),
    ]
    pid = processes.spawn(argv, log_file)
    info = MirrorInfo(SOURCE, TARGET, topics, groups, pid, str(config), str(log_file))
    _record(run, info)
    log.info("started MirrorMaker 2 (pid %d), %s -> %s, log %s", pid, SOURCE, TARGET, log_file)
    clusters = (source, target)
    try:
        deadline = time.monotonic() + timeout
        run_async(lambda: _wait_ready(info, target, offset, clusters, deadline))
    except DevError:
        stop(run)
        raise
    return info


def stop(run: Path) -> None:
    """Stop the MirrorMaker `up` started here (SIGTERM, SIGKILL after a while)."""
    info = _recorded(run)
    if info is None or info.pid is None:
        return
    config = Path(info.config_file)
    if processes.kill(info.pid, MAIN_CLASS, config, signal.SIGTERM):
        log.info("stopping MirrorMaker 2 (pid %d)", info.pid)
        processes.wait_exit([(info.pid, config)], MAIN_CLASS, STOP_TIMEOUT_S)
    _record(run, MirrorInfo(**{**asdict(info), "pid": None}))
