"""DescribeConfigs: topic and broker configuration, read through the gateway.

Clients know one broker, the gateway; a broker resource named after the gateway's
node id is answered by one upstream broker and reported back under the gateway's id.
"""

from __future__ import annotations

from typing import Any

from gateway.protocol import codec
from gateway.protocol.codec import Request
from gateway.session import ClientSession

BROKER = 4
BROKER_LOGGER = 8
_BROKER_TYPES = frozenset({BROKER, BROKER_LOGGER})


def _is_gateway_broker(session: ClientSession, resource: Any) -> bool:
    return resource.resource_type in _BROKER_TYPES and resource.resource_name == str(
        session.node_id
    )


async def handle_describe_configs(session: ClientSession, request: Request) -> Any:
    pool = session.services.pool
    target = pool.any_broker()
    resources = tuple(
        codec.replace(r, resource_name=str(target)) if _is_gateway_broker(session, r) else r
        for r in request.body.resources
    )
    asked_as_gateway = {
        r.resource_type for r in request.body.resources if _is_gateway_broker(session, r)
    }
    response = await session.upstream.request(
        target, codec.replace(request.body, resources=resources), request.client_id, pool.timeout
    )
    results = tuple(
        codec.replace(r, resource_name=str(session.node_id))
        if r.resource_type in asked_as_gateway and r.resource_name == str(target)
        else r
        for r in response.results
    )
    return codec.replace(response, results=results)
