"""Real Kafka client drivers for integration tests.

Each driver produces to or consumes from a Kafka endpoint (a real broker, or the
gateway acting as one broker) with an unmodified client library:

* ``java``          Kafka 4.1 console tools (``ConsoleProducer`` / ``ConsoleConsumer``),
                    launched through ``gateway.dev.java_tool_command``;
* ``confluent``     confluent-kafka (librdkafka);
* ``kafka-python``  kafka-python;
* ``aiokafka``      aiokafka (each call runs its own event loop with ``asyncio.run``);
* ``kcat``          the ``kcat`` command line tool (Debian package ``kcat``).

All public functions are synchronous and block. Async tests must not call them on
the event loop thread (the gateway under test may be serving from that loop); use
``await asyncio.to_thread(produce, ...)`` or the ``a...`` wrappers (``aproduce``,
``aconsume``, ``aconsume_group``, ``acreate_topic``, ``arun_java_tool``), which do
exactly that. Errors are ``ClientError`` (the password is redacted from their text);
subprocess failures carry the stderr tail.

``consume`` never uses a consumer group: every driver assigns the partitions itself
and starts at the earliest offset. ``consume_group`` subscribes as the only member of
a consumer group, starts at the group's committed offsets (else the earliest) and
commits what it read before leaving. ``produce`` can compress (``compression``).

Besides the drivers: ``committed_offsets``, ``watermarks`` and ``describe_group``
(confluent-kafka's admin client), ``list_topics`` per client, ``run_java_tool`` (any
Kafka command line tool, with the endpoint's connection settings in a properties
file), ``JavaGroupConsumer`` (a console consumer kept running as a group member) and
``client_versions``.

Per-client notes:

* java: the console producer cannot choose a partition; the default partitioner
  places records by key (see ``java_default_partition``). It runs with ``--sync`` so
  that a failed send fails the tool (asynchronous sends only log the error), with
  linger 0. Records without headers go through a separate producer run because the
  line reader cannot parse an empty header list. Consuming starts one
  ``ConsoleConsumer --partition N --offset earliest`` per partition, in parallel, and
  stops them once enough records were printed; the tool sets a random ``group.id``
  with auto-commit off but, assigned, never talks to the group coordinator.
  SASL settings go into a temporary 0600 ``--producer.config``/``--consumer.config``.
  In a group, one ``ConsoleConsumer --group G --from-beginning`` runs with the tool's
  default auto-commit, which commits the consumer's position when it exits.
* kcat: ``-P -p N -K <tab> -H name=value``, one kcat run per sequence of records with
  the same partition and headers (``-H`` applies to a whole run); consuming is
  ``-C -o beginning -c N -J`` (librdkafka's group-less legacy consumer), in a group
  ``-C -G group topic -c N -J`` (balanced consumer, auto-commit). Debian 12's
  kcat 1.7.1 is built on librdkafka 2.0.2, whose SCRAM is rejected by Kafka 4.x
  (see ``_kcat_env``): for SCRAM endpoints kcat loads confluent-kafka's librdkafka.
* confluent: the Python binding insists on a ``group.id`` even in assign mode, so a
  throw-away one is set with auto-commit off; it never joins nor commits, but
  librdkafka still looks up (FindCoordinator) that group's coordinator.

Text tools (java, kcat) carry keys, values and headers as lines of text, so for
them every key, value, header name and header value must be printable ASCII; header
names must not contain ``:`` (java) or ``=`` (kcat). ``produce`` checks this up front.
Null keys, values and header values are not modelled: Python drivers read them as b"".
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

CLIENTS = ("java", "confluent", "kafka-python", "aiokafka", "kcat")

COMPRESSION_CODECS = ("gzip", "snappy", "lz4", "zstd")

# Consumer group protocols each client can speak: "classic" (JoinGroup/SyncGroup) and,
# for the clients that have it, "consumer" (KIP-848, ConsumerGroupHeartbeat).
GROUP_PROTOCOLS: dict[str, tuple[str, ...]] = {
    "java": ("classic", "consumer"),
    "confluent": ("classic", "consumer"),
    "kafka-python": ("classic",),
    "aiokafka": ("classic",),
    "kcat": ("classic",),
}

# Members of a classic group heartbeat this often (ms), so that a rebalance started by
# another member joining or leaving reaches them quickly (the default is 3 s).
CLASSIC_HEARTBEAT_MS = 500

JAVA_PRODUCER = "org.apache.kafka.tools.ConsoleProducer"
JAVA_CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"

# Java console tools: control characters separate the fields of a line, so any
# printable ASCII can be carried in keys, values and header values.
_J_KEY_SEP = "\x1f"  # key / value (and every column of the consumer's output)
_J_HEADERS_DELIM = "\x1e"  # headers / key
_J_HEADERS_SEP = "\x1d"  # header / header (a regex on the producer side: keep it literal)
_J_HEADER_KV_SEP = "\x1c"  # header name / value when producing (the consumer prints ':')
_J_NO_HEADERS = "NO_HEADERS"

_JAVA_FAST_START = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")

_KCAT_KEY_SEP = "\t"

_STDERR_TAIL = 4000


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect."""

    bootstrap: str
    security_protocol: str = "PLAINTEXT"  # or "SASL_PLAINTEXT"
    sasl_mechanism: str | None = None  # "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.upper().startswith("SASL")

    def redact(self, text: str) -> str:
        """``text`` with the password replaced by ``***``."""
        if self.password:
            return text.replace(self.password, "***")
        return text


@dataclass(frozen=True, order=True)
class Record:
    """One Kafka record. ``offset`` is -1 for records about to be produced."""

    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


class ClientError(RuntimeError):
    """A driver failed: a delivery error, a client error or a failed subprocess."""


# --------------------------------------------------------------------------- public API


def produce(
    client: str,
    ep: Endpoint,
    topic: str,
    records: Sequence[Record],
    *,
    timeout: float = 120,
    compression: str | None = None,
) -> None:
    """Send every record with ``client`` and wait until all are acknowledged.

    Each record goes to ``record.partition``, except with ``java``: the console producer
    has no way to choose a partition, so the default partitioner places each record by
    its key (murmur2(key) % partitions). Callers then compare against what a reference
    consumer reads. ``compression`` (one of ``COMPRESSION_CODECS``) is the producer's
    ``compression.type``; kafka-python and aiokafka only have gzip without extra
    packages. Raises ``ClientError`` on any delivery error; ``ValueError`` if a text tool
    cannot carry a record.
    """
    if not records:
        return
    driver = _PRODUCERS.get(client)
    if driver is None:
        raise ValueError(f"unknown client {client!r}; expected one of {CLIENTS}")
    if compression is not None and compression not in COMPRESSION_CODECS:
        raise ValueError(f"unknown compression {compression!r}; expected {COMPRESSION_CODECS}")
    with _client_errors(client, ep):
        driver(ep, topic, list(records), timeout, compression)


