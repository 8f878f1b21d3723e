"""Idempotent and transactional producers: producer ids, transactions, their offsets.

Transactional requests go to the transactional id's upstream coordinator, offsets
committed in a transaction to the group's coordinator. Produce and Fetch need nothing
special: batches keep their producer id, epoch and sequence (they stay bytes), and a
read_committed Fetch gets the upstream's last stable offset and aborted-transaction
list unchanged.
"""

from __future__ import annotations

from typing import Any

from gateway.handlers.coordination import (
    MultiKeyApi,
    split_by_coordinator,
    to_coordinator,
    to_every_broker,
)
from gateway.handlers.fanout import partitioned
from gateway.handlers.routing import PartitionedApi
from gateway.protocol.codec import Request
from gateway.session import ClientSession
from gateway.upstream.coordinators import GROUP, TRANSACTION


async def handle_init_producer_id(session: ClientSession, request: Request) -> Any:
    transactional_id = request.body.transactional_id
    budget = request.body.transaction_timeout.total_seconds()
    if transactional_id is None:
        # An idempotent producer's id can come from any broker.
        upstream = session.upstream
        return await session.upstream.request(
            None, request.body, request.client_id, upstream.timeout + budget
        )
    return await to_coordinator(session, request, TRANSACTION, transactional_id, budget)


async def handle_transactional(session: ClientSession, request: Request) -> Any:
    """AddPartitionsToTxn (v0-3), AddOffsetsToTxn, EndTxn."""
    body = request.body
    # AddPartitionsToTxn's generated field is named for the versions that carry it.
    transactional_id = getattr(body, "transactional_id", None)
    if transactional_id is None:
        transactional_id = body.v3_and_below_transactional_id
    return await to_coordinator(session, request, TRANSACTION, transactional_id)


async def handle_txn_offset_commit(session: ClientSession, request: Request) -> Any:
    return await to_coordinator(session, request, GROUP, request.body.group_id)


_DESCRIBE_TRANSACTIONS = MultiKeyApi(
    key_type=TRANSACTION,
    request_keys="transactional_ids",
    response_results="transaction_states",
    key_of_item=str,
    key_of_result=lambda result: str(result.transactional_id),
)


async def handle_describe_transactions(session: ClientSession, request: Request) -> Any:
    return await split_by_coordinator(session, request, _DESCRIBE_TRANSACTIONS)


async def handle_list_transactions(session: ClientSession, request: Request) -> Any:
    return await to_every_broker(
        session, request, "transaction_states", pooled=("unknown_state_filters",)
    )


DESCRIBE_PRODUCERS = PartitionedApi(
    request_topics="topics",
    request_partitions="partition_indexes",
    request_partition="",
    response_topics="topics",
    response_partitions="partitions",
    response_partition="partition_index",
    response_topic_class="TopicResponse",
    response_partition_class="PartitionResponse",
    error_fields=lambda: {"error_message": None, "active_producers": ()},
)


async def handle_describe_producers(session: ClientSession, request: Request) -> Any:
    return await partitioned(session, request, DESCRIBE_PRODUCERS, "describe_producers")
