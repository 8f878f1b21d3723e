"""Consumer groups, classic and KIP-848, forwarded to the upstream group coordinator.

Every group request is sent to the group's real coordinator (found upstream, followed
when it moves). Each client connection has its own upstream connections, so a
JoinGroup held by the coordinator during a rebalance stalls nobody else.
"""

from __future__ import annotations

import datetime
from typing import Any

from gateway.handlers.coordination import (
    MultiKeyApi,
    split_by_coordinator,
    to_coordinator,
    to_every_broker,
)
from gateway.protocol.codec import Request
from gateway.session import ClientSession
from gateway.upstream.coordinators import GROUP

# SyncGroup waits for the group leader's assignment; the client allows up to its
# rebalance timeout (5 minutes by default in the Java client).
SYNC_GROUP_BUDGET = datetime.timedelta(minutes=5)


async def handle_join_group(session: ClientSession, request: Request) -> Any:
    rebalance = getattr(request.body, "rebalance_timeout", request.body.session_timeout)
    return await to_coordinator(
        session, request, GROUP, request.body.group_id, extra_budget=rebalance.total_seconds()
    )


async def handle_sync_group(session: ClientSession, request: Request) -> Any:
    return await to_coordinator(
        session,
        request,
        GROUP,
        request.body.group_id,
        extra_budget=SYNC_GROUP_BUDGET.total_seconds(),
    )


async def handle_single_group(session: ClientSession, request: Request) -> Any:
    """Heartbeat, LeaveGroup, OffsetCommit, OffsetDelete, ConsumerGroupHeartbeat."""
    return await to_coordinator(session, request, GROUP, request.body.group_id)


_OFFSET_FETCH_GROUPS = MultiKeyApi(
    key_type=GROUP,
    request_keys="groups",
    response_results="groups",
    key_of_item=lambda item: str(item.group_id),
    key_of_result=lambda result: str(result.group_id),
)


async def handle_offset_fetch(session: ClientSession, request: Request) -> Any:
    if hasattr(request.body, "groups"):  # v8+: several groups in one request
        return await split_by_coordinator(session, request, _OFFSET_FETCH_GROUPS)
    return await to_coordinator(session, request, GROUP, request.body.group_id)


_DESCRIBE_GROUPS = MultiKeyApi(
    key_type=GROUP,
    request_keys="groups",
    response_results="groups",
    key_of_item=str,
    key_of_result=lambda result: str(result.group_id),
)
_CONSUMER_GROUP_DESCRIBE = MultiKeyApi(
    key_type=GROUP,
    request_keys="group_ids",
    response_results="groups",
    key_of_item=str,
    key_of_result=lambda result: str(result.group_id),
)
_DELETE_GROUPS = MultiKeyApi(
    key_type=GROUP,
    request_keys="groups_names",
    response_results="results",
    key_of_item=str,
    key_of_result=lambda result: str(result.group_id),
)


async def handle_describe_groups(session: ClientSession, request: Request) -> Any:
    return await split_by_coordinator(session, request, _DESCRIBE_GROUPS)


async def handle_consumer_group_describe(session: ClientSession, request: Request) -> Any:
    return await split_by_coordinator(session, request, _CONSUMER_GROUP_DESCRIBE)


async def handle_delete_groups(session: ClientSession, request: Request) -> Any:
    return await split_by_coordinator(session, request, _DELETE_GROUPS)


async def handle_list_groups(session: ClientSession, request: Request) -> Any:
    return await to_every_broker(session, request, "groups")
