"""Schemas for masking: the embedded registry (``schemas/``) served over Confluent's REST
API on a real local port, the registry client against it (caches, concurrent lookups,
errors, credentials), and confluent-kafka's own SchemaRegistryClient and AvroSerializer
against it (the ids producers use are the ids the gateway reads)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway import metrics
from gateway.errors import ConfigError
from gateway.masking import registry as registry_module
from gateway.masking.embedded import EmbeddedRegistry, app, canonical_form, schema_id
from gateway.masking.registry import RegistryClient
from gateway.masking.schemas import RegistryUnavailable, SchemaNotFound

REPO_SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    """The embedded registry's API on a local port, counting requests and the
    Authorization header each carried."""

    def __init__(self, registry: EmbeddedRegistry) -> None:
        self.registry = registry
        self.requests: list[tuple[str, str, str | None]] = []
        self.runner: web.AppRunner | None = None
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        @web.middleware
        async def count(request: web.Request, handler: Any) -> web.StreamResponse:
            self.requests.append(
                (request.method, request.path, request.headers.get("Authorization"))
            )
            response: web.StreamResponse = await handler(request)
            return response

        application = app(self.registry)
        application.middlewares.append(count)
        self.runner = web.AppRunner(application, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
def registry() -> EmbeddedRegistry:
    return EmbeddedRegistry.load(REPO_SCHEMAS)


@pytest.fixture
async def served(registry: EmbeddedRegistry) -> AsyncIterator[Served]:
    server = Served(registry)
    await server.start()
    yield server
    await server.stop()


def customers_id(registry: EmbeddedRegistry) -> int:
    return registry.subject("customers-value").id


def test_ids_come_from_the_canonical_form_and_do_not_depend_on_other_files(
    tmp_path: Path, registry: EmbeddedRegistry
) -> None:
    text = (REPO_SCHEMAS / "customers-value.avsc").read_text()
    alone = tmp_path / "alone"
    alone.mkdir()
    # Reformatted and alone in its directory: the same id.
    (alone / "customers-value.avsc").write_text(json.dumps(json.loads(text), indent=8))
    assert EmbeddedRegistry.load(alone).subject("customers-value").id == customers_id(registry)
    assert customers_id(registry) == schema_id(canonical_form(json.loads(text)))
    assert 0 < customers_id(registry) < 2**31


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not JSON"),
        (
            '{"type": "record", "name": "x", "fields": [{"name": "a", "type": "nosuch"}]}',
            "not a valid Avro schema",
        ),
    ],
)
def test_a_bad_schema_file_is_refused_naming_the_file(
    tmp_path: Path, content: str, problem: str
) -> None:
    (tmp_path / "broken-value.avsc").write_text(content)
    with pytest.raises(ConfigError) as refused:
        EmbeddedRegistry.load(tmp_path)
    assert str(refused.value).startswith(f"{tmp_path / 'broken-value.avsc'}: {problem}")


async def test_the_client_reads_schemas_and_caches_them_by_id(
    served: Served, registry: EmbeddedRegistry
) -> None:
    client = RegistryClient(served.url)
    try:
        wanted = customers_id(registry)
        first = await client.schema_by_id(wanted)
        again = await client.schema_by_id(wanted)
        assert first == again and first.schema_type == "AVRO"
        assert json.loads(first.schema)["name"] == "Customer"
        assert [r[1] for r in served.requests] == [f"/schemas/ids/{wanted}"]
        with pytest.raises(SchemaNotFound, match="schema 12345 not found"):
            await client.schema_by_id(12345)
    finally:
        await client.close()


async def test_an_unknown_id_is_asked_again_only_after_a_pause(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_module, "NOT_FOUND_RETRY_S", 0.2)
    client = RegistryClient(served.url)
    try:
        for _ in range(5):
            with pytest.raises(SchemaNotFound, match="schema 12345 not found"):
                await client.schema_by_id(12345)
        assert [r[1] for r in served.requests] == ["/schemas/ids/12345"]
        await asyncio.sleep(0.3)
        with pytest.raises(SchemaNotFound):
            await client.schema_by_id(12345)
        assert [r[1] for r in served.requests] == ["/schemas/ids/12345"] * 2
    finally:
        await client.close()


async def test_concurrent_lookups_of_one_id_share_one_request(
    served: Served, registry: EmbeddedRegistry
) -> None:
    client = RegistryClient(served.url)
    try:
        wanted = customers_id(registry)
        found = await asyncio.gather(*(client.schema_by_id(wanted) for _ in range(20)))
        assert len({f.id for f in found}) == 1
        assert len(served.requests) == 1
    finally:
        await client.close()


async def test_a_warm_cache_answers_while_the_registry_is_down(
    served: Served, registry: EmbeddedRegistry
) -> None:
    client = RegistryClient(served.url, timeout_seconds=2)
    try:
        wanted = customers_id(registry)
        await client.schema_by_id(wanted)
        await served.stop()
        assert (await client.schema_by_id(wanted)).id == wanted
        other = registry.subject("payments-value").id
        with pytest.raises(RegistryUnavailable, match=served.url):
            await client.schema_by_id(other)
    finally:
        await client.close()


async def test_subject_registration_is_asked_once_per_ttl(
    served: Served, registry: EmbeddedRegistry
) -> None:
    client = RegistryClient(served.url, subject_ttl_seconds=300)
    try:
        wanted = customers_id(registry)
        assert await client.registered("customers-value", wanted)
        assert await client.registered("customers-value", wanted)
        assert not await client.registered("payments-value", wanted)
        assert not await client.registered("nobody-value", wanted)
        lookups = [r for r in served.requests if r[0] == "POST"]
        assert [r[1] for r in lookups] == [
            "/subjects/customers-value",
            "/subjects/payments-value",
            "/subjects/nobody-value",
        ]
    finally:
        await client.close()


async def test_credentials_are_sent_and_never_named_in_errors(served: Served) -> None:
    basic = RegistryClient(served.url, username="gw", password="s3cret-pass")
    bearer = RegistryClient(served.url, token="t0ken-value")
    try:
        for client in (basic, bearer):
            with pytest.raises(SchemaNotFound) as missing:
                await client.schema_by_id(7)
            assert "s3cret" not in str(missing.value) and "t0ken" not in str(missing.value)
        (_, _, basic_header), (_, _, bearer_header) = served.requests
        assert basic_header is not None and basic_header.startswith("Basic ")
        assert bearer_header == "Bearer t0ken-value"
    finally:
        await basic.close()
        await bearer.close()


async def test_registry_metrics_count_requests_and_cache_hits(
    served: Served, registry: EmbeddedRegistry
) -> None:
    hits = metrics.REGISTRY_CACHE.labels("hit")
    ok = metrics.REGISTRY_REQUESTS.labels("ok")
    hits_before, ok_before = hits._value.get(), ok._value.get()
    client = RegistryClient(served.url)
    try:
        for _ in range(3):
            await client.schema_by_id(customers_id(registry))
    finally:
        await client.close()
    assert ok._value.get() == ok_before + 1
    assert hits._value.get() == hits_before + 2


def _serialize_with_confluent(url: str, subject_topic: str, schema_text: str) -> tuple[bytes, str]:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    with SchemaRegistryClient({"url": url}) as client:
        return _serialize(client, subject_topic, schema_text)


def _serialize(client: Any, subject_topic: str, schema_text: str) -> tuple[bytes, str]:
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    serializer = AvroSerializer(client, schema_text)
    value = {
        "id": 1,
        "name": "Ann",
        "email": None,
        "address": {"street": "1 Main St", "city": "Utrecht", "country": "NL"},
        "phones": [],
        "card_number": "4111111111111111",
        "amount": 5,
    }
    data = serializer(value, SerializationContext(subject_topic, MessageField.VALUE))
    refused = ""
    try:
        other = AvroSerializer(client, '{"type": "record", "name": "X", "fields": []}')
        other({}, SerializationContext(subject_topic, MessageField.VALUE))
    except Exception as exc:  # noqa: BLE001 - the registry's refusal, as the client reports it
        refused = str(exc)
    return data, refused


async def test_confluent_serializers_get_the_embedded_ids_and_cannot_register_others(
    served: Served, registry: EmbeddedRegistry
) -> None:
    text = (REPO_SCHEMAS / "customers-value.avsc").read_text()
    data, refused = await asyncio.to_thread(
        _serialize_with_confluent, served.url, "customers", text
    )
    assert data[0] == 0
    assert int.from_bytes(data[1:5], "big") == customers_id(registry)
    assert "read-only" in refused