def consume(
    client: str, ep: Endpoint, topic: str, partitions: int, expected: int, timeout: float = 60
) -> list[Record]:
    """Read partitions ``0..partitions-1`` of ``topic`` from their earliest offset.

    No consumer group is used. Stops once at least ``expected`` records were read or
    ``timeout`` seconds passed, whichever comes first (so a short read is returned, not
    raised: the caller's assertion shows what is missing). Returns the records sorted by
    (partition, offset). ``expected <= 0`` returns ``[]`` at once.
    """
    driver = _CONSUMERS.get(client)
    if driver is None:
        raise ValueError(f"unknown client {client!r}; expected one of {CLIENTS}")
    if expected <= 0:
        return []
    with _client_errors(client, ep):
        return sorted(driver(ep, topic, partitions, expected, timeout))


def create_topic(
    ep: Endpoint,
    name: str,
    partitions: int,
    replication_factor: int = 1,
    *,
    timeout: float = 30,
) -> None:
    """Create ``name`` and wait until every partition has a leader."""
    with _client_errors("aiokafka admin", ep):
        _run_async(lambda: _create_topic(ep, name, partitions, replication_factor, timeout))


async def aproduce(
    client: str,
    ep: Endpoint,
    topic: str,
    records: Sequence[Record],
    *,
    timeout: float = 120,
    compression: str | None = None,
) -> None:
    """``produce`` in a worker thread, for async tests."""
    await asyncio.to_thread(
        functools.partial(
            produce, client, ep, topic, records, timeout=timeout, compression=compression
        )
    )


async def aconsume(
    client: str, ep: Endpoint, topic: str, partitions: int, expected: int, timeout: float = 60
) -> list[Record]:
    """``consume`` in a worker thread, for async tests."""
    return await asyncio.to_thread(consume, client, ep, topic, partitions, expected, timeout)


async def acreate_topic(
    ep: Endpoint, name: str, partitions: int, replication_factor: int = 1
) -> None:
    """``create_topic`` in a worker thread, for async tests."""
    await asyncio.to_thread(create_topic, ep, name, partitions, replication_factor)


def consume_group(
    client: str,
    ep: Endpoint,
    topic: str,
    group: str,
    expected: int,
    timeout: float = 60,
    *,
    group_protocol: str = "classic",
) -> list[Record]:
    """Read ``topic`` as the only member of consumer group ``group``, then commit.

    The client subscribes to the topic (the group coordinator assigns the partitions),
    starts at the group's committed offsets or, where there are none, at the earliest
    offset, and stops once at least ``expected`` records were read or ``timeout``
    seconds passed. Before leaving the group it commits the offset after the last
    record it read in each partition (java: the tool's auto-commit on exit commits the
    consumer's position, which is the same when ``expected`` is what there is to read;
    kcat: auto-commit of the records it printed). Everything read is returned, sorted
    by (partition, offset), even beyond ``expected``: a consumer that starts from the
    wrong offset shows up in the result. ``group_protocol`` is ``"classic"`` or
    ``"consumer"`` (KIP-848; see ``GROUP_PROTOCOLS``).
    """
    driver = _GROUP_CONSUMERS.get(client)
    if driver is None:
        raise ValueError(f"unknown client {client!r}; expected one of {CLIENTS}")
    if group_protocol not in GROUP_PROTOCOLS[client]:
        raise ValueError(f"{client} does not speak group protocol {group_protocol!r}")
    if expected <= 0:
        return []
    with _client_errors(client, ep):
        return sorted(driver(ep, topic, group, expected, timeout, group_protocol))


async def aconsume_group(
    client: str,
    ep: Endpoint,
    topic: str,
    group: str,
    expected: int,
    timeout: float = 60,
    *,
    group_protocol: str = "classic",
) -> list[Record]:
    """``consume_group`` in a worker thread, for async tests."""
    return await asyncio.to_thread(
        functools.partial(
            consume_group,
            client,
            ep,
            topic,
            group,
            expected,
            timeout,
            group_protocol=group_protocol,
        )
    )


def committed_offsets(
    ep: Endpoint, group: str, topic: str, partitions: int, *, timeout: float = 30
) -> dict[int, int]:
    """The offsets ``group`` has committed on ``topic`` (negative where it has none).

    Asked with confluent-kafka's admin client (OffsetFetch).
    """
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient

    with _client_errors("confluent list_consumer_group_offsets", ep):
        admin = AdminClient(_librdkafka_conf(ep))
        request = ConsumerGroupTopicPartitions(
            group, [TopicPartition(topic, p) for p in range(partitions)]
        )
        (future,) = admin.list_consumer_group_offsets([request], request_timeout=timeout).values()
        return {tp.partition: tp.offset for tp in future.result(timeout).topic_partitions}


def watermarks(
    ep: Endpoint, topic: str, partitions: int, *, timeout: float = 30
) -> dict[int, tuple[int, int]]:
    """``{partition: (low, high)}``: log start and end offsets, asked with ListOffsets."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec

    with _client_errors("confluent list_offsets", ep):
        admin = AdminClient(_librdkafka_conf(ep))
        ends: dict[str, dict[int, int]] = {}
        for name, spec in (("low", OffsetSpec.earliest()), ("high", OffsetSpec.latest())):
            futures = admin.list_offsets(
                {TopicPartition(topic, p): spec for p in range(partitions)},
                request_timeout=timeout,
            )
            ends[name] = {tp.partition: f.result(timeout).offset for tp, f in futures.items()}
        return {p: (ends["low"][p], ends["high"][p]) for p in range(partitions)}


@dataclass(frozen=True)
class GroupDescription:
    """A consumer group as DescribeGroups / ConsumerGroupDescribe report it."""

    state: str  # e.g. "STABLE", "EMPTY", "PREPARING_REBALANCE"
    type: str  # "CLASSIC" or "CONSUMER" (KIP-848)
    members: dict[str, frozenset[tuple[str, int]]]  # member id -> its (topic, partition)s


def describe_group(ep: Endpoint, group: str, *, timeout: float = 30) -> GroupDescription:
    """Describe ``group`` with confluent-kafka's admin client."""
    from confluent_kafka.admin import AdminClient

    with _client_errors("confluent describe_consumer_groups", ep):
        admin = AdminClient(_librdkafka_conf(ep))
        (future,) = admin.describe_consumer_groups([group], request_timeout=timeout).values()
        desc = future.result(timeout)
        return GroupDescription(
            state=desc.state.name,
            type=desc.type.name,
            members={
                m.member_id: frozenset(
                    (tp.topic, tp.partition) for tp in m.assignment.topic_partitions
                )
                for m in desc.members
            },
        )


