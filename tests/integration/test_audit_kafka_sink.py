"""The audit log's Kafka sink against the real dev clusters: two audited gateway
instances in front of the primary ship their chains to one topic on the secondary;
``audit fetch`` reads them back into segment files that ``audit verify`` checks per
instance, with the same lines as the local files; a changed byte in a fetched line
fails verify; and the sink's lag metric reaches 0 once everything is shipped."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway import dev, metrics
from gateway.audit import keys, read_events
from gateway.audit_cli import main as audit_main
from gateway.config import parse_config
from gateway.server.app import Gateway
from tests.integration.clients import Endpoint
from tests.integration.clients.common import Record
from tests.integration.clients.confluent import consume, produce
from tests.integration.conftest import client_endpoint, cluster_section, gateway_config_data

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def _gateway(
    clusters: dict[str, dev.ClusterInfo], audit_dir: Path, key_file: Path, instance: str, topic: str
) -> AsyncIterator[tuple[Gateway, Endpoint]]:
    data, ports = gateway_config_data(clusters["primary"])
    data["clusters"]["secondary"] = cluster_section(clusters["secondary"])
    data["audit"] = {
        "dir": str(audit_dir),
        "key_file": str(key_file),
        "instance_id": instance,
        "kafka": {"cluster": "secondary", "topic": topic, "poll_interval_ms": 20},
    }
    running = Gateway(parse_config(data, "integration-test", environ={}))
    await running.start()
    endpoint = client_endpoint(ports["sasl"])
    try:
        yield running, endpoint
    finally:
        await running.stop()


async def _serve_clients(endpoint: Endpoint, topic: str) -> None:
    records = [Record(0, -1, f"k{n}".encode(), f"v{n}".encode()) for n in range(5)]
    await asyncio.to_thread(produce, endpoint, topic, records, 30, None)
    got = await asyncio.to_thread(consume, endpoint, topic, 1, 5, 30)
    assert len(got) >= 5


async def test_two_instances_ship_to_one_topic_that_reads_back_and_verifies(
    clusters: dict[str, dev.ClusterInfo], tmp_path: Path
) -> None:
    audit_topic = f"it-audit-sink-{time.monotonic_ns()}"
    instances = ("it-sink-a", "it-sink-b")
    public = {}
    for instance in instances:
        key_file = tmp_path / f"{instance}.key"
        keys.generate(key_file)
        public[instance] = tmp_path / f"{instance}.pub"
        public[instance].write_text(keys.public_pem(keys.load_private(key_file).public_key()))
        data_topic = f"it-sink-data-{instance}-{time.monotonic_ns()}"
        async with _gateway(clusters, tmp_path / instance, key_file, instance, audit_topic) as (
            running,
            endpoint,
        ):
            await _serve_clients(endpoint, data_topic)
            sink = running.audit_sink
            assert sink is not None
            for _ in range(600):  # until shipped; bounded, no timing asserted
                if sink.lag == 0 and metrics.AUDIT_SINK_LAG._value.get() == 0:
                    break
                await asyncio.sleep(0.05)
            assert sink.lag == 0
            assert metrics.AUDIT_SINK_LAG._value.get() == 0

    secondary = clusters["secondary"]
    out = tmp_path / "fetched"
    argv = [
        "fetch",
        "--bootstrap",
        secondary.bootstrap_servers,
        "--security-protocol",
        secondary.security_protocol,
        "--sasl-mechanism",
        secondary.sasl_mechanism,
        "--username",
        secondary.username,
        "--password-file",
        secondary.password_file,
        "--topic",
        audit_topic,
        "--out",
        str(out),
    ]
    assert await asyncio.to_thread(audit_main, argv) == 0
    for instance in instances:
        segments = sorted(p.name for p in out.iterdir() if f"-{instance}-" in p.name)
        assert segments == sorted(
            p.name for p in (tmp_path / instance).iterdir() if p.name.endswith(".jsonl")
        )
        local = list(read_events(tmp_path / instance))
        fetched = [e for name in segments for e in read_events(out / name)]
        assert fetched == local and len(local) > 10  # every line, events and checkpoints
        only = [str(out / name) for name in segments]
        code = audit_main(["verify", *only, "--public-key", str(public[instance])])
        assert code == 0

    # One changed byte in one fetched line: verify names it.
    victim = sorted(out.glob(f"audit-{instances[0]}-*.jsonl"))[0]
    lines = victim.read_bytes().split(b"\n")
    changed = bytearray(lines[2])
    changed[len(changed) // 2] ^= 0x01
    lines[2] = bytes(changed)
    victim.write_bytes(b"\n".join(lines))
    assert audit_main(["verify", str(victim), "--public-key", str(public[instances[0]])]) == 1
