"""Connection and authentication events, appended without holding the connection up.

The server and the SASL handlers call a :class:`Recorder` (held by ``Services.audit``,
None when audit is off). Each call builds its event and hands it to the sink in a task
of its own: a connection is never made to wait for the log, and with the log unhealthy
a new connection is still accepted (its requests are what the audit stage refuses).
A failed append is counted and logged, never raised to the caller. This module does
not read or write sockets, and never sees a credential.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.audit import events
from gateway.audit.sink import AuditSink

if TYPE_CHECKING:
    from gateway.pipeline.policies import PolicyStore, ReloadReport
    from gateway.session import ClientSession

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StageSettings:
    """What the audit stage needs of the audit config (the ``audit:`` section provides
    it when it lands): whether requests are served while events cannot be written."""

    fail_open: bool = False


@dataclass
class Recorder:
    """Appends connection and authentication events in the background."""

    sink: AuditSink
    settings: StageSettings = field(default_factory=StageSettings)
    # Appends that raised (the log refused or failed them).
    failures: int = 0
    _pending: set[asyncio.Task[None]] = field(default_factory=set)

    def connection_opened(self, session: ClientSession) -> None:
        self._append(events.connection_opened(session))

    def connection_closed(
        self, session: ClientSession, reason: str, bytes_in: int, bytes_out: int, requests: int
    ) -> None:
        self._append(events.connection_closed(session, reason, bytes_in, bytes_out, requests))

    def authentication(
        self,
        session: ClientSession,
        mechanism: str | None,
        principal: str | None,
        ok: bool,
        reason: str | None,
    ) -> None:
        self._append(events.authentication(session, mechanism, principal, ok, reason))

    def watch_policy(self, store: PolicyStore) -> None:
        """Record ``store``'s reloads (watcher, SIGHUP, admin; they run on worker
        threads) as ``policy_reload`` events, appended from the running loop."""
        loop = asyncio.get_running_loop()

        def report(reload: ReloadReport) -> None:
            loop.call_soon_threadsafe(self.policy_reload, reload)

        store.on_reload = report

    def policy_reload(self, report: ReloadReport) -> None:
        outcome = report.outcome
        self._append(
            events.policy_reload(
                report.old_version,
                report.new_version,
                outcome.result == "success",
                outcome.problems or (),
                report.trigger,
                report.by,
            )
        )

    async def admin_action(
        self, principal: str | None, method: str, path: str, status: int, peer: str | None
    ) -> None:
        """Append an admin call's event and return once it is durable (the answer waits
        for it); raises AuditUnavailable when it cannot be written."""
        await self.sink.append(events.admin_action(principal, method, path, status, peer))

    async def drain(self) -> None:
        """Wait for the appends started so far (shutdown, tests)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    def _append(self, event: Mapping[str, Any]) -> None:
        task = asyncio.ensure_future(self._write(event))
        # Held until done: the loop keeps only weak references to tasks.
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _write(self, event: Mapping[str, Any]) -> None:
        try:
            await self.sink.append(event)
        except Exception:
            self.failures += 1
            log.warning("audit event %s not written", event.get("type"), exc_info=True)
