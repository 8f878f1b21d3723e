"""Where audit events go: the one method the audit stage and recorder need of the log.

The durable log implements it; tests use an in-memory one. This module holds only the
protocol, so that the pipeline does not depend on how events are stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class AuditSink(Protocol):
    """Stores audit events."""

    @property
    def healthy(self) -> bool:
        """False while events cannot be written: the audit stage then refuses requests
        before they reach the cluster, instead of after (unless ``fail_open``)."""

    async def append(self, event: Mapping[str, Any]) -> None:
        """Return once ``event`` is durable; raise
        :class:`gateway.errors.AuditUnavailable` when it cannot be written."""
