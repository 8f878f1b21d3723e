"""The tamper matrix on a real log: a gateway in front of the dev cluster writes its
audit log while several confluent-kafka producers and a consumer work at once (small
checkpoint intervals and segments, so the log has many of both); then each way of
tampering with the files is applied to a copy, and ``python -m gateway audit verify``
with the published key must fail naming the first bad line and what is wrong. The
untouched log verifies."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway import audit_cli, dev
from gateway.audit import chain, keys
from gateway.config import parse_config
from gateway.server.app import Gateway
from tests.integration.clients import Endpoint
from tests.integration.clients.confluent import connected_producer, librdkafka_config
from tests.integration.conftest import client_endpoint, gateway_config_data
from tests.unit.audit_helpers import files, read_lines, rewrite, write_lines

pytestmark = pytest.mark.integration

PRODUCERS = 3
RECORDS_EACH = 300


def _produce(endpoint: Endpoint, topic: str, worker: int) -> int:
    producer = connected_producer(endpoint)
    delivered = 0

    def done(err: object, _msg: object) -> None:
        nonlocal delivered
        assert err is None, err
        delivered += 1

    for n in range(RECORDS_EACH):
        producer.produce(topic, f"w{worker}-{n}".encode(), on_delivery=done)
        if n % 10 == 0:
            # Many small Produce requests (at least 30 per producer), not a few large
            # ones, however fast the cluster answers.
            producer.flush(30)
    assert producer.flush(60) == 0
    return delivered


def _consume(endpoint: Endpoint, topic: str, wanted: int) -> int:
    from confluent_kafka import Consumer

    consumer = Consumer(
        librdkafka_config(endpoint)
        | {"group.id": f"{topic}-readers", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + 90
    try:
        while seen < wanted and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                seen += 1
    finally:
        consumer.close()
    return seen


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The instance's signing key and its published public key."""
    where = tmp_path_factory.mktemp("audit-keys")
    key_file = where / "audit.key"
    public = keys.generate(key_file).public_key()
    (where / "audit.pub").write_text(keys.public_pem(public), encoding="utf-8")
    return key_file, where / "audit.pub"


