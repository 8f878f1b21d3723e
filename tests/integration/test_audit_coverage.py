"""Every request a real client sends through an audited gateway has its event.

For each client library of the client tests (Java 4.1 tools, confluent-kafka with
both group protocols, kafka-python, aiokafka, kcat) and for a confluent-kafka
transactional producer: the client works through an audited gateway (create a topic,
produce, list topics, read as a consumer group and commit), then the log is read back
with ``gateway audit export`` and compared with what the gateway counted on its own
(``gateway_requests_total``, counted where requests are answered, apart from the audit
stage): one event per request, for every API, with the client's principal, the
resources it named and the results it got. Produce events cover every offset of the
topic and Fetch events every record read.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway import audit_cli, dev, metrics
from tests.integration.clients import (
    CLIENTS,
    GROUP_PROTOCOLS,
    Endpoint,
    Record,
    aconsume_group,
    acreate_topic,
    aproduce,
    arun_java_tool,
    list_topics,
    unique_topic,
    watermarks,
)
from tests.integration.conftest import CLIENT_USER
from tests.integration.test_audit_log import _audited_gateway, published_key
from tests.integration.test_transactions import transactional_producer

pytestmark = pytest.mark.integration

TOPIC_COMMAND = "org.apache.kafka.tools.TopicCommand"
PARTITIONS = 2
RECORDS = 10
# Requests a client sends before it has logged in carry no principal yet.
PRE_LOGIN = {"ApiVersions", "SaslHandshake", "SaslAuthenticate"}

CASES = [(client, protocol) for client in CLIENTS for protocol in GROUP_PROTOCOLS[client]]


def _answered() -> Counter[str]:
    """Requests the gateway has answered so far, by API (all versions and outcomes)."""
    counts: Counter[str] = Counter()
    for family in metrics.REQUESTS.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                counts[sample.labels["api"]] += int(sample.value)
    return counts


def _export(audit_dir: Path, public_pem: Path) -> list[dict[str, Any]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = audit_cli.main(["export", str(audit_dir), "--public-key", str(public_pem)])
    assert code == 0, "the log did not verify"
    return [json.loads(line) for line in out.getvalue().splitlines()]


@contextlib.contextmanager
def _counted() -> Iterator[Counter[str]]:
    """The requests answered, by API, while the block ran."""
    delta: Counter[str] = Counter()
    before = _answered()
    yield delta
    after = _answered()
    delta.update({api: after[api] - before[api] for api in after if after[api] > before[api]})


def _requests(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "request"]


def _naming(requests: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    return [e for e in requests if {"kind": kind, "name": name} in e["resources"]]


def _assert_one_event_per_request(requests: list[dict[str, Any]], counted: Counter[str]) -> None:
    assert counted, "the gateway answered nothing"
    assert Counter(e["api"] for e in requests) == counted
    for e in requests:
        if e["api"] not in PRE_LOGIN:
            assert e["principal"] == CLIENT_USER, e
            assert e["mechanism"] == "PLAIN", e


def _offsets(endpoint: Endpoint, topic: str) -> set[tuple[int, int]]:
    """(partition, offset) of every record in ``topic``."""
    ends = watermarks(endpoint, topic, PARTITIONS)
    return {(p, o) for p, (low, high) in ends.items() for o in range(low, high)}


def _written(requests: list[dict[str, Any]], topic: str) -> set[tuple[int, int]]:
    """(partition, offset) of every record the Produce events say were written; each
    Produce of the topic was answered without error."""
    produced = [e for e in _naming(requests, "topic", topic) if e["api"] == "Produce"]
    assert produced and all(r["error"] == "none" for e in produced for r in e["results"])
    written: set[tuple[int, int]] = set()
    for e in produced:
        for part in e["produce"]:
            assert part["topic"] == topic
            first = part["base_offset"]
            written |= {(part["partition"], first + i) for i in range(part["records"])}
    return written


def _read(requests: list[dict[str, Any]], topic: str) -> set[tuple[int, int]]:
    """(partition, offset) of every record the Fetch events say were delivered."""
    seen: set[tuple[int, int]] = set()
    for e in requests:
        if e["api"] != "Fetch":
            continue
        for part in e.get("fetch") or ():
            if part["topic"] == topic and part["records"]:
                first, last = part["first_offset"], part["last_offset"]
                seen |= {(part["partition"], o) for o in range(first, last + 1)}
    return seen


async def _list_topics(client: str, endpoint: Endpoint) -> set[str]:
    if client == "java":
        out = await arun_java_tool(
            endpoint, TOPIC_COMMAND, "--bootstrap-server", endpoint.bootstrap, "--list"
        )
        return set(out.split())
    return await asyncio.to_thread(list_topics, client, endpoint)


@pytest.mark.parametrize(("client", "protocol"), CASES)
async def test_every_request_of_a_client_has_its_event_with_principal_resources_and_results(
    primary: dev.ClusterInfo, tmp_path: Path, client: str, protocol: str
) -> None:
    key_file, public_pem = published_key(tmp_path)
    audit_dir = tmp_path / "audit"
    topic = unique_topic(f"it-audit-cov-{client}")
    group = unique_topic(f"g-audit-cov-{client}")
    records = [
        Record(n % PARTITIONS, -1, f"k{n}".encode(), f"{client} {n}".encode())
        for n in range(RECORDS)
    ]
    with _counted() as counted:
        async with _audited_gateway(primary, audit_dir, key_file) as (_, endpoint, _admin):
            await acreate_topic(endpoint, topic, PARTITIONS)
            await aproduce(client, endpoint, topic, records)
            assert topic in await _list_topics(client, endpoint)
            read = await aconsume_group(
                client, endpoint, topic, group, RECORDS, group_protocol=protocol
            )
            assert len(read) == RECORDS
            offsets = await asyncio.to_thread(_offsets, endpoint, topic)

    requests = _requests(_export(audit_dir, public_pem))
    _assert_one_event_per_request(requests, counted)
    assert len(offsets) == RECORDS
    assert _written(requests, topic) == offsets
    assert _read(requests, topic) >= offsets
    (created,) = [e for e in _naming(requests, "topic", topic) if e["api"] == "CreateTopics"]
    assert created["results"] == [{"item": topic, "error": "none"}]
    group_apis = {e["api"] for e in _naming(requests, "group", group)}
    joined = {"JoinGroup", "SyncGroup"} if protocol == "classic" else {"ConsumerGroupHeartbeat"}
    assert joined | {"OffsetCommit"} <= group_apis, group_apis
    commits = [e for e in _naming(requests, "group", group) if e["api"] == "OffsetCommit"]
    assert all(r["error"] == "none" for e in commits for r in e["results"]), commits
    assert any(e["api"] == "Metadata" for e in requests)


def _transactions(endpoint: Endpoint, topic: str, transactional_id: str) -> None:
    """One committed transaction of 6 records and one aborted of 4."""
    with transactional_producer(endpoint, transactional_id) as producer:
        for count, commit in ((6, True), (4, False)):
            producer.begin_transaction()
            for n in range(count):
                producer.produce(topic, f"t{n}".encode(), partition=n % PARTITIONS)
            # Written before the abort, which would drop records still queued.
            assert producer.flush(30) == 0
            if commit:
                producer.commit_transaction(30)
            else:
                producer.abort_transaction(30)


async def test_a_transactional_producers_requests_have_their_events(
    primary: dev.ClusterInfo, tmp_path: Path
) -> None:
    key_file, public_pem = published_key(tmp_path)
    audit_dir = tmp_path / "audit"
    topic = unique_topic("it-audit-cov-txn")
    transactional_id = unique_topic("it-audit-cov-txn-id")
    with _counted() as counted:
        async with _audited_gateway(primary, audit_dir, key_file) as (_, endpoint, _admin):
            await acreate_topic(endpoint, topic, PARTITIONS)
            await asyncio.to_thread(_transactions, endpoint, topic, transactional_id)

    requests = _requests(_export(audit_dir, public_pem))
    _assert_one_event_per_request(requests, counted)
    # Data records only: the commit and abort markers are written by the brokers.
    assert len(_written(requests, topic)) == 10
    by_api = Counter(e["api"] for e in _naming(requests, "transactional_id", transactional_id))
    assert by_api["InitProducerId"] >= 1
    assert by_api["AddPartitionsToTxn"] >= 2
    assert by_api["EndTxn"] == 2
    ends = [e for e in requests if e["api"] == "EndTxn"]
    assert all(r["error"] == "none" for e in ends for r in e["results"]), ends
    added = [e for e in requests if e["api"] == "AddPartitionsToTxn"]
    assert all({"kind": "topic", "name": topic} in e["resources"] for e in added), added
