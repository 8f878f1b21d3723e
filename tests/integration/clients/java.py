"""Kafka's own Java tools as a client: console producer and consumer, any other tool.

The tools are launched through ``gateway.dev.java_tool_command``. The console producer
cannot choose a partition; the default partitioner places records by key (see
``java_default_partition``). It runs with ``--sync`` so that a failed send fails the
tool (asynchronous sends only log the error), with linger 0. Records without headers
go through a separate producer run because the line reader cannot parse an empty
header list. Consuming starts one ``ConsoleConsumer --partition N --offset earliest``
per partition, in parallel, and stops them once enough records were printed; the tool
sets a random ``group.id`` with auto-commit off but, assigned, never talks to the group
coordinator. SASL settings go into a temporary 0600 ``--producer.config`` /
``--consumer.config``. In a group, one ``ConsoleConsumer --group G --from-beginning``
runs with the tool's default auto-commit, which commits the consumer's position when
it exits (``JavaGroupConsumer`` keeps one running as a group member).

Keys, values and header values travel as lines of printable ASCII; header names must
not contain ``:``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.integration.clients.common import (
    CLASSIC_HEARTBEAT_MS,
    Endpoint,
    Record,
    check_text,
    client_errors,
    deadline_left,
)
from tests.integration.clients.process import Proc

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


def run_java_tool(
    ep: Endpoint,
    main_class: str,
    *args: str,
    config_option: str | None = "--command-config",
    timeout: float = 120,
    stdin: str | None = None,
) -> str:
    """Run a Kafka Java tool against ``ep`` (fed ``stdin``, if given) and return its stdout.

    The connection settings (SASL included) go into a temporary 0600 properties file
    passed as ``config_option FILE`` before ``args`` (``--command-config`` for the admin
    tools, ``--producer.config`` for ProducerPerformance, None for tools that do not
    connect); the caller passes the bootstrap option its tool wants. Raises
    ``ClientError`` (with the output tail) if the tool exits non-zero or outlives
    ``timeout``.
    """
    with client_errors(main_class, ep), _java_config(ep) as config:
        config_args = (config_option, config) if config_option else ()
        # First: tools with sub-commands (kafka-transactions) take it before them.
        proc = Proc(_java_command(main_class, *config_args, *args, ep=ep), ep, stdin=stdin)
        proc.run(timeout)
        return "\n".join(proc.stdout)


async def arun_java_tool(
    ep: Endpoint,
    main_class: str,
    *args: str,
    config_option: str | None = "--command-config",
    timeout: float = 120,
    stdin: str | None = None,
) -> str:
    """``run_java_tool`` in a worker thread, for async tests."""
    return await asyncio.to_thread(
        functools.partial(
            run_java_tool,
            ep,
            main_class,
            *args,
            config_option=config_option,
            timeout=timeout,
            stdin=stdin,
        )
    )


def java_default_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for a non-null ``key``."""
    from kafka.partitioner.default import murmur2

    return int(murmur2(key) & 0x7FFFFFFF) % partitions


@contextlib.contextmanager
def _java_config(ep: Endpoint) -> Iterator[str]:
    """A temporary client properties file holding the connection settings."""
    lines = [f"security.protocol={ep.security_protocol}"]
    if ep.uses_sasl and (ep.sasl_mechanism or "").upper() == "OAUTHBEARER":
        lines += _oauth_lines(ep)
    elif ep.uses_sasl:
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
        lines += _java_tls_lines(ep, Path(tmp))
        path = Path(tmp) / "client.properties"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        yield str(path)