@pytest.fixture(scope="module")
def written_log(
    primary: dev.ClusterInfo,
    published: tuple[Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """An audit log written by a gateway under concurrent load, closed (sealed)."""
    audit_dir = tmp_path_factory.mktemp("audit-under-load") / "audit"
    data, ports = gateway_config_data(primary)
    data["audit"] = {
        "dir": str(audit_dir),
        "key_file": str(published[0]),
        "instance_id": "loaded",
        "checkpoint_every_events": 25,
        # ~100 Produce events alone fill several of these.
        "segment_max_bytes": 12 * 1024,
    }
    endpoint = client_endpoint(ports["sasl"])
    topic = f"it-audit-tamper-{time.monotonic_ns()}"

    async def load() -> None:
        running = Gateway(parse_config(data, "integration-test", environ={}))
        await running.start()
        try:
            work = [asyncio.to_thread(_produce, endpoint, topic, w) for w in range(PRODUCERS)]
            work.append(asyncio.to_thread(_consume, endpoint, topic, PRODUCERS * RECORDS_EACH))
            produced = await asyncio.gather(*work)
            assert produced[:PRODUCERS] == [RECORDS_EACH] * PRODUCERS
        finally:
            await running.stop()

    asyncio.run(load())
    assert len(files(audit_dir)) >= 4, "the log should span several segments"
    return audit_dir


def verify_cli(directory: Path, public_pem: Path) -> tuple[int, str]:
    """``audit verify DIR --public-key PEM`` through the CLI's own entry point."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = audit_cli.main(["verify", str(directory), "--public-key", str(public_pem)])
    return code, out.getvalue()


def request_line(path: Path) -> int:
    """The index of a request event near the middle of ``path``."""
    lines = read_lines(path)
    middle = len(lines) // 2
    # From the middle on, then from the start; never the last line (swap needs two).
    for index in [*range(middle, len(lines) - 1), *range(middle)]:
        if json.loads(lines[index])["type"] == "request":
            return index
    raise AssertionError(f"no request event in {path}")


def checkpoint_line(path: Path) -> int:
    return next(
        i for i, raw in enumerate(read_lines(path)) if json.loads(raw)["type"] == "checkpoint"
    )


def flip_one_byte(directory: Path) -> tuple[Path, int, str]:
    target = files(directory)[1]
    lines = read_lines(target)
    index = request_line(target)
    # One byte: the first letter of the API's name (every request event has one).
    at = lines[index].index(b'"api":"') + len(b'"api":"')
    changed = bytearray(lines[index])
    changed[at] = ord("Z") if changed[at] != ord("Z") else ord("Y")
    lines[index] = bytes(changed)
    write_lines(target, lines)
    return target, index + 1, "changed"


def delete_one_event(directory: Path) -> tuple[Path, int, str]:
    target = files(directory)[1]
    lines = read_lines(target)
    index = request_line(target)
    del lines[index]
    write_lines(target, lines)
    return target, index + 1, "missing"


def swap_two_events(directory: Path) -> tuple[Path, int, str]:
    target = files(directory)[1]
    lines = read_lines(target)
    index = request_line(target)
    lines[index], lines[index + 1] = lines[index + 1], lines[index]
    write_lines(target, lines)
    return target, index + 1, "reordered"


def truncate_the_tail(directory: Path) -> tuple[Path, int, str]:
    target = files(directory)[-1]
    data = target.read_bytes()
    target.write_bytes(data[: len(data) - 40])
    return target, len(read_lines(target)) + 1, "truncated"


def drop_a_segment(directory: Path) -> tuple[Path, int, str]:
    paths = files(directory)
    paths[2].unlink()
    return paths[3], 1, "missing"


def replace_a_checkpoint_signature(directory: Path) -> tuple[Path, int, str]:
    other = Ed25519PrivateKey.generate()
    target = files(directory)[1]
    index = checkpoint_line(target)

    def change(parsed: list[list[dict[str, object]]]) -> None:
        line = parsed[1][index]
        line["signature"] = keys.sign(other, chain.signed_part(line))

    rewrite(directory, change)
    return target, index + 1, "bad signature"


def re_sign_with_another_key(directory: Path) -> tuple[Path, int, str]:
    forger = Ed25519PrivateKey.generate()

    def change(parsed: list[list[dict[str, object]]]) -> None:
        parsed[0][0]["peer"] = "10.0.0.1:1"

    rewrite(directory, change, resign=forger)
    target = files(directory)[0]
    return target, checkpoint_line(target) + 1, "wrong key"


TAMPERING: dict[str, Callable[[Path], tuple[Path, int, str]]] = {
    "flip one byte": flip_one_byte,
    "delete one event": delete_one_event,
    "swap two events": swap_two_events,
    "truncate the tail": truncate_the_tail,
    "drop a whole segment": drop_a_segment,
    "replace a checkpoint signature": replace_a_checkpoint_signature,
    "re-sign with another key": re_sign_with_another_key,
}


def test_the_untouched_log_verifies_with_the_published_key(
    written_log: Path, published: tuple[Path, Path]
) -> None:
    # The real command, as an auditor runs it.
    result = subprocess.run(  # noqa: S603 - our own interpreter and module
        [
            sys.executable,
            "-m",
            "gateway",
            "audit",
            "verify",
            str(written_log),
            "--public-key",
            str(published[1]),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(dev.__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK loaded:")
    assert "unsealed" not in result.stdout


@pytest.mark.parametrize("how", list(TAMPERING))
def test_verify_names_the_first_bad_line_of_a_tampered_copy(
    how: str, written_log: Path, published: tuple[Path, Path], tmp_path: Path
) -> None:
    copy = tmp_path / "audit"
    shutil.copytree(written_log, copy)
    path, line, what = TAMPERING[how](copy)
    code, out = verify_cli(copy, published[1])
    assert code == 1, out
    # "FAIL <instance>: <file>:<line> (seq N): <what ...>" (no seq for a torn line)
    assert re.match(rf"FAIL loaded: {re.escape(str(path))}:{line}(?: \(seq \d+\))?: {what}", out), (
        out
    )