def run_java_tool(
    ep: Endpoint,
    main_class: str,
    *args: str,
    config_option: str | None = "--command-config",
    timeout: float = 120,
) -> str:
    """Run a Kafka Java tool against ``ep`` and return its stdout.

    The connection settings (SASL included) go into a temporary 0600 properties file
    passed as ``config_option FILE`` before ``args`` (``--command-config`` for the admin
    tools, ``--producer.config`` for ProducerPerformance, None for tools that do not
    connect); the caller passes the bootstrap option its tool wants. Raises
    ``ClientError`` (with the output tail) if the tool exits non-zero or outlives
    ``timeout``.
    """
    with _client_errors(main_class, ep), _java_config(ep) as config:
        config_args = (config_option, config) if config_option else ()
        # First: tools with sub-commands (kafka-transactions) take it before them.
        proc = _Proc(_java_command(main_class, *config_args, *args), ep)
        proc.run(timeout)
        return "\n".join(proc.stdout)


async def arun_java_tool(
    ep: Endpoint,
    main_class: str,
    *args: str,
    config_option: str | None = "--command-config",
    timeout: float = 120,
) -> str:
    """``run_java_tool`` in a worker thread, for async tests."""
    return await asyncio.to_thread(
        functools.partial(
            run_java_tool, ep, main_class, *args, config_option=config_option, timeout=timeout
        )
    )


def client_versions() -> dict[str, str]:
    """The version of every client the drivers use (for a compatibility table)."""
    import aiokafka
    import confluent_kafka
    import kafka

    from gateway import dev

    exe, librdkafka = _kcat_executable()
    out = subprocess.run([exe, "-V"], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"Version (\S+)", out)
    kcat = match.group(1) if match else "?"
    return {
        "java": f"Apache Kafka {dev.KAFKA_VERSION} clients and tools",
        "confluent": (
            f"confluent-kafka {confluent_kafka.__version__} "
            f"(librdkafka {confluent_kafka.libversion()[0]})"
        ),
        "kafka-python": f"kafka-python {kafka.__version__}",
        "aiokafka": f"aiokafka {aiokafka.__version__}",
        "kcat": f"kcat {kcat} (librdkafka {'.'.join(map(str, librdkafka))})",
    }


def list_topics(client: str, ep: Endpoint, *, timeout: float = 30) -> set[str]:
    """The names of all topics, as ``client`` lists them (a Metadata request for all topics).

    ``java`` is not offered here: ``kafka-topics --list`` is run as a tool.
    """
    with _client_errors(f"{client} list topics", ep):
        if client == "confluent":
            from confluent_kafka.admin import AdminClient

            return set(AdminClient(_librdkafka_conf(ep)).list_topics(timeout=timeout).topics)
        if client == "kafka-python":
            from kafka import KafkaAdminClient

            admin = _kafka_python_build(KafkaAdminClient, **_python_sasl_kwargs(ep))
            try:
                return set(admin.list_topics())
            finally:
                admin.close()
        if client == "aiokafka":
            return _run_async(lambda: _aiokafka_list_topics(ep))
        if client == "kcat":
            proc = _Proc(_kcat_command(ep, "-L", "-J"), ep, env=_kcat_env(ep))
            proc.run(timeout)
            (listing,) = [json.loads(line) for line in proc.stdout if line.startswith("{")]
            return {t["topic"] for t in listing["topics"]}
    raise ValueError(f"list_topics: unsupported client {client!r}")


def librdkafka_config(ep: Endpoint) -> dict[str, str]:
    """Connection settings for a confluent-kafka client of ``ep``."""
    return _librdkafka_conf(ep)


def python_client_config(ep: Endpoint) -> dict[str, Any]:
    """Connection settings for a kafka-python or aiokafka client of ``ep``."""
    return _python_sasl_kwargs(ep)


def java_default_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for a non-null ``key``."""
    from kafka.partitioner.default import murmur2

    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def unique_topic(prefix: str = "it") -> str:
    """A fresh topic name."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------- helpers


def _run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``factory()`` on a fresh event loop; refuse to block a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        running = False
    else:
        running = True
    if running:
        raise ClientError(
            "called from a running event loop: use `await asyncio.to_thread(...)` "
            "(or the aproduce/aconsume/acreate_topic wrappers)"
        )
    return asyncio.run(factory())


@contextlib.contextmanager
def _client_errors(client: str, ep: Endpoint) -> Iterator[None]:
    """Turn a client library's exception into a ``ClientError`` without the password."""
    try:
        yield
    except (ClientError, ValueError):
        raise
    except Exception as exc:
        # `from None`: the chained original would bypass the redaction.
        raise _fail(ep, f"{client}: {type(exc).__name__}: {exc}") from None


def _tail(text: str, limit: int = _STDERR_TAIL) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def _fail(ep: Endpoint, message: str) -> ClientError:
    return ClientError(ep.redact(message))


def _check_text(client: str, records: Sequence[Record], header_name_forbidden: str) -> None:
    """Reject what a line-oriented tool cannot carry faithfully."""

    def printable(data: bytes) -> bool:
        return all(0x20 <= b <= 0x7E for b in data)

    for rec in records:
        fields = [rec.key, rec.value, *(v for _, v in rec.headers)]
        names = [n.encode("utf-8", "replace") for n, _ in rec.headers]
        if not all(printable(f) for f in fields + names):
            raise ValueError(f"{client}: keys, values and headers must be printable ASCII: {rec}")
        if any(header_name_forbidden in n for n, _ in rec.headers):
            raise ValueError(f"{client}: header names must not contain {header_name_forbidden!r}")


