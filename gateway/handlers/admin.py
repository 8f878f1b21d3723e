"""The admin API: topics, partitions, configs, records, log dirs, leader elections.

Cluster-wide requests go to the upstream controller (brokers forward what they must);
per-partition ones (DeleteRecords) to each partition's leader; per-broker ones
(DescribeLogDirs) to every broker, merged. Clients know one broker, the gateway: a
broker config resource named after the gateway's node id is answered by one upstream
broker and reported back under the gateway's id. Topic changes are followed by a
metadata refresh so the next request to a new topic is routed without a miss.
(Approval of high-risk operations is a later stage; these handlers are where it will be
called.)
"""

from __future__ import annotations

import contextlib
from typing import Any

from gateway.errors import UpstreamError
from gateway.handlers.coordination import to_every_broker
from gateway.handlers.fanout import own_budget, partitioned
from gateway.handlers.routing import PartitionedApi
from gateway.protocol import codec
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


async def handle_configs(session: ClientSession, request: Request) -> Any:
    """DescribeConfigs, AlterConfigs, IncrementalAlterConfigs."""
    upstream = session.upstream
    target = upstream.any_broker()
    asked = request.body.resources
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
    return await to_every_broker(session, request, "results")
