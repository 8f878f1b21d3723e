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
``await asyncio.to_thread(produce, ...)`` or the ``aproduce`` / ``aconsume`` /
``acreate_topic`` wrappers, which do exactly that. Errors are ``ClientError`` (the
password is redacted from their text); subprocess failures carry the stderr tail.

Consuming never uses a consumer group: every driver assigns the partitions itself
and starts at the earliest offset.

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
* kcat: ``-P -p N -K <tab> -H name=value``, one kcat run per sequence of records with
  the same partition and headers (``-H`` applies to a whole run); consuming is
  ``-C -o beginning -c N -J`` (librdkafka's group-less legacy consumer). Debian 12's
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
    client: str, ep: Endpoint, topic: str, records: Sequence[Record], *, timeout: float = 120
) -> None:
    """Send every record with ``client`` and wait until all are acknowledged.

    Each record goes to ``record.partition``, except with ``java``: the console producer
    has no way to choose a partition, so the default partitioner places each record by
    its key (murmur2(key) % partitions). Callers then compare against what a reference
    consumer reads. Raises ``ClientError`` on any delivery error; ``ValueError`` if a
    text tool cannot carry a record.
    """
    if not records:
        return
    driver = _PRODUCERS.get(client)
    if driver is None:
        raise ValueError(f"unknown client {client!r}; expected one of {CLIENTS}")
    with _client_errors(client, ep):
        driver(ep, topic, list(records), timeout)


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
    client: str, ep: Endpoint, topic: str, records: Sequence[Record], *, timeout: float = 120
) -> None:
    """``produce`` in a worker thread, for async tests."""
    await asyncio.to_thread(produce, client, ep, topic, records, timeout=timeout)


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


def _java_produce(ep: Endpoint, topic: str, records: list[Record], timeout: float) -> None:
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


def _kcat_produce(ep: Endpoint, topic: str, records: list[Record], timeout: float) -> None:
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
    records: list[Record] = []
    for line in proc.stdout:
        if not line.startswith("{"):
            continue
        msg = json.loads(line)
        if msg["partition"] >= partitions:
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


def _confluent_produce(ep: Endpoint, topic: str, records: list[Record], timeout: float) -> None:
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
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

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
    deadline = time.monotonic() + timeout
    records: list[Record] = []
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
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
                records.append(
                    Record(
                        partition=msg.partition() or 0,
                        offset=msg.offset() or 0,
                        key=msg.key() or b"",
                        value=msg.value() or b"",
                        headers=_headers_of(msg.headers()),
                    )
                )
    finally:
        consumer.close()
    if fatal:
        raise _fail(ep, f"confluent: {fatal[0]}")
    return records


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


def _kafka_python_produce(ep: Endpoint, topic: str, records: list[Record], timeout: float) -> None:
    from kafka import KafkaProducer

    producer = _kafka_python_build(
        KafkaProducer,
        **_python_sasl_kwargs(ep),
        acks="all",
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
                records.extend(
                    Record(
                        partition=m.partition,
                        offset=m.offset,
                        key=m.key or b"",
                        value=m.value or b"",
                        headers=_headers_of(m.headers),
                    )
                    for m in batch
                )
    finally:
        consumer.close(autocommit=False)
    return records


# --------------------------------------------------------------------------- aiokafka


def _aiokafka_produce(ep: Endpoint, topic: str, records: list[Record], timeout: float) -> None:
    _run_async(lambda: asyncio.wait_for(_aiokafka_produce_async(ep, topic, records), timeout))


async def _aiokafka_produce_async(ep: Endpoint, topic: str, records: list[Record]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**_python_sasl_kwargs(ep), acks="all")
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
                records.extend(
                    Record(
                        partition=m.partition,
                        offset=m.offset,
                        key=m.key or b"",
                        value=m.value or b"",
                        headers=_headers_of(m.headers),
                    )
                    for m in batch
                )
    finally:
        await consumer.stop()
    return records


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


_PRODUCERS: dict[str, Callable[[Endpoint, str, list[Record], float], None]] = {
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