def _python_sasl_kwargs(ep: Endpoint) -> dict[str, Any]:
    """Connection settings shared by kafka-python and aiokafka."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": ep.bootstrap,
        "security_protocol": ep.security_protocol,
    }
    if ep.uses_sasl:
        kwargs |= {
            "sasl_mechanism": ep.sasl_mechanism or "PLAIN",
            "sasl_plain_username": ep.username,
            "sasl_plain_password": ep.password,
        }
    return kwargs


def _librdkafka_conf(ep: Endpoint) -> dict[str, str]:
    """Connection settings for librdkafka (confluent-kafka and kcat)."""
    conf = {"bootstrap.servers": ep.bootstrap, "security.protocol": ep.security_protocol}
    if ep.uses_sasl:
        conf |= {
            "sasl.mechanisms": ep.sasl_mechanism or "PLAIN",
            "sasl.username": ep.username or "",
            "sasl.password": ep.password or "",
        }
    return conf


def _headers_of(raw: Any) -> tuple[tuple[str, bytes], ...]:
    return tuple((str(k), bytes(v) if v is not None else b"") for k, v in raw or ())


def _python_record(msg: Any) -> Record:
    """A kafka-python or aiokafka ``ConsumerRecord`` as a ``Record``."""
    return Record(
        partition=msg.partition,
        offset=msg.offset,
        key=msg.key or b"",
        value=msg.value or b"",
        headers=_headers_of(msg.headers),
    )


def _deadline_left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


# --------------------------------------------------------------------------- subprocesses


class _Proc:
    """A subprocess whose stdout lines and stderr are collected by reader threads."""

    def __init__(
        self,
        cmd: list[str],
        ep: Endpoint,
        on_line: Callable[[str], bool] | None = None,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.cmd = cmd
        self.ep = ep
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.stopped_by_us = False
        self._on_line = on_line
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=env,
        )
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        if stdin is not None:
            self._threads.append(threading.Thread(target=self._write, args=(stdin,), daemon=True))
        for t in self._threads:
            t.start()

    def _write(self, data: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ValueError), self.proc.stdin:
            self.proc.stdin.write(data)

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                line = line.rstrip("\n")
                if self._on_line is None or not self._on_line(line):
                    self.stdout.append(line)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        with self.proc.stderr:
            for line in self.proc.stderr:
                self.stderr.append(line.rstrip("\n"))

    def running(self) -> bool:
        return self.proc.poll() is None

    def terminate(self) -> None:
        """Ask the process to exit, if it still runs (``stop`` then waits for it)."""
        if self.running():
            self.stopped_by_us = True
            self.proc.terminate()

    def stop(self) -> None:
        """Terminate (then kill) the process if it still runs."""
        if self.running():
            self.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait()
        for t in self._threads:
            t.join(10)

    def wait(self, timeout: float) -> bool:
        """Wait for exit; False if the process outlived ``timeout`` and had to be stopped."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            return False
        for t in self._threads:
            t.join(10)
        return True

    def run(self, timeout: float) -> None:
        """Wait for a successful exit within ``timeout``; raise otherwise."""
        if not self.wait(timeout):
            raise self.error(f"timed out after {timeout:.0f}s")
        self.check()

    def diagnostics(self) -> str:
        return "\n".join(self.stderr + self.stdout)

    def error(self, what: str) -> ClientError:
        args = self.cmd[1:]
        if "-cp" in args:  # java: show the main class and its arguments, not the classpath
            args = args[args.index("-cp") + 2 :]
        cmd = " ".join([Path(self.cmd[0]).name, *args])
        return _fail(
            self.ep,
            f"{cmd!r} {what} (exit {self.proc.returncode}); output tail:\n"
            + _tail(self.diagnostics()),
        )

    def check(self) -> None:
        if self.proc.returncode != 0:
            raise self.error("failed")


# --------------------------------------------------------------------------- java


@contextlib.contextmanager
def _java_config(ep: Endpoint) -> Iterator[str]:
    """A temporary client properties file holding the connection settings."""
    lines = [f"security.protocol={ep.security_protocol}"]
    if ep.uses_sasl:
        mechanism = ep.sasl_mechanism or "PLAIN"
        module = (
            "org.apache.kafka.common.security.plain.PlainLoginModule"
            if mechanism.upper() == "PLAIN"
            else "org.apache.kafka.common.security.scram.ScramLoginModule"
        )
        jaas = (
            f"{module} required username={_jaas_quote(ep.username or '')} "
            f"password={_jaas_quote(ep.password or '')};"
        )
        lines += [f"sasl.mechanism={mechanism}", f"sasl.jaas.config={_properties_escape(jaas)}"]
    with tempfile.TemporaryDirectory(prefix="kafka-client-") as tmp:
        path = Path(tmp) / "client.properties"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        yield str(path)


def _jaas_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _properties_escape(value: str) -> str:
    out = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return "\\" + out if out.startswith((" ", "\t")) else out


def _java_command(main_class: str, *args: str) -> list[str]:
    from gateway import dev  # imported lazily: only the java driver needs it

    cmd = list(dev.java_tool_command(main_class, *args))
    # Short-lived JVMs: skip the optimising JIT and the parallel GC to start faster.
    return cmd[:1] + list(_JAVA_FAST_START) + cmd[1:]


def _java_line(rec: Record) -> str:
    line = rec.key.decode() + _J_KEY_SEP + rec.value.decode()
    if rec.headers:
        headers = _J_HEADERS_SEP.join(k + _J_HEADER_KV_SEP + v.decode() for k, v in rec.headers)
        line = headers + _J_HEADERS_DELIM + line
    return line + "\n"


def _java_produce(
    ep: Endpoint, topic: str, records: list[Record], timeout: float, compression: str | None
) -> None:
    _check_text("java", records, ":")
    deadline = time.monotonic() + timeout
    with _java_config(ep) as config:
        # LineMessageReader cannot parse an empty header list, so records with and
        # without headers go through separate runs (each run keeps input order).
        for has_headers, run in itertools.groupby(records, key=lambda r: bool(r.headers)):
            cmd = _java_command(
                JAVA_PRODUCER,
                "--bootstrap-server", ep.bootstrap,
                "--topic", topic,
                "--producer.config", config,
                "--sync",  # a failed send then fails the tool (async sends only log errors)
                "--request-timeout-ms", "30000",
                "--timeout", "0",  # linger.ms: --sync would otherwise wait 1s per record
                "--property", "parse.key=true",
                "--property", f"key.separator={_J_KEY_SEP}",
                "--property", f"parse.headers={'true' if has_headers else 'false'}",
                "--property", f"headers.delimiter={_J_HEADERS_DELIM}",
                "--property", f"headers.separator={_J_HEADERS_SEP}",
                "--property", f"headers.key.separator={_J_HEADER_KV_SEP}",
                *(("--compression-codec", compression) if compression else ()),
            )  # fmt: skip
            proc = _Proc(cmd, ep, stdin="".join(_java_line(r) for r in run))
            proc.run(_deadline_left(deadline))
            if "Error when sending message" in proc.diagnostics():
                raise proc.error("reported a delivery error")


