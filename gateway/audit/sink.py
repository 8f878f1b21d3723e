"""Where audit events go: the one method the audit stage and recorder need of the log.

The durable log implements it; tests use an in-memory one. This module holds only the
protocol, so that the pipeline does not depend on how events are stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class AuditSink(Protocol):
    """Stores audit events."""

    def ensure_writable(self) -> None:
        """Raise :class:`gateway.errors.AuditUnavailable` (counting the refusal) while
        events are known not to be writable, so that the audit stage refuses a request
        before the cluster acts on it rather than after; return otherwise (and always
        when the sink serves through outages, ``fail_open``)."""

    async def append(self, event: Mapping[str, Any]) -> None:
        """Return once ``event`` is durable; raise
        :class:`gateway.errors.AuditUnavailable` when it cannot be written."""
