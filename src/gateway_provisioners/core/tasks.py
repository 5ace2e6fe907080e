"""Tasks an owner starts and does not await: kept until they end, their failures logged, all cancelled at close.

asyncio keeps only weak references to tasks, so a task nobody holds may be collected mid-flight; and a task whose
exception nobody retrieves is reported only as "Task exception was never retrieved" at exit. Every adapter's
background work (reading an agent's output, following a pod, a clean-up after a failed launch) goes through one of
these instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any


class BackgroundTasks:
    """A set of fire-and-forget tasks belonging to one owner."""

    def __init__(self, log: logging.Logger | logging.LoggerAdapter[logging.Logger], what: str = "background task"):
        self._log = log
        self._what = what
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in the background; the task is kept until it ends, and a failure is logged once."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.warning("%s failed: %s", self._what, task.exception())

    def cancel(self) -> None:
        """Cancel every task still running (at close)."""
        for task in list(self._tasks):
            task.cancel()

    async def join(self) -> None:
        """Wait until every task has ended (cancelled ones included); their failures are logged, not raised."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    def __len__(self) -> int:
        return len(self._tasks)
