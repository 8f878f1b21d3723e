"""Config and log-dir answers show the virtual broker, never the upstream's hosts or paths."""

from __future__ import annotations

from typing import Any

import pytest
from kio.schema.describe_configs.v4 import request as describe_request
from kio.schema.describe_configs.v4 import response as describe_response
from kio.schema.describe_log_dirs.v4 import request as log_dirs_request
from kio.schema.describe_log_dirs.v4 import response as log_dirs_response
from kio.schema.errors import ErrorCode
from kio.schema.incremental_alter_configs.v1 import request as alter_request
from kio.schema.incremental_alter_configs.v1 import response as alter_response
from kio.static.primitive import i8, i64

from gateway.protocol import codec, topology
from gateway.protocol.topology import VirtualBroker
from tests.unit.harness import ADVERTISED, GATEWAY_NODE, Harness

BROKER = i8(4)
TOPIC = i8(2)
STATIC = i8(4)
GATEWAY = VirtualBroker(7, "SASL_SSL", "gateway.example", 9093)
UPSTREAM_LISTENER = "SASL_PLAINTEXT://127.0.0.1:19092"


def entry(name: str, value: str | None, *synonyms: tuple[str, str | None]) -> Any:
    return describe_response.DescribeConfigsResourceResult(
        name=name,
        value=value,
        read_only=True,
        config_source=STATIC,
        is_sensitive=False,
        synonyms=tuple(
            describe_response.DescribeConfigsSynonym(name=n, value=v, source=STATIC)
            for n, v in synonyms
        ),
        config_type=i8(2),
        documentation=None,
    )


def result(resource_type: i8, name: str, *entries: Any, message: str | None = None) -> Any:
    return describe_response.DescribeConfigsResult(
        error_code=ErrorCode.none,
        error_message=message,
        resource_type=resource_type,
        resource_name=name,
        configs=entries,
    )


def by_name(result: Any) -> dict[str, Any]:
    return {e.name: e for e in result.configs}


@pytest.mark.parametrize(
    "value",
    [
        "127.0.0.1:19092",
        "SASL_PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093",
        "1@localhost:19093",
        "kafka-1.internal:9092",
        "[::1]:9092",
        "/tmp/dev/primary/broker-1/data",
        "/var/lib/kafka,/var/lib/kafka2",
        "C:\\kafka\\logs",
        "https://idp.example/token",
    ],
)
def test_hosts_ports_urls_and_paths_are_recognised(value: str) -> None:
    assert topology.reveals(value)


@pytest.mark.parametrize(
    "value", [None, "", "604800000", "delete,compact", "PLAINTEXT:PLAINTEXT", "producer", "3.9-IV0"]
)
def test_ordinary_config_values_are_not_taken_for_addresses(value: str | None) -> None:
    assert not topology.reveals(value)


def test_listeners_and_node_id_are_the_gateways_own() -> None:
    upstream = result(
        BROKER,
        "7",
        entry("listeners", UPSTREAM_LISTENER, ("listeners", UPSTREAM_LISTENER)),
        entry("advertised.listeners", UPSTREAM_LISTENER),
        entry(
            "listener.security.protocol.map", "CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT"
        ),
        entry("node.id", "1", ("node.id", "1"), ("node.id", "-1")),
        entry("broker.id", "1"),
    )

    seen = by_name(topology.describe_configs_result(upstream, GATEWAY))

    assert seen["listeners"].value == "SASL_SSL://gateway.example:9093"
    assert [s.value for s in seen["listeners"].synonyms] == ["SASL_SSL://gateway.example:9093"]
    assert seen["advertised.listeners"].value == "SASL_SSL://gateway.example:9093"
    assert seen["listener.security.protocol.map"].value == "SASL_SSL:SASL_SSL"
    assert seen["node.id"].value == "7"
    assert [s.value for s in seen["node.id"].synonyms] == ["7"]
    assert seen["broker.id"].value == "7"


def test_an_ipv6_advertised_host_is_bracketed_in_the_listener() -> None:
    assert VirtualBroker(0, "PLAINTEXT", "::1", 9092).listener == "PLAINTEXT://[::1]:9092"