def _parse_java_line(line: str) -> Record | None:
    cols = line.split(_J_KEY_SEP)
    if len(cols) != 5 or not cols[0].startswith("Partition:"):
        return None
    part, offset, headers, key, value = cols
    parsed: list[tuple[str, bytes]] = []
    if headers != _J_NO_HEADERS:
        for pair in headers.split(_J_HEADERS_SEP):
            name, _, val = pair.partition(":")
            parsed.append((name, val.encode()))
    return Record(
        partition=int(part.removeprefix("Partition:")),
        offset=int(offset.removeprefix("Offset:")),
        key=key.encode(),
        value=value.encode(),
        headers=tuple(parsed),
    )


def _java_consume(
    ep: Endpoint, topic: str, partitions: int, expected: int, timeout: float
) -> list[Record]:
    deadline = time.monotonic() + timeout
    records: list[Record] = []
    lock = threading.Lock()
    enough = threading.Event()

    def on_line(line: str) -> bool:
        rec = _parse_java_line(line)
        if rec is None:
            return False
        with lock:
            records.append(rec)
            if len(records) >= expected:
                enough.set()
        return True

    with _java_config(ep) as config:
        procs: list[_Proc] = []
        try:
            for partition in range(partitions):
                cmd = _java_command(
                    JAVA_CONSUMER,
                    "--bootstrap-server", ep.bootstrap,
                    "--topic", topic,
                    "--partition", str(partition),
                    "--offset", "earliest",
                    "--timeout-ms", str(max(1000, int(timeout * 1000))),
                    "--consumer.config", config,
                    "--property", "print.partition=true",
                    "--property", "print.offset=true",
                    "--property", "print.headers=true",
                    "--property", "print.key=true",
                    "--property", f"key.separator={_J_KEY_SEP}",
                    "--property", f"headers.separator={_J_HEADERS_SEP}",
                )  # fmt: skip
                procs.append(_Proc(cmd, ep, on_line=on_line))
            while not enough.is_set() and time.monotonic() < deadline:
                exited = [p for p in procs if not p.running()]
                if len(exited) == len(procs) or any(p.proc.returncode for p in exited):
                    break
                enough.wait(0.05)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.stop()
        for p in procs:
            _check_java_consumer(p)
    with lock:
        return list(records)


def _check_java_consumer(proc: _Proc) -> None:
    """A console consumer that exited on its own must have stopped on its idle timeout."""
    if proc.stopped_by_us:
        return
    proc.check()
    diag = proc.diagnostics()
    # ConsoleConsumer logs any poll failure, then exits 0: tell that from the idle timeout.
    failed = "Error processing message" in diag and "TimeoutException" not in diag
    if failed or "Authentication failed" in diag:
        raise proc.error("stopped with an error")


# --------------------------------------------------------------------------- kcat


@functools.cache
def _kcat_executable() -> tuple[str, tuple[int, ...]]:
    """kcat's path and the version of the librdkafka it loads."""
    exe = shutil.which("kcat") or shutil.which("kafkacat")
    if exe is None:
        raise ClientError("kcat is not installed (apt-get install -y kcat)")
    out = subprocess.run([exe, "-V"], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"librdkafka (\d+)\.(\d+)\.(\d+)", out)
    return exe, tuple(int(g) for g in match.groups()) if match else (0, 0, 0)


@functools.cache
def _bundled_librdkafka_dir() -> str | None:
    """A directory holding confluent-kafka's own librdkafka as ``librdkafka.so.1``."""
    import confluent_kafka

    libs = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
    found = sorted(libs.glob("librdkafka*.so.1"))
    if not found:
        return None
    target = Path(tempfile.gettempdir()) / f"kcat-librdkafka-{confluent_kafka.version()[0]}"
    target.mkdir(exist_ok=True)
    link = target / "librdkafka.so.1"
    with contextlib.suppress(FileExistsError):
        link.symlink_to(found[0])
    return str(target)


def _kcat_env(ep: Endpoint) -> dict[str, str] | None:
    """Environment for kcat: works around librdkafka's SCRAM bug where needed.

    librdkafka before 2.6.1 (Debian 12 ships kcat 1.7.1 on librdkafka 2.0.2) repeats
    the client nonce in its SCRAM client-final-message; Kafka 4.x brokers check the
    nonce strictly (RFC 5802) and reject the login. For SCRAM endpoints the unmodified
    kcat binary then loads the newer librdkafka bundled with confluent-kafka.
    """
    _, version = _kcat_executable()
    scram = (ep.sasl_mechanism or "").upper().startswith("SCRAM")
    if not (ep.uses_sasl and scram and version < (2, 6, 1)):
        return None
    libdir = _bundled_librdkafka_dir()
    if libdir is None:
        return None
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libdir, env.get("LD_LIBRARY_PATH")]))
    return env


def _kcat_command(ep: Endpoint, *args: str) -> list[str]:
    exe, _ = _kcat_executable()
    cmd = [exe, *args]
    for key, value in _librdkafka_conf(ep).items():
        if key != "bootstrap.servers":
            cmd += ["-X", f"{key}={value}"]
    return cmd + ["-b", ep.bootstrap]