def _java_tls_lines(ep: Endpoint, tmp: Path) -> list[str]:
    """PEM trust and key stores (KIP-651): the client key and certificate go into one
    0600 file, as a PEM keystore wants them."""
    if not ep.uses_tls:
        return []
    lines = []
    if ep.ca_file:
        lines += ["ssl.truststore.type=PEM", f"ssl.truststore.location={ep.ca_file}"]
    if ep.cert_file and ep.key_file:
        keystore = tmp / "keystore.pem"
        fd = os.open(keystore, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(Path(ep.key_file).read_text() + Path(ep.cert_file).read_text())
        lines += ["ssl.keystore.type=PEM", f"ssl.keystore.location={keystore}"]
    return lines


_OAUTH_MODULE = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule"
_OAUTH_HANDLER = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginCallbackHandler"
_OAUTH_ALLOWED_URLS = "org.apache.kafka.sasl.oauthbearer.allowed.urls"


def _oauth_lines(ep: Endpoint) -> list[str]:
    """OAUTHBEARER: tokens from ``ep.oauth_token_url`` with the client credentials
    grant (KIP-768), or without a URL Kafka's default unsecured login module, which
    makes up an unsigned token for the principal ``ep.username``."""
    if ep.oauth_token_url is None:
        jaas = (
            f"{_OAUTH_MODULE} required "
            f"unsecuredLoginStringClaim_sub={_jaas_quote(ep.username or 'anonymous')};"
        )
        return ["sasl.mechanism=OAUTHBEARER", f"sasl.jaas.config={_properties_escape(jaas)}"]
    jaas = (
        f"{_OAUTH_MODULE} required clientId={_jaas_quote(ep.username or '')} "
        f"clientSecret={_jaas_quote(ep.password or '')};"
    )
    return [
        "sasl.mechanism=OAUTHBEARER",
        f"sasl.login.callback.handler.class={_OAUTH_HANDLER}",
        f"sasl.oauthbearer.token.endpoint.url={ep.oauth_token_url}",
        f"sasl.jaas.config={_properties_escape(jaas)}",
        # Test tokens live for seconds: refresh them well before they expire (the
        # defaults assume hours and wait at least a minute between refreshes).
        "sasl.login.refresh.min.period.seconds=1",
        "sasl.login.refresh.buffer.seconds=1",
    ]


def _jaas_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _properties_escape(value: str) -> str:
    out = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return "\\" + out if out.startswith((" ", "\t")) else out


def _java_command(main_class: str, *args: str, ep: Endpoint | None = None) -> list[str]:
    from gateway import dev  # imported lazily: only the java driver needs it

    cmd = list(dev.java_tool_command(main_class, *args))
    # Short-lived JVMs: skip the optimising JIT and the parallel GC to start faster.
    options = list(_JAVA_FAST_START)
    if ep is not None and ep.oauth_token_url:
        # Kafka 4 fetches tokens only from URLs this system property allows.
        options.append(f"-D{_OAUTH_ALLOWED_URLS}={ep.oauth_token_url}")
    return cmd[:1] + options + cmd[1:]


def _java_line(rec: Record) -> str:
    line = rec.key.decode() + _J_KEY_SEP + rec.value.decode()
    if rec.headers:
        headers = _J_HEADERS_SEP.join(k + _J_HEADER_KV_SEP + v.decode() for k, v in rec.headers)
        line = headers + _J_HEADERS_DELIM + line
    return line + "\n"


def produce(
    ep: Endpoint, topic: str, records: list[Record], timeout: float, compression: str | None
) -> None:
    check_text("java", records, ":")
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
                ep=ep,
            )  # fmt: skip
            proc = Proc(cmd, ep, stdin="".join(_java_line(r) for r in run))
            proc.run(deadline_left(deadline))
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


def consume(
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
        procs: list[Proc] = []
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
                    ep=ep,
                )  # fmt: skip
                procs.append(Proc(cmd, ep, on_line=on_line))
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


def _check_java_consumer(proc: Proc) -> None:
    """A console consumer that exited on its own must have stopped on its idle timeout."""
    if proc.stopped_by_us:
        return
    proc.check()
    diag = proc.diagnostics()
    # ConsoleConsumer logs any poll failure, then exits 0: tell that from the idle timeout.
    failed = "Error processing message" in diag and "TimeoutException" not in diag
    if failed or "Authentication failed" in diag:
        raise proc.error("stopped with an error")


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
            ep=ep,
        )  # fmt: skip
        try:
            self.proc = Proc(cmd, ep, on_line=self._on_line)
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
                left = deadline_left(deadline)
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


def consume_group(
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


def version() -> str:
    from gateway import dev

    return f"Apache Kafka {dev.KAFKA_VERSION} clients and tools"