@pytest.mark.parametrize(
    "name",
    [
        "log.dirs",
        "log.dir",
        "metadata.log.dir",
        "controller.quorum.bootstrap.servers",
        "controller.quorum.voters",
        "controller.listener.names",
        "inter.broker.listener.name",
        "security.inter.broker.protocol",
        "process.roles",
        "sasl.enabled.mechanisms",
        "sasl.mechanism.inter.broker.protocol",
        "ssl.keystore.location",
    ],
)
def test_upstream_setup_is_withheld_as_kafka_withholds_a_sensitive_config(name: str) -> None:
    upstream = result(BROKER, "7", entry(name, "CONTROLLER", (name, "CONTROLLER")))

    (seen,) = topology.describe_configs_result(upstream, GATEWAY).configs

    assert seen.name == name
    assert seen.value is None
    assert seen.is_sensitive
    assert [s.value for s in seen.synonyms] == [None]


def test_per_listener_entries_are_left_out_because_their_name_is_an_upstream_listeners() -> None:
    upstream = result(
        BROKER,
        "7",
        entry("listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config", None),
        entry("num.io.threads", "8"),
    )

    seen = topology.describe_configs_result(upstream, GATEWAY)

    assert [e.name for e in seen.configs] == ["num.io.threads"]


def test_any_value_with_an_address_or_path_is_withheld_whatever_its_name() -> None:
    upstream = result(
        TOPIC,
        "orders",
        entry("some.plugin.endpoint", "kafka-1.internal:9092"),
        entry("retention.ms", "604800000", ("log.retention.ms", "/srv/kafka/odd")),
        entry("cleanup.policy", "delete"),
    )

    seen = by_name(topology.describe_configs_result(upstream, GATEWAY))

    assert seen["some.plugin.endpoint"].value is None
    assert seen["some.plugin.endpoint"].is_sensitive
    assert seen["retention.ms"].value is None
    assert seen["cleanup.policy"].value == "delete"
    assert not seen["cleanup.policy"].is_sensitive


def test_topic_configs_named_like_broker_settings_are_only_checked_by_value() -> None:
    # The name rules describe a broker; on a topic only the value rule applies.
    upstream = result(TOPIC, "orders", entry("ssl.cipher", "none"))

    (seen,) = topology.describe_configs_result(upstream, GATEWAY).configs

    assert seen.value == "none"


def test_an_error_message_naming_an_upstream_address_is_replaced_by_null() -> None:
    upstream = result(BROKER, "7", message="Cannot reach 127.0.0.1:19093")
    kept = result(BROKER, "7", message="Unknown config")

    assert topology.describe_configs_result(upstream, GATEWAY).error_message is None
    assert topology.describe_configs_result(kept, GATEWAY).error_message == "Unknown config"


@pytest.mark.parametrize(
    ("resource_type", "name", "refused"),
    [
        (BROKER, "7", False),
        (BROKER, "", False),
        (BROKER, "1", True),
        (BROKER, "zero", True),
        (i8(8), "1", True),
        (i8(8), "7", False),
        (TOPIC, "1", False),
    ],
)
def test_only_the_gateways_own_broker_id_or_the_default_resource_is_served(
    resource_type: i8, name: str, refused: bool
) -> None:
    resource = describe_request.DescribeConfigsResource(
        resource_type=resource_type, resource_name=name, configuration_keys=None
    )

    text = topology.foreign_broker(resource, 7)

    assert (text is not None) == refused
    if refused:
        assert text == f"Unexpected broker id, expected 7 or empty string, but received {name}"


def test_log_dirs_get_neutral_names() -> None:
    results = [
        log_dirs_response.DescribeLogDirsResult(
            error_code=ErrorCode.none,
            log_dir=path,
            topics=(),
            total_bytes=i64(10),
            usable_bytes=i64(5),
        )
        for path in ("/tmp/dev/broker-1/data", "/tmp/dev/broker-2/data")
    ]

    renamed = topology.log_dirs(results)

    assert [r.log_dir for r in renamed] == ["log-dir-0", "log-dir-1"]
    assert [r.total_bytes for r in renamed] == [10, 10]


# -- through a connection -----------------------------------------------------------------


def describe(*resources: tuple[i8, str]) -> Any:
    return describe_request.DescribeConfigsRequest(
        resources=tuple(
            describe_request.DescribeConfigsResource(
                resource_type=t, resource_name=n, configuration_keys=None
            )
            for t, n in resources
        ),
        include_synonyms=True,
        include_documentation=False,
    )


