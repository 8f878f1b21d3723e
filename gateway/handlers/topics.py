"""CreateTopics and DeleteTopics, forwarded to the upstream controller.

Each answer is followed by a metadata refresh so that the next produce or fetch to a
new topic is routed without a miss. (Approval of these high-risk operations is a
later stage of the data path; this module is where it will be called.)
"""

from __future__ import annotations

from typing import Any

from gateway.protocol.codec import Request
from gateway.session import ClientSession


async def _forward_to_controller(session: ClientSession, request: Request) -> Any:
    pool = session.services.pool
    timeout = request.body.timeout.total_seconds() + pool.timeout
    response = await session.upstream.request(None, request.body, request.client_id, timeout)
    await pool.refresh()
    return response


async def handle_create_topics(session: ClientSession, request: Request) -> Any:
    return await _forward_to_controller(session, request)


async def handle_delete_topics(session: ClientSession, request: Request) -> Any:
    return await _forward_to_controller(session, request)
