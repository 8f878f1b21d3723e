"""No answer tells an anonymous client where the upstream brokers listen or keep data.

A new user on the gateway's plain listener asks what Kafka's tools and clients ask:
configs of the broker and of a topic, the cluster, the topics, the log dirs, groups,
transactions and producers, and alter/create requests that fail validation (their error
messages). Every answer, raw bytes and decoded, is searched for every upstream host:port
(brokers and controllers, of both dev clusters) and for the dev directory; none may be
there, while the answers still serve the client.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import struct
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from gateway import dev
from gateway.protocol import codec
from tests.integration.clients import (
    Endpoint,
    acreate_topic,
    arun_java_tool,
    librdkafka_config,
    unique_topic,
)
from tests.integration.conftest import GatewayUnderTest

pytestmark = pytest.mark.integration

CONFIG_COMMAND = "kafka.admin.ConfigCommand"
LOG_DIRS_COMMAND = "org.apache.kafka.tools.LogDirsCommand"
BROKER, BROKER_LOGGER, TOPIC = 4, 8, 2


def _upstream_secrets(clusters: dict[str, dev.ClusterInfo]) -> set[str]:
    """Every upstream address and host path a client must not learn."""
    found: set[str] = set()
    for info in clusters.values():
        found |= {info.bootstrap, info.controller, *info.bootstrap_servers.split(",")}
        found |= {info.data_dir, str(Path(info.log_file).parent)}
        for node in info.nodes:
            found |= {node.bootstrap, node.controller, node.data_dir}
            found |= {f"localhost:{node.port}", f":{node.controller.rpartition(':')[2]}"}
            found.add(f":{node.port}")
    dev_dir = os.environ.get("GATEWAY_DEV_DIR")
    if dev_dir:
        found |= {dev_dir, str(Path(dev_dir).resolve())}
    return {s for s in found if s}


def _leaks(text: str, secrets: set[str]) -> list[str]:
    return sorted(s for s in secrets if s in text)


async def _exchange(endpoint: Endpoint, requests: list[Any]) -> list[tuple[bytes, Any]]:
    """Send each request on one connection; each answer as bytes and decoded."""
    host, port = endpoint.bootstrap.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    answers = []
    try:
        for correlation_id, body in enumerate(requests, start=1):
            payload = codec.encode_request_header(
                body.__api_key__, body.__version__, correlation_id, "topology-check"
            ) + codec.encode_body(body)
            writer.write(struct.pack(">i", len(payload)) + payload)
            await writer.drain()
            size = struct.unpack(">i", await asyncio.wait_for(reader.readexactly(4), 30))[0]
            frame = await reader.readexactly(size)
            header = codec.response_header_size(body.__api_key__, body.__version__, frame)
            decoded = codec.decode_response(body.__api_key__, body.__version__, frame, header)
            answers.append((frame, decoded))
    finally:
        writer.close()
    return answers


def _request(api_key: int, version: int, **fields: Any) -> Any:
    return codec.build(codec.request_schema(api_key, version), **fields)


def _config_resource(api_key: int, version: int, resource_type: int, name: str) -> Any:
    module = codec.entity_module(codec.request_schema(api_key, version))
    return codec.build(
        module.DescribeConfigsResource,
        resource_type=resource_type,
        resource_name=name,
        configuration_keys=None,
    )


def _every_request(node_id: int, topic: str) -> list[Any]:
    """One request of every API whose answer could carry an address or a path."""
    describe = [
        _config_resource(32, 4, BROKER, str(node_id)),
        _config_resource(32, 4, BROKER, ""),
        _config_resource(32, 4, BROKER_LOGGER, str(node_id)),
        _config_resource(32, 4, TOPIC, topic),
    ]
    alter = codec.entity_module(codec.request_schema(44, 1))
    create = codec.entity_module(codec.request_schema(19, 7))
    producers = codec.entity_module(codec.request_schema(61, 0))
    return [
        _request(18, 3, client_software_name="x", client_software_version="1"),
        _request(
            3,
            12,
            topics=None,
            allow_auto_topic_creation=False,
            include_topic_authorized_operations=True,
        ),
        _request(60, 1, include_cluster_authorized_operations=True, endpoint_type=1),
        _request(10, 4, key_type=0, coordinator_keys=("topology-group",)),
        _request(
            32, 4, resources=tuple(describe), include_synonyms=True, include_documentation=True
        ),
        _request(
            32,
            1,
            resources=(_config_resource(32, 1, BROKER, str(node_id)),),
            include_synonyms=True,
        ),
        _request(35, 4, topics=None),
        _request(16, 5, states_filter=(), types_filter=()),
        _request(15, 5, groups=("topology-group",), include_authorized_operations=True),
        _request(69, 0, group_ids=("topology-group",), include_authorized_operations=True),
        _request(66, 1, state_filters=(), producer_id_filters=(), duration_filter=-1),
        _request(65, 0, transactional_ids=("topology-txn",)),
        _request(
            61,
            0,
            topics=(codec.build(producers.TopicRequest, name=topic, partition_indexes=(0,)),),
        ),
        # Validation failures: their error messages are searched too.
        _request(
            44,
            1,
            resources=(
                codec.build(
                    alter.AlterConfigsResource,
                    resource_type=BROKER,
                    resource_name=str(node_id),
                    configs=(
                        codec.build(
                            alter.AlterableConfig,
                            name="listeners",
                            config_operation=0,
                            value="PLAINTEXT://nowhere:1",
                        ),
                    ),
                ),
                codec.build(
                    alter.AlterConfigsResource,
                    resource_type=TOPIC,
                    resource_name=topic,
                    configs=(
                        codec.build(
                            alter.AlterableConfig,
                            name="retention.ms",
                            config_operation=0,
                            value="not-a-number",
                        ),
                    ),
                ),
            ),
            validate_only=True,
        ),
        _request(
            19,
            7,
            topics=(
                codec.build(
                    create.CreatableTopic,
                    name=unique_topic("topology-rf"),
                    num_partitions=1,
                    replication_factor=5,
                    assignments=(),
                    configs=(),
                ),
            ),
            timeout=datetime.timedelta(seconds=10),
            validate_only=True,
        ),
    ]


@pytest.fixture
def secrets(clusters: dict[str, dev.ClusterInfo]) -> set[str]:
    found = _upstream_secrets(clusters)
    assert any(":" in s for s in found), found  # the search has addresses to look for
    return found


async def test_no_raw_answer_reveals_an_upstream_address_or_path(
    gateway: GatewayUnderTest, secrets: set[str]
) -> None:
    topic = unique_topic("topology")
    await acreate_topic(gateway.plain, topic, 1)
    node_id = gateway.config.gateway.node_id

    answers = await _exchange(gateway.plain, _every_request(node_id, topic))

    for frame, decoded in answers:
        text = frame.decode("latin-1") + repr(decoded)
        assert _leaks(text, secrets) == [], type(decoded).__name__
    # The answers still serve the client: the broker's configs are its own.
    by_name = {
        c.name: c.value
        for result in answers[4][1].results
        if result.resource_type == BROKER and result.resource_name == str(node_id)
        for c in result.configs
    }
    assert answers[4][1].results[0].error_code == 0
    assert by_name["advertised.listeners"] == f"PLAINTEXT://{gateway.plain.bootstrap}"
    assert by_name["node.id"] == str(node_id)
    assert by_name["log.dirs"] is None
    log_dirs = answers[6][1].results
    assert log_dirs
    assert all(d.log_dir.startswith("log-dir-") for d in log_dirs)


async def test_describe_configs_for_an_upstream_broker_id_is_refused_as_kafka_refuses_it(
    gateway: GatewayUnderTest, primary: dev.ClusterInfo
) -> None:
    upstream_id = primary.nodes[0].node_id
    node_id = gateway.config.gateway.node_id
    assert upstream_id != node_id

    ((_, answer),) = await _exchange(
        gateway.plain,
        [_request(32, 4, resources=(_config_resource(32, 4, BROKER, str(upstream_id)),))],
    )

    (result,) = answer.results
    assert result.error_code == 42  # INVALID_REQUEST
    assert result.error_message == (
        f"Unexpected broker id, expected {node_id} or empty string, but received {upstream_id}"
    )
    assert result.configs == ()


def _confluent_answers(endpoint: Endpoint, node_id: int, topic: str) -> tuple[str, dict[str, Any]]:
    admin = AdminClient(librdkafka_config(endpoint))
    broker = ConfigResource(ResourceType.BROKER, str(node_id))
    described = admin.describe_configs([broker, ConfigResource(ResourceType.TOPIC, topic)])
    configs = {r.name: f.result(timeout=30) for r, f in described.items()}
    cluster = admin.describe_cluster().result(timeout=30)
    listed = admin.list_topics(timeout=30)
    text = repr(configs) + repr(cluster.__dict__) + repr(listed.brokers) + repr(listed.topics)
    text += "".join(f"{e.name}={e.value}" for c in configs.values() for e in c.values())
    broker_configs = {name: e.value for name, e in configs[str(node_id)].items()}
    return text, broker_configs


async def test_confluent_admin_client_sees_only_the_gateway(
    gateway: GatewayUnderTest, secrets: set[str]
) -> None:
    topic = unique_topic("topology-ck")
    await acreate_topic(gateway.plain, topic, 1)
    node_id = gateway.config.gateway.node_id

    text, broker = await asyncio.to_thread(_confluent_answers, gateway.plain, node_id, topic)

    assert _leaks(text, secrets) == []
    assert broker["advertised.listeners"] == f"PLAINTEXT://{gateway.plain.bootstrap}"
    assert broker["listeners"] == f"PLAINTEXT://{gateway.plain.bootstrap}"


async def test_kafka_configs_and_log_dirs_tools_see_only_the_gateway(
    gateway: GatewayUnderTest, secrets: set[str]
) -> None:
    endpoint = gateway.plain
    node_id = str(gateway.config.gateway.node_id)
    bootstrap = ("--bootstrap-server", endpoint.bootstrap)

    configs = await arun_java_tool(
        endpoint, CONFIG_COMMAND, *bootstrap,
        "--describe", "--entity-type", "brokers", "--entity-name", node_id, "--all",
    )  # fmt: skip
    defaults = await arun_java_tool(
        endpoint, CONFIG_COMMAND, *bootstrap,
        "--describe", "--entity-type", "brokers", "--entity-default",
    )  # fmt: skip
    log_dirs = await arun_java_tool(endpoint, LOG_DIRS_COMMAND, *bootstrap, "--describe")

    for output in (configs, defaults, log_dirs):
        assert _leaks(output, secrets) == [], output
    assert f"advertised.listeners=PLAINTEXT://{endpoint.bootstrap}" in configs, configs
    assert '"logDir":"log-dir-0"' in log_dirs, log_dirs