async def test_describe_configs_for_the_gateway_answers_with_its_own_listener() -> None:
    async with Harness() as h:
        h.pool.set_layout((1,), {})
        h.client.send(describe((BROKER, str(GATEWAY_NODE))))
        (sent,) = await h.sends(1)
        assert [r.resource_name for r in sent.body.resources] == ["1"]
        sent.reply(
            describe_response.DescribeConfigsResponse(
                throttle_time=codec.NO_THROTTLE,
                results=(
                    result(
                        BROKER,
                        "1",
                        entry("advertised.listeners", UPSTREAM_LISTENER),
                        entry("log.dirs", "/tmp/dev/primary/broker-1/data"),
                    ),
                ),
            )
        )
        (answer,) = await h.answers(1)

    (seen,) = answer.body.results
    assert seen.resource_name == str(GATEWAY_NODE)
    configs = by_name(seen)
    assert configs["advertised.listeners"].value == f"PLAINTEXT://{ADVERTISED[0]}:{ADVERTISED[1]}"
    assert configs["log.dirs"].value is None


async def test_describe_configs_for_another_broker_is_refused_without_asking_upstream() -> None:
    async with Harness() as h:
        h.pool.set_layout((1,), {})
        h.client.send(describe((BROKER, "1")))
        (answer,) = await h.answers(1)
        assert h.pool.sent == []

    (seen,) = answer.body.results
    assert seen.error_code == ErrorCode.invalid_request
    assert seen.resource_name == "1"
    assert seen.configs == ()


async def test_alter_configs_for_another_broker_is_refused_beside_an_allowed_topic() -> None:
    request = alter_request.IncrementalAlterConfigsRequest(
        resources=tuple(
            alter_request.AlterConfigsResource(resource_type=t, resource_name=n, configs=())
            for t, n in ((BROKER, "1"), (TOPIC, "orders"))
        ),
        validate_only=True,
    )
    async with Harness() as h:
        h.pool.set_layout((1,), {})
        h.client.send(request)
        (sent,) = await h.sends(1)
        assert [r.resource_name for r in sent.body.resources] == ["orders"]
        sent.reply(
            alter_response.IncrementalAlterConfigsResponse(
                throttle_time=codec.NO_THROTTLE,
                responses=(
                    alter_response.AlterConfigsResourceResponse(
                        error_code=ErrorCode.none,
                        error_message=None,
                        resource_type=TOPIC,
                        resource_name="orders",
                    ),
                ),
            )
        )
        (answer,) = await h.answers(1)

    codes = {r.resource_name: r.error_code for r in answer.body.responses}
    assert codes == {"orders": ErrorCode.none, "1": ErrorCode.invalid_request}


async def test_describe_log_dirs_hides_every_upstream_directory() -> None:
    async with Harness() as h:
        h.pool.set_layout((1, 2), {})
        h.client.send(log_dirs_request.DescribeLogDirsRequest(topics=None))
        sent = await h.sends(2)
        for each in sent:
            each.reply(
                log_dirs_response.DescribeLogDirsResponse(
                    throttle_time=codec.NO_THROTTLE,
                    error_code=ErrorCode.none,
                    results=(
                        log_dirs_response.DescribeLogDirsResult(
                            error_code=ErrorCode.none,
                            log_dir=f"/tmp/dev/broker-{each.node}/data",
                            topics=(),
                            total_bytes=i64(-1),
                            usable_bytes=i64(-1),
                        ),
                    ),
                )
            )
        (answer,) = await h.answers(1)

    assert [r.log_dir for r in answer.body.results] == ["log-dir-0", "log-dir-1"]


def test_an_alter_configs_message_naming_an_upstream_path_is_replaced_by_null() -> None:
    upstream = alter_response.AlterConfigsResourceResponse(
        error_code=ErrorCode.invalid_config,
        error_message="Cannot write /tmp/dev/primary/broker-1/data/meta.properties",
        resource_type=BROKER,
        resource_name="7",
    )

    seen = topology.alter_configs_result(upstream)

    assert seen.error_code == ErrorCode.invalid_config
    assert seen.error_message is None


async def test_altering_the_gateways_own_broker_configs_is_refused_without_asking_upstream() -> (
    None
):
    request = alter_request.IncrementalAlterConfigsRequest(
        resources=(
            alter_request.AlterConfigsResource(
                resource_type=BROKER, resource_name=str(GATEWAY_NODE), configs=()
            ),
        ),
        validate_only=False,
    )
    async with Harness() as h:
        h.pool.set_layout((1,), {})
        h.client.send(request)
        (answer,) = await h.answers(1)
        assert h.pool.sent == []

    (seen,) = answer.body.responses
    assert seen.error_code == ErrorCode.policy_violation
    assert "whole cluster" in seen.error_message
