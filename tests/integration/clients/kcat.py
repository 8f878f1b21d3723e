"""kcat (the Debian package) as a client.

Producing is ``-P -p N -K <tab> -H name=value``, one kcat run per sequence of records
with the same partition and headers (``-H`` applies to a whole run); consuming is
``-C -o beginning -c N -J`` (librdkafka's group-less legacy consumer), in a group
``-C -G group topic -c N -J`` (balanced consumer, auto-commit). Debian 12's kcat 1.7.1
is built on librdkafka 2.0.2, whose SCRAM is rejected by Kafka 4.x (see ``_kcat_env``):
for SCRAM endpoints kcat loads confluent-kafka's librdkafka.

Keys, values and header values travel as lines of printable ASCII; header names must
not contain ``=``.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.integration.clients.common import (
    CLASSIC_HEARTBEAT_MS,
    ClientError,
    Endpoint,
    Record,
    check_text,
    deadline_left,
)
from tests.integration.clients.confluent import librdkafka_config
from tests.integration.clients.process import Proc

_KCAT_KEY_SEP = "\t"


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
    for key, value in librdkafka_config(ep).items():
        if key != "bootstrap.servers":
            cmd += ["-X", f"{key}={value}"]
    return cmd + ["-b", ep.bootstrap]


def produce(
    ep: Endpoint, topic: str, records: list[Record], timeout: float, compression: str | None
) -> None:
    check_text("kcat", records, "=")
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
            proc = Proc(cmd, ep, stdin=lines, env=_kcat_env(ep))
            proc.run(deadline_left(deadline))

    with ThreadPoolExecutor(max_workers=max(1, len(by_partition))) as pool:
        futures = [pool.submit(run_partition, p, recs) for p, recs in by_partition.items()]
        for fut in futures:
            fut.result()


def consume(
    ep: Endpoint, topic: str, partitions: int, expected: int, timeout: float
) -> list[Record]:
    # Without -G kcat uses librdkafka's legacy (group-less) consumer on every partition.
    cmd = _kcat_command(ep, "-C", "-t", topic, "-o", "beginning", "-c", str(expected), "-J", "-u")
    proc = Proc(cmd, ep, env=_kcat_env(ep))
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


def consume_group(
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
    proc = Proc([*cmd, topic], ep, env=_kcat_env(ep))  # -G: the topics come last
    if proc.wait(timeout):
        proc.check()
    return _kcat_records(proc.stdout, None)


def list_topics(ep: Endpoint, timeout: float) -> set[str]:
    proc = Proc(_kcat_command(ep, "-L", "-J"), ep, env=_kcat_env(ep))
    proc.run(timeout)
    (listing,) = [json.loads(line) for line in proc.stdout if line.startswith("{")]
    return {t["topic"] for t in listing["topics"]}


def version() -> str:
    exe, librdkafka = _kcat_executable()
    out = subprocess.run([exe, "-V"], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"Version (\S+)", out)
    kcat = match.group(1) if match else "?"
    return f"kcat {kcat} (librdkafka {'.'.join(map(str, librdkafka))})"