def _kcat_produce(
    ep: Endpoint, topic: str, records: list[Record], timeout: float, compression: str | None
) -> None:
    _check_text("kcat", records, "=")
    deadline = time.monotonic() + timeout
    by_partition: dict[int, list[Record]] = {}
    for rec in records:
        by_partition.setdefault(rec.partition, []).append(rec)

    def run_partition(partition: int, recs: list[Record]) -> None:
        # -H applies to every message of a run: one kcat per run of equal headers.
        for headers, run in itertools.groupby(recs, key=lambda r: r.headers):
            header_args = [a for k, v in headers for a in ("-H", f"{k}={v.decode()}")]
            cmd = _kcat_command(
                ep, "-P", "-t", topic, "-p", str(partition), "-K", _KCAT_KEY_SEP, *header_args
            )
            if compression:
                cmd[1:1] = ["-z", compression]
            lines = "".join(f"{r.key.decode()}{_KCAT_KEY_SEP}{r.value.decode()}\n" for r in run)
            proc = _Proc(cmd, ep, stdin=lines, env=_kcat_env(ep))
            proc.run(_deadline_left(deadline))

    with ThreadPoolExecutor(max_workers=max(1, len(by_partition))) as pool:
        futures = [pool.submit(run_partition, p, recs) for p, recs in by_partition.items()]
        for fut in futures:
            fut.result()


def _kcat_consume(
    ep: Endpoint, topic: str, partitions: int, expected: int, timeout: float
) -> list[Record]:
    # Without -G kcat uses librdkafka's legacy (group-less) consumer on every partition.
    cmd = _kcat_command(ep, "-C", "-t", topic, "-o", "beginning", "-c", str(expected), "-J", "-u")
    proc = _Proc(cmd, ep, env=_kcat_env(ep))
    if proc.wait(timeout):  # exited by itself: after -c records, or on an error
        proc.check()
    return _kcat_records(proc.stdout, partitions)


def _kcat_records(lines: list[str], partitions: int | None) -> list[Record]:
    """The records of kcat's ``-J`` output (only partitions below ``partitions``)."""
    records: list[Record] = []
    for line in lines:
        if not line.startswith("{"):
            continue
        msg = json.loads(line)
        if partitions is not None and msg["partition"] >= partitions:
            continue
        headers = msg.get("headers") or []
        records.append(
            Record(
                partition=msg["partition"],
                offset=msg["offset"],
                key=(msg.get("key") or "").encode(),
                value=(msg.get("payload") or "").encode(),
                headers=tuple(
                    (headers[i], (headers[i + 1] or "").encode()) for i in range(0, len(headers), 2)
                ),
            )
        )
    return records


# --------------------------------------------------------------------------- confluent-kafka


def _confluent_produce(
    ep: Endpoint, topic: str, records: list[Record], timeout: float, compression: str | None
) -> None:
    from confluent_kafka import KafkaError, Message, Producer

    errors: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(f"partition {msg.partition()}: {err}")

    producer = Producer(
        {
            **_librdkafka_conf(ep),
            "acks": "all",
            "message.timeout.ms": int(timeout * 1000),
            "compression.type": compression or "none",
            "error_cb": _confluent_error_cb(errors),
        }
    )
    deadline = time.monotonic() + timeout
    try:
        for rec in records:
            producer.produce(
                topic,
                key=rec.key,
                value=rec.value,
                partition=rec.partition,
                headers=list(rec.headers),
                on_delivery=on_delivery,
            )
            producer.poll(0)
        # flush(), but give up at the first fatal or authentication error.
        while len(producer) and not errors and time.monotonic() < deadline:
            producer.poll(0.1)
        remaining = len(producer)
    finally:
        producer.purge()
        producer.flush(0)
        producer.close()
    if errors or remaining:
        raise _fail(ep, f"confluent: {remaining} undelivered; errors: {errors[:5]}")


def _confluent_error_cb(sink: list[str]) -> Callable[[Any], None]:
    """An ``error_cb`` recording errors that retrying will not cure."""
    from confluent_kafka import KafkaError

    def on_error(err: KafkaError) -> None:
        if err.fatal() or err.code() == KafkaError._AUTHENTICATION:
            sink.append(str(err))

    return on_error


def _confluent_consume(
    ep: Endpoint, topic: str, partitions: int, expected: int, timeout: float
) -> list[Record]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    fatal: list[str] = []
    consumer = Consumer(
        {
            **_librdkafka_conf(ep),
            # Required by the Python binding even for assign(); never joined nor committed.
            "group.id": f"it-assign-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "error_cb": _confluent_error_cb(fatal),
        }
    )
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        records = _confluent_poll(ep, consumer, expected, timeout, fatal)
    finally:
        consumer.close()
    if fatal:
        raise _fail(ep, f"confluent: {fatal[0]}")
    return records


def _confluent_poll(
    ep: Endpoint, consumer: Any, expected: int, timeout: float, fatal: list[str]
) -> list[Record]:
    """Poll until ``expected`` records, the timeout, or a fatal client error."""
    from confluent_kafka import KafkaError

    deadline = time.monotonic() + timeout
    records: list[Record] = []
    while len(records) < expected and not fatal:
        left = _deadline_left(deadline)
        if left <= 0:
            break
        for msg in consumer.consume(num_messages=expected, timeout=min(left, 0.5)):
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise _fail(ep, f"confluent: consume error: {err}")
            records.append(_confluent_record(msg))
    return records


def _confluent_record(msg: Any) -> Record:
    return Record(
        partition=msg.partition() or 0,
        offset=msg.offset() or 0,
        key=msg.key() or b"",
        value=msg.value() or b"",
        headers=_headers_of(msg.headers()),
    )


# --------------------------------------------------------------------------- kafka-python


def _kafka_python_build(cls: Callable[..., T], **configs: Any) -> T:
    """``cls(**configs)``, closing the network client if the constructor fails.

    KafkaProducer/KafkaConsumer bootstrap inside their constructor; when that fails
    (bad credentials, no broker) the client they created is left open. The documented
    ``kafka_client`` hook lets us keep hold of it and close it.
    """
    from kafka.net.compat import KafkaNetClient

    created: list[Any] = []

    def make_client(**kwargs: Any) -> Any:
        client = KafkaNetClient(**kwargs)
        created.append(client)
        return client

    try:
        return cls(**configs, kafka_client=make_client)
    except BaseException:
        for client in created:
            client.close()
        raise


def _kafka_python_produce(
    ep: Endpoint, topic: str, records: list[Record], timeout: float, compression: str | None
) -> None:
    from kafka import KafkaProducer

    producer = _kafka_python_build(
        KafkaProducer,
        **_python_sasl_kwargs(ep),
        acks="all",
        compression_type=compression,
        max_block_ms=int(timeout * 1000),
        bootstrap_timeout_ms=int(timeout * 1000),
    )
    try:
        futures = [
            producer.send(
                topic,
                key=rec.key,
                value=rec.value,
                partition=rec.partition,
                headers=list(rec.headers),
            )
            for rec in records
        ]
        deadline = time.monotonic() + timeout
        producer.flush(timeout)
        for fut in futures:
            try:
                fut.get(timeout=max(1.0, _deadline_left(deadline)))
            except Exception as exc:
                raise _fail(ep, f"kafka-python: delivery failed: {exc!r}") from exc
    finally:
        producer.close(timeout=10)


