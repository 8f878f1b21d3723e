"""One module per API family; :data:`HANDLERS` maps each API key to its handler.

A handler takes the client's session and decoded request and returns the response
entity (of the request's version), or None when the client expects no response
(Produce with acks=0).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from gateway.handlers import (
    api_versions,
    configs,
    fetch,
    metadata,
    offsets,
    produce,
    sasl,
    topics,
    transactions,
)
from gateway.protocol import versions as api
from gateway.protocol.codec import Request
from gateway.session import ClientSession

Handler = Callable[[ClientSession, Request], Awaitable[Any]]

HANDLERS: dict[int, Handler] = {
    api.API_VERSIONS: api_versions.handle,
    api.SASL_HANDSHAKE: sasl.handle_handshake,
    api.SASL_AUTHENTICATE: sasl.handle_authenticate,
    api.METADATA: metadata.handle_metadata,
    api.DESCRIBE_CLUSTER: metadata.handle_describe_cluster,
    api.FIND_COORDINATOR: metadata.handle_find_coordinator,
    api.PRODUCE: produce.handle,
    api.FETCH: fetch.handle,
    api.LIST_OFFSETS: offsets.handle_list_offsets,
    api.OFFSET_FOR_LEADER_EPOCH: offsets.handle_offset_for_leader_epoch,
    api.CREATE_TOPICS: topics.handle_create_topics,
    api.DELETE_TOPICS: topics.handle_delete_topics,
    api.INIT_PRODUCER_ID: transactions.handle_init_producer_id,
    api.DESCRIBE_CONFIGS: configs.handle_describe_configs,
}
