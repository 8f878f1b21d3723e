"""The admin API: topics, partitions, configs, records, log dirs, leader elections.

Cluster-wide requests go to the upstream controller (brokers forward what they must);
per-partition ones (DeleteRecords) to each partition's leader; per-broker ones
(DescribeLogDirs) to every broker, merged. Clients know one broker, the gateway: a
broker config resource named after the gateway's node id is answered by one upstream
broker and reported back under the gateway's id, with the gateway's own listeners and
node id and no upstream address or path (:mod:`gateway.protocol.topology` says what is
withheld); a broker resource with another id is refused as a Kafka broker refuses it,
and log dirs get neutral names. Topic changes are followed by a
metadata refresh so the next request to a new topic is routed without a miss.
(Approval of high-risk operations is a later stage; these handlers are where it will be
called.)
"""

from __future__ import annotations

import contextlib
from typing import Any

from kio.schema.errors import ErrorCode

from gateway.errors import UpstreamError
from gateway.handlers.coordination import to_every_broker
from gateway.handlers.fanout import own_budget, partitioned
from gateway.handlers.routing import PartitionedApi
from gateway.protocol import codec, topology
from gateway.protocol.codec import Request
from gateway.protocol.versions import DESCRIBE_CONFIGS
from gateway.session import ClientSession

BROKER = 4
BROKER_LOGGER = 8
_BROKER_TYPES = frozenset({BROKER, BROKER_LOGGER})


async def handle_to_controller(session: ClientSession, request: Request) -> Any:
    """CreateTopics, DeleteTopics, CreatePartitions, ElectLeaders."""
    upstream = session.upstream
    budget = own_budget(session, request)
    response = await session.upstream.request(None, request.body, request.client_id, budget)
    # The change is done: a refresh that fails now must not turn it into an error.
    with contextlib.suppress(UpstreamError):
        await upstream.refresh()
    return response


def _names_the_gateway(session: ClientSession, resource: Any) -> bool:
    return resource.resource_type in _BROKER_TYPES and resource.resource_name == str(
        session.node_id
    )


def _virtual_broker(session: ClientSession) -> topology.VirtualBroker:
    host, port = session.advertised_address
    return topology.VirtualBroker(session.node_id, session.listener.security_protocol, host, port)


async def handle_configs(session: ClientSession, request: Request) -> Any:
    """DescribeConfigs, AlterConfigs, IncrementalAlterConfigs; answers are made safe by
    :mod:`gateway.protocol.topology` (own listeners and node id, no upstream hosts or
    paths), and a broker resource other than the gateway is refused as Kafka refuses it."""
    describe = request.api_key == DESCRIBE_CONFIGS
    results_field = "results" if describe else "responses"
    response_cls = codec.response_schema(request.api_key, request.api_version)
    result_cls = getattr(
        codec.entity_module(response_cls),
        "DescribeConfigsResult" if describe else "AlterConfigsResourceResponse",
    )
    asked = request.body.resources
    refused = {
        i: text
        for i, r in enumerate(asked)
        if (text := topology.foreign_broker(r, session.node_id)) is not None
    }
    not_here = {
        i: text
        for i, r in enumerate(asked)
        if not describe
        and i not in refused
        and (text := topology.gateway_broker_alteration(r, session.node_id)) is not None
    }
    refused.update(not_here)
    forwarded = [r for i, r in enumerate(asked) if i not in refused]
    answered: list[Any] = []
    response = None
    if forwarded:
        response = await _forward_configs(session, request, forwarded)
        answered = list(getattr(response, results_field))
    broker = _virtual_broker(session)
    # Clients match results to resources by type and name, not by position (Kafka
    # itself lists the authorized ones first).
    results = [
        topology.describe_configs_result(r, broker)
        if describe
        else topology.alter_configs_result(r)
        for r in answered
    ]
    results += [
        topology.foreign_broker_result(
            result_cls,
            asked[i],
            t,
            ErrorCode.policy_violation if i in not_here else ErrorCode.invalid_request,
        )
        for i, t in refused.items()
    ]
    if response is None:
        return codec.build(
            response_cls, throttle_time=codec.NO_THROTTLE, **{results_field: tuple(results)}
        )
    return codec.replace(response, **{results_field: tuple(results)})


async def _forward_configs(session: ClientSession, request: Request, asked: list[Any]) -> Any:
    """The upstream answer for ``asked``: a broker resource named after the gateway is
    asked of one upstream broker and answered back under the gateway's id."""
    upstream = session.upstream
    target = upstream.any_broker()
    resources = tuple(
        codec.replace(r, resource_name=str(target)) if _names_the_gateway(session, r) else r
        for r in asked
    )
    as_gateway = {r.resource_type for r in asked if _names_the_gateway(session, r)}
    response = await session.upstream.request(
        target,
        codec.replace(request.body, resources=resources),
        request.client_id,
        upstream.timeout,
    )
    results_field = "results" if request.api_key == DESCRIBE_CONFIGS else "responses"
    results = tuple(
        codec.replace(r, resource_name=str(session.node_id))
        if r.resource_type in as_gateway and r.resource_name == str(target)
        else r
        for r in getattr(response, results_field)
    )
    return codec.replace(response, **{results_field: results})


DELETE_RECORDS = PartitionedApi(
    request_topics="topics",
    request_partitions="partitions",
    request_partition="partition_index",
    response_topics="topics",
    response_partitions="partitions",
    response_partition="partition_index",
    response_topic_class="DeleteRecordsTopicResult",
    response_partition_class="DeleteRecordsPartitionResult",
    error_fields=lambda: {"low_watermark": -1},
)


async def handle_delete_records(session: ClientSession, request: Request) -> Any:
    return await partitioned(session, request, DELETE_RECORDS, "delete_records")


async def handle_describe_log_dirs(session: ClientSession, request: Request) -> Any:
    """Every upstream broker's log dirs, as the virtual broker's, under neutral names."""
    response = await to_every_broker(session, request, "results")
    return codec.replace(response, results=topology.log_dirs(response.results))
