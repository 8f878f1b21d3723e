"""The audit log read back as an auditor would, after real clients worked through an
audited gateway: `audit export` shows each operation's event with the right principal,
resources and result, and `audit session` replays a confluent-kafka consumer's
connection in order (ApiVersions, login, Metadata, group requests, Fetch)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from gateway import audit_cli, dev
from tests.integration.clients.common import Record, unique_topic
from tests.integration.clients.confluent import consume_group, librdkafka_config, produce
from tests.integration.conftest import CLIENT_USER
from tests.integration.test_audit_log import _audited_gateway, published_key

pytestmark = pytest.mark.integration

GROUP_APIS = {"FindCoordinator", "JoinGroup", "SyncGroup", "Heartbeat", "OffsetFetch"}


def cli(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = audit_cli.main(argv)
    return code, out.getvalue()


def _admin(endpoint: Any, topic: str, missing: str) -> str:
    """Create ``topic`` (2 partitions) and try to delete ``missing``: the error name."""
    from confluent_kafka.admin import AdminClient, NewTopic

    client = AdminClient(librdkafka_config(endpoint))
    client.create_topics([NewTopic(topic, num_partitions=2, replication_factor=-1)])[topic].result(
        60
    )
    try:
        client.delete_topics([missing])[missing].result(60)
    except Exception as exc:  # noqa: BLE001 - the KafkaException of a missing topic
        return str(exc.args[0].name())
    raise AssertionError(f"deleting the missing topic {missing} succeeded")


async def test_client_operations_are_exported_and_a_consumer_session_replays_in_order(
    primary: dev.ClusterInfo, tmp_path: Path
) -> None:
    key_file, public_pem = published_key(tmp_path)
    audit_dir = tmp_path / "audit"
    topic, missing, group = unique_topic("it-audit-rb"), unique_topic("it-gone"), unique_topic()
    records = [Record(n % 2, -1, f"k{n}".encode(), f"v{n}".encode()) for n in range(10)]
    capture = [{"topics": topic, "capture": "sha256"}]
    async with _audited_gateway(primary, audit_dir, key_file, payloads=capture) as (
        _,
        endpoint,
        _admin_url,
    ):
        error = await asyncio.to_thread(_admin, endpoint, topic, missing)
        assert error == "UNKNOWN_TOPIC_OR_PART"
        await asyncio.to_thread(produce, endpoint, topic, records, 60, None)
        read = await asyncio.to_thread(
            consume_group, endpoint, topic, group, len(records), 60, "classic"
        )
        assert len(read) == len(records)

    code, out = cli(
        ["export", str(audit_dir), "--principal", CLIENT_USER, "--public-key", str(public_pem)]
    )
    assert code == 0
    exported = [json.loads(line) for line in out.splitlines()]
    requests = [e for e in exported if e["type"] == "request"]

    def named(api: str, kind: str, name: str) -> list[dict[str, Any]]:
        return [
            e
            for e in requests
            if e["api"] == api and {"kind": kind, "name": name} in e["resources"]
        ]

    (created,) = named("CreateTopics", "topic", topic)
    assert created["results"] == [{"item": topic, "error": "none"}]
    (deleted,) = named("DeleteTopics", "topic", missing)
    assert deleted["results"] == [{"item": missing, "error": "unknown_topic_or_partition"}]
    written = {
        (p["partition"], p["base_offset"] + i)
        for e in named("Produce", "topic", topic)
        for p in e["produce"]
        if p["base_offset"] is not None  # refused (a new topic's leader not known yet)
        for i in range(p["records"])
    }
    assert written == {(0, n) for n in range(5)} | {(1, n) for n in range(5)}
    # Payload capture: each record's value hash, at its offset, on both sides.
    hashes = {(n % 2, n // 2): hashlib.sha256(f"v{n}".encode()).hexdigest() for n in range(10)}
    produced_hashes = {
        (p["partition"], r["offset"]): r["value_sha256"]
        for e in named("Produce", "topic", topic)
        for p in e["produce"]
        for r in p.get("captured") or ()
        if r["offset"] is not None
    }
    assert produced_hashes == hashes
    fetched_hashes = {
        (p["partition"], r["offset"]): r["value_sha256"]
        for e in named("Fetch", "topic", topic)
        for p in e.get("fetch") or ()
        for r in p.get("captured") or ()
    }
    assert fetched_hashes == hashes
    delivered = sum(
        p["records"] for e in named("Fetch", "topic", topic) for p in e.get("fetch") or ()
    )
    assert delivered >= len(records)
    for api in ("JoinGroup", "SyncGroup", "OffsetCommit", "OffsetFetch"):
        assert named(api, "group", group), f"no {api} event for group {group}"
    assert all(e["principal"] == CLIENT_USER for e in requests)
    logins = [e for e in exported if e["type"] == "authentication"]
    assert logins and all(e["result"] == "success" for e in logins)

    # The consumer's connection that fetched, replayed.
    fetching = {e["connection"] for e in named("Fetch", "topic", topic)}
    assert len(fetching) == 1
    (connection,) = fetching
    code, out = cli(["session", connection, str(audit_dir), "--json"])
    assert code == 0
    replayed = [json.loads(line) for line in out.splitlines()]
    steps = [e["api"] if e["type"] == "request" else e["type"] for e in replayed]
    assert steps[0] == "connection_opened" and steps[-1] == "connection_closed"
    assert steps[1] == "ApiVersions"
    login = steps.index("authentication")
    # The login's requests around its authentication event (the event is written when
    # the login completes; the SaslAuthenticate request's own event follows its answer).
    assert {"SaslHandshake", "SaslAuthenticate"} <= set(steps[1 : login + 2]), steps
    first_fetch = steps.index("Fetch")
    assert "Metadata" in steps[login:first_fetch]
    assert GROUP_APIS & set(steps[login:]), steps
    assert [e["seq"] for e in replayed] == sorted(e["seq"] for e in replayed)
    code, text = cli(["session", connection, str(audit_dir)])
    assert code == 0 and f"read {topic}/" in text and "PLAIN " + CLIENT_USER in text