def _kafka_python_consume(
    ep: Endpoint, topic: str, partitions: int, expected: int, timeout: float
) -> list[Record]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = _kafka_python_build(
        KafkaConsumer,
        **_python_sasl_kwargs(ep),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        bootstrap_timeout_ms=int(timeout * 1000),
    )
    deadline = time.monotonic() + timeout
    records: list[Record] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        while len(records) < expected:
            left = _deadline_left(deadline)
            if left <= 0:
                break
            batches = consumer.poll(timeout_ms=int(min(left, 0.5) * 1000))
            for batch in batches.values():
                records.extend(_python_record(m) for m in batch)
    finally:
        consumer.close(autocommit=False)
    return records


# --------------------------------------------------------------------------- aiokafka


def _aiokafka_produce(
    ep: Endpoint, topic: str, records: list[Record], timeout: float, compression: str | None
) -> None:
    _run_async(
        lambda: asyncio.wait_for(_aiokafka_produce_async(ep, topic, records, compression), timeout)
    )


async def _aiokafka_produce_async(
    ep: Endpoint, topic: str, records: list[Record], compression: str | None
) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**_python_sasl_kwargs(ep), acks="all", compression_type=compression)
    try:
        await producer.start()
        futures = [
            await producer.send(
                topic,
                key=rec.key,
                value=rec.value,
                partition=rec.partition,
                headers=list(rec.headers),
            )
            for rec in records
        ]
        await producer.flush()
        for fut in futures:
            try:
                await fut
            except Exception as exc:
                raise _fail(ep, f"aiokafka: delivery failed: {exc!r}") from exc
    finally:
        await producer.stop()


def _aiokafka_consume(
    ep: Endpoint, topic: str, partitions: int, expected: int, timeout: float
) -> list[Record]:
    return _run_async(lambda: _aiokafka_consume_async(ep, topic, partitions, expected, timeout))


async def _aiokafka_consume_async(
    ep: Endpoint, topic: str, partitions: int, expected: int, timeout: float
) -> list[Record]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        **_python_sasl_kwargs(ep),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    deadline = time.monotonic() + timeout
    records: list[Record] = []
    try:
        await consumer.start()
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while len(records) < expected:
            left = _deadline_left(deadline)
            if left <= 0:
                break
            batches = await consumer.getmany(timeout_ms=int(min(left, 0.5) * 1000))
            for batch in batches.values():
                records.extend(_python_record(m) for m in batch)
    finally:
        await consumer.stop()
    return records


async def _aiokafka_list_topics(ep: Endpoint) -> set[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**_python_sasl_kwargs(ep))
    try:
        await admin.start()
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def _create_topic(
    ep: Endpoint, name: str, partitions: int, replication_factor: int, timeout: float
) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(**_python_sasl_kwargs(ep))
    try:
        await admin.start()
        response = await admin.create_topics(
            [NewTopic(name, partitions, replication_factor)], timeout_ms=int(timeout * 1000)
        )
        for topic_error in response.topic_errors:
            _, code, *rest = topic_error
            if code != 0:
                message = rest[0] if rest else ""
                raise _fail(ep, f"create_topic {name}: error code {code} {message}")
        deadline = time.monotonic() + timeout
        while True:
            (meta,) = await admin.describe_topics([name])
            parts = meta["partitions"]
            ready = meta["error_code"] == 0 and len(parts) == partitions
            if ready and all(p["leader"] >= 0 for p in parts):
                return
            if time.monotonic() > deadline:
                raise _fail(ep, f"create_topic {name}: partitions not ready: {meta}")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


# --------------------------------------------------------------------------- consumer groups


