"""InitProducerId: producer ids for idempotent and transactional producers.

An idempotent producer's id can come from any broker; a transactional producer's
must come from its transaction coordinator, which the gateway finds upstream.
"""

from __future__ import annotations

from typing import Any

from gateway.protocol.codec import Request
from gateway.session import ClientSession
from gateway.upstream.coordinators import STALE_COORDINATOR_ERRORS, TRANSACTION

MAX_ATTEMPTS = 3


async def handle_init_producer_id(session: ClientSession, request: Request) -> Any:
    transactional_id = request.body.transactional_id
    pool = session.services.pool
    budget = pool.timeout + request.body.transaction_timeout.total_seconds()
    if transactional_id is None:
        return await session.upstream.request(None, request.body, request.client_id, budget)
    coordinators = session.services.coordinators
    response: Any = None
    for _ in range(MAX_ATTEMPTS):
        node = await coordinators.find(session.upstream, TRANSACTION, transactional_id)
        response = await session.upstream.request(node, request.body, request.client_id, budget)
        if response.error_code not in STALE_COORDINATOR_ERRORS:
            break
        coordinators.forget(TRANSACTION, transactional_id)
    return response
