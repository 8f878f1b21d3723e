"""One module per API family; :data:`HANDLERS` maps each API key to its handler.

A handler takes the client's session and decoded request and returns an
:data:`~gateway.protocol.codec.Answer`: the response entity (of the request's version),
an upstream answer's encoded body passed on as is, or None when the client expects no
response (Produce with acks=0). Handlers are called only by the request pipeline
(:mod:`gateway.pipeline`), after its stages have seen the request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from gateway.handlers import (
    admin,
    api_versions,
    fetch,
    groups,
    metadata,
    offsets,
    produce,
    sasl,
    transactions,
)
from gateway.protocol import versions as api
from gateway.protocol.codec import Answer, Request
from gateway.session import ClientSession

Handler = Callable[[ClientSession, Request], Awaitable[Answer]]

HANDLERS: dict[int, Handler] = {
    # Connection set-up
    api.API_VERSIONS: api_versions.handle,
    api.SASL_HANDSHAKE: sasl.handle_handshake,
    api.SASL_AUTHENTICATE: sasl.handle_authenticate,
    # The one virtual broker
    api.METADATA: metadata.handle_metadata,
    api.DESCRIBE_CLUSTER: metadata.handle_describe_cluster,
    api.FIND_COORDINATOR: metadata.handle_find_coordinator,
    # Data path
    api.PRODUCE: produce.handle,
    api.FETCH: fetch.handle,
    api.LIST_OFFSETS: offsets.handle_list_offsets,
    api.OFFSET_FOR_LEADER_EPOCH: offsets.handle_offset_for_leader_epoch,
    # Consumer groups
    api.JOIN_GROUP: groups.handle_join_group,
    api.SYNC_GROUP: groups.handle_sync_group,
    api.HEARTBEAT: groups.handle_single_group,
    api.LEAVE_GROUP: groups.handle_single_group,
    api.OFFSET_COMMIT: groups.handle_single_group,
    api.OFFSET_DELETE: groups.handle_single_group,
    api.CONSUMER_GROUP_HEARTBEAT: groups.handle_single_group,
    api.OFFSET_FETCH: groups.handle_offset_fetch,
    api.DESCRIBE_GROUPS: groups.handle_describe_groups,
    api.CONSUMER_GROUP_DESCRIBE: groups.handle_consumer_group_describe,
    api.DELETE_GROUPS: groups.handle_delete_groups,
    api.LIST_GROUPS: groups.handle_list_groups,
    # Idempotence and transactions
    api.INIT_PRODUCER_ID: transactions.handle_init_producer_id,
    api.ADD_PARTITIONS_TO_TXN: transactions.handle_transactional,
    api.ADD_OFFSETS_TO_TXN: transactions.handle_transactional,
    api.END_TXN: transactions.handle_transactional,
    api.TXN_OFFSET_COMMIT: transactions.handle_txn_offset_commit,
    api.DESCRIBE_TRANSACTIONS: transactions.handle_describe_transactions,
    api.LIST_TRANSACTIONS: transactions.handle_list_transactions,
    api.DESCRIBE_PRODUCERS: transactions.handle_describe_producers,
    # Admin
    api.CREATE_TOPICS: admin.handle_to_controller,
    api.DELETE_TOPICS: admin.handle_to_controller,
    api.CREATE_PARTITIONS: admin.handle_to_controller,
    api.ELECT_LEADERS: admin.handle_to_controller,
    api.DESCRIBE_CONFIGS: admin.handle_configs,
    api.ALTER_CONFIGS: admin.handle_configs,
    api.INCREMENTAL_ALTER_CONFIGS: admin.handle_configs,
    api.DELETE_RECORDS: admin.handle_delete_records,
    api.DESCRIBE_LOG_DIRS: admin.handle_describe_log_dirs,
}
