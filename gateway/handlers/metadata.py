"""Metadata, DescribeCluster and FindCoordinator: the gateway as one virtual broker.

Clients only ever learn the gateway's advertised address: it is the one broker, the
leader and only replica of every partition, the controller and every coordinator
(DESIGN decision 1). Topic ids, leader epochs and errors pass through unchanged.
"""

from __future__ import annotations

import uuid
from typing import Any

from kio.schema.errors import ErrorCode

from gateway.errors import UpstreamError
from gateway.protocol import codec
from gateway.protocol.codec import Request
from gateway.protocol.versions import DESCRIBE_CLUSTER, FIND_COORDINATOR
from gateway.session import ClientSession
from gateway.upstream.view import ClusterView

_NO_TOPIC_ID = uuid.UUID(int=0)


def as_virtual_broker(session: ClientSession, response: Any) -> Any:
    module = codec.entity_module(response)
    host, port = session.advertised_address
    me = session.node_id
    broker = codec.build(module.MetadataResponseBroker, node_id=me, host=host, port=port, rack=None)
    topics = tuple(
        codec.replace(
            topic,
            partitions=tuple(
                codec.replace(
                    p,
                    leader_id=me if p.leader_id >= 0 else p.leader_id,
                    replica_nodes=(me,),
                    isr_nodes=(me,) if p.leader_id >= 0 else (),
                    offline_replicas=(),
                )
                for p in topic.partitions
            ),
        )
        for topic in response.topics
    )
    return codec.replace(
        response,
        brokers=(broker,),
        controller_id=me,
        cluster_id=session.services.config.gateway.cluster_id,
        topics=topics,
    )


async def handle_metadata(session: ClientSession, request: Request) -> Any:
    upstream = session.upstream
    try:
        response = await session.upstream.request(
            None, request.body, request.client_id, upstream.timeout
        )
    except UpstreamError:
        # The cluster is away: answer from the last layout the gateway read, as a
        # broker answers from its metadata cache. Clients keep their topics and retry
        # their requests instead of forgetting every partition. Before any layout is
        # read, every named topic is LEADER_NOT_AVAILABLE, and the gateway is still the
        # one broker listed: librdkafka forgets a broker an answer with topics leaves out.
        return as_virtual_broker(session, _from_view(upstream.view, request))
    # The shared layout is only read by the gateway's own requests; a topic it does not
    # know yet (just created) is a reason to read it again.
    if any(t.error_code == 0 and t.name not in upstream.view.topics for t in response.topics):
        upstream.refresh_soon()
    return as_virtual_broker(session, response)


def _from_view(view: ClusterView, request: Request) -> Any:
    """A Metadata answer of the request's version built from the gateway's layout;
    a topic it does not know is LEADER_NOT_AVAILABLE (retriable: it may exist)."""
    cls = codec.response_schema(request.api_key, request.api_version)
    module = codec.entity_module(cls)
    asked = request.body.topics
    if asked is None:
        names: list[tuple[str | None, Any]] = [(n, None) for n in view.topics]
    else:
        names = [(t.name, getattr(t, "topic_id", None)) for t in asked]
    topics = []
    for name, topic_id in names:
        known = name if name is not None else view.names_by_id.get(topic_id)
        route = view.topics.get(known) if known is not None else None
        topics.append(
            codec.build(
                module.MetadataResponseTopic,
                error_code=ErrorCode.none if route else ErrorCode.leader_not_available,
                name=known,
                topic_id=(route.topic_id if route else topic_id) or _NO_TOPIC_ID,
                is_internal=bool(route and route.is_internal),
                partitions=tuple(
                    codec.build(
                        module.MetadataResponsePartition,
                        error_code=ErrorCode.none,
                        partition_index=index,
                        leader_id=p.leader,
                        leader_epoch=p.leader_epoch,
                        replica_nodes=(),
                        isr_nodes=(),
                        offline_replicas=(),
                    )
                    for index, p in sorted(route.partitions.items())
                )
                if route
                else (),
                topic_authorized_operations=-(2**31),
            )
        )
    return codec.build(
        cls,
        throttle_time=codec.NO_THROTTLE,
        error_code=ErrorCode.none,
        brokers=(),
        cluster_id=None,
        controller_id=-1,
        topics=tuple(topics),
        cluster_authorized_operations=-(2**31),
    )


async def handle_describe_cluster(session: ClientSession, request: Request) -> Any:
    cls = codec.response_schema(DESCRIBE_CLUSTER, request.api_version)
    host, port = session.advertised_address
    broker = codec.build(
        codec.entity_module(cls).DescribeClusterBroker,
        broker_id=session.node_id,
        host=host,
        port=port,
        rack=None,
        is_fenced=False,
    )
    return codec.build(
        cls,
        throttle_time=codec.NO_THROTTLE,
        error_code=ErrorCode.none,
        error_message=None,
        cluster_id=session.services.config.gateway.cluster_id,
        controller_id=session.node_id,
        brokers=(broker,),
        cluster_authorized_operations=-(2**31),
    )


async def handle_find_coordinator(session: ClientSession, request: Request) -> Any:
    cls = codec.response_schema(FIND_COORDINATOR, request.api_version)
    host, port = session.advertised_address
    me = session.node_id
    if request.api_version < 4:
        return codec.build(
            cls,
            throttle_time=codec.NO_THROTTLE,
            error_code=ErrorCode.none,
            error_message=None,
            node_id=me,
            host=host,
            port=port,
        )
    coordinator = codec.entity_module(cls).Coordinator
    return codec.build(
        cls,
        throttle_time=codec.NO_THROTTLE,
        coordinators=tuple(
            codec.build(
                coordinator,
                key=key,
                node_id=me,
                host=host,
                port=port,
                error_code=ErrorCode.none,
                error_message=None,
            )
            for key in request.body.coordinator_keys
        ),
    )
