"""ApiVersions: answered by the gateway from its negotiated version table."""

from __future__ import annotations

from typing import Any

from gateway.protocol.codec import Request
from gateway.protocol.versions import api_versions_response
from gateway.session import ClientSession


async def handle(session: ClientSession, request: Request) -> Any:
    return api_versions_response(request.api_version, session.services.versions)