class JavaGroupConsumer:
    """A ``ConsoleConsumer`` subscribed to ``topic`` as a member of consumer group ``group``.

    It starts at the group's committed offsets, else at the earliest offset, and runs
    until ``max_messages`` records were printed, nothing arrived for ``idle_timeout``
    seconds, or ``stop()``. With ``--group`` the tool leaves auto-commit on, so when it
    exits it commits its position (every record it has fetched) and leaves the group.
    ``records()`` is what it has printed so far. Use as a context manager or call
    ``stop()``.
    """

    def __init__(
        self,
        ep: Endpoint,
        topic: str,
        group: str,
        *,
        group_protocol: str = "classic",
        max_messages: int | None = None,
        idle_timeout: float = 120,
    ) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._records: list[Record] = []
        props = [f"group.protocol={group_protocol}"]
        if group_protocol == "classic":
            props.append(f"heartbeat.interval.ms={CLASSIC_HEARTBEAT_MS}")
        self._files = contextlib.ExitStack()
        # The file must outlive the JVM's start; it is removed on stop().
        config = self._files.enter_context(_java_config(ep))
        cmd = _java_command(
            JAVA_CONSUMER,
            "--bootstrap-server", ep.bootstrap,
            "--topic", topic,
            "--group", group,
            "--from-beginning",  # auto.offset.reset=earliest: committed offsets still win
            "--timeout-ms", str(max(1000, int(idle_timeout * 1000))),
            "--consumer.config", config,
            *(a for prop in props for a in ("--consumer-property", prop)),
            *(("--max-messages", str(max_messages)) if max_messages else ()),
            "--property", "print.partition=true",
            "--property", "print.offset=true",
            "--property", "print.headers=true",
            "--property", "print.key=true",
            "--property", f"key.separator={_J_KEY_SEP}",
            "--property", f"headers.separator={_J_HEADERS_SEP}",
        )  # fmt: skip
        try:
            self.proc = _Proc(cmd, ep, on_line=self._on_line)
        except BaseException:
            self._files.close()
            raise

    def _on_line(self, line: str) -> bool:
        rec = _parse_java_line(line)
        if rec is None:
            return False
        with self._changed:
            self._records.append(rec)
            self._changed.notify_all()
        return True

    def records(self) -> list[Record]:
        """What the consumer has printed so far, in arrival order."""
        with self._lock:
            return list(self._records)

    def wait_for(self, predicate: Callable[[list[Record]], bool], timeout: float) -> bool:
        """Wait until ``predicate(records())`` holds; False on timeout or if the tool exited."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(list(self._records)):
                left = _deadline_left(deadline)
                if left <= 0 or not self.proc.running():
                    return predicate(list(self._records))
                self._changed.wait(min(left, 0.2))
            return True

    def finish(self, timeout: float) -> list[Record]:
        """Wait for the tool to exit by itself (stopping it after ``timeout``); check it."""
        try:
            self.proc.wait(timeout)
        finally:
            self._files.close()
        _check_java_consumer(self.proc)
        return self.records()

    def stop(self) -> list[Record]:
        """Stop the tool (it commits and leaves the group on the way out); check it."""
        self.proc.stop()
        self._files.close()
        _check_java_consumer(self.proc)
        return self.records()

    def __enter__(self) -> JavaGroupConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.stop()
        self._files.close()


def _java_consume_group(
    ep: Endpoint, topic: str, group: str, expected: int, timeout: float, group_protocol: str
) -> list[Record]:
    consumer = JavaGroupConsumer(
        ep,
        topic,
        group,
        group_protocol=group_protocol,
        max_messages=expected,
        idle_timeout=timeout,
    )
    with consumer:
        return consumer.finish(timeout + 30)


def _kcat_consume_group(
    ep: Endpoint, topic: str, group: str, expected: int, timeout: float, group_protocol: str
) -> list[Record]:
    # -G: librdkafka's balanced consumer, auto-commit on; closing after -c records
    # commits the offsets of the records it delivered. No -o: kcat would seek every
    # assigned partition there, ignoring the committed offsets.
    cmd = _kcat_command(
        ep,
        "-C", "-c", str(expected), "-J", "-u",
        "-X", "auto.offset.reset=earliest",
        "-X", f"heartbeat.interval.ms={CLASSIC_HEARTBEAT_MS}",
        "-G", group,
    )  # fmt: skip
    proc = _Proc([*cmd, topic], ep, env=_kcat_env(ep))  # -G: the topics come last
    if proc.wait(timeout):
        proc.check()
    return _kcat_records(proc.stdout, None)


def _confluent_consume_group(
    ep: Endpoint, topic: str, group: str, expected: int, timeout: float, group_protocol: str
) -> list[Record]:
    from confluent_kafka import Consumer, TopicPartition

    fatal: list[str] = []
    conf: dict[str, Any] = {
        **_librdkafka_conf(ep),
        "group.id": group,
        "group.protocol": group_protocol,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "error_cb": _confluent_error_cb(fatal),
    }
    if group_protocol == "classic":
        conf["heartbeat.interval.ms"] = CLASSIC_HEARTBEAT_MS
    consumer = Consumer(conf)
    records: list[Record] = []
    try:
        consumer.subscribe([topic])
        records = _confluent_poll(ep, consumer, expected, timeout, fatal)
        if records and not fatal:
            consumer.commit(
                offsets=[
                    TopicPartition(topic, p, o + 1) for p, o in _last_offsets(records).items()
                ],
                asynchronous=False,
            )
    finally:
        consumer.close()
    if fatal:
        raise _fail(ep, f"confluent: {fatal[0]}")
    return records


def _kafka_python_consume_group(
    ep: Endpoint, topic: str, group: str, expected: int, timeout: float, group_protocol: str
) -> list[Record]:
    from kafka import KafkaConsumer

    consumer = _kafka_python_build(
        KafkaConsumer,
        **_python_sasl_kwargs(ep),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        heartbeat_interval_ms=CLASSIC_HEARTBEAT_MS,
        bootstrap_timeout_ms=int(timeout * 1000),
    )
    deadline = time.monotonic() + timeout
    records: list[Record] = []
    try:
        consumer.subscribe([topic])
        while len(records) < expected:
            left = _deadline_left(deadline)
            if left <= 0:
                break
            batches = consumer.poll(timeout_ms=int(min(left, 0.5) * 1000))
            for batch in batches.values():
                records.extend(_python_record(m) for m in batch)
        if records:
            consumer.commit()  # the position after the last record returned, per partition
    finally:
        consumer.close(autocommit=False)
    return records


def _aiokafka_consume_group(
    ep: Endpoint, topic: str, group: str, expected: int, timeout: float, group_protocol: str
) -> list[Record]:
    return _run_async(lambda: _aiokafka_consume_group_async(ep, topic, group, expected, timeout))


async def _aiokafka_consume_group_async(
    ep: Endpoint, topic: str, group: str, expected: int, timeout: float
) -> list[Record]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        **_python_sasl_kwargs(ep),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        heartbeat_interval_ms=CLASSIC_HEARTBEAT_MS,
    )
    deadline = time.monotonic() + timeout
    records: list[Record] = []
    try:
        await consumer.start()
        while len(records) < expected:
            left = _deadline_left(deadline)
            if left <= 0:
                break
            batches = await consumer.getmany(timeout_ms=int(min(left, 0.5) * 1000))
            for batch in batches.values():
                records.extend(_python_record(m) for m in batch)
        if records:
            await consumer.commit()  # the position after the last record returned
    finally:
        await consumer.stop()
    return records


def _last_offsets(records: list[Record]) -> dict[int, int]:
    last: dict[int, int] = {}
    for rec in records:
        last[rec.partition] = max(rec.offset, last.get(rec.partition, -1))
    return last


_PRODUCERS: dict[str, Callable[[Endpoint, str, list[Record], float, str | None], None]] = {
    "java": _java_produce,
    "confluent": _confluent_produce,
    "kafka-python": _kafka_python_produce,
    "aiokafka": _aiokafka_produce,
    "kcat": _kcat_produce,
}

_CONSUMERS: dict[str, Callable[[Endpoint, str, int, int, float], list[Record]]] = {
    "java": _java_consume,
    "confluent": _confluent_consume,
    "kafka-python": _kafka_python_consume,
    "aiokafka": _aiokafka_consume,
    "kcat": _kcat_consume,
}

_GROUP_CONSUMERS: dict[str, Callable[[Endpoint, str, str, int, float, str], list[Record]]] = {
    "java": _java_consume_group,
    "confluent": _confluent_consume_group,
    "kafka-python": _kafka_python_consume_group,
    "aiokafka": _aiokafka_consume_group,
    "kcat": _kcat_consume_group,
}
