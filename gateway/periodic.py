"""One background check every few seconds, off the event loop, that never dies.

Used by the watchers that re-read files while the gateway runs (service accounts,
policies): each check runs on a worker thread so that reading and validating a file
never stalls client traffic, and an error is logged and tried again next interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class PeriodicCheck(Generic[T]):
    """Calls ``check`` on a worker thread every ``interval`` seconds while running.

    ``start()`` from the gateway's start, ``await stop()`` from its stop. ``what`` names
    the check in the task name and in the log line of a failed check.
    """

    def __init__(self, what: str, interval: float, check: Callable[[], T]) -> None:
        self._what = what
        self._interval = interval
        self._check = check
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self._what)

    @property
    def running(self) -> bool:
        return self._task is not None

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def check(self) -> T:
        """One check now."""
        return await asyncio.to_thread(self._check)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check()
            except Exception:
                # Whatever went wrong, what is in force stays and the next interval
                # tries again: the check must not die silently.
                log.exception("%s failed", self._what)
