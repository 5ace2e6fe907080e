"""The shared observer: ONE ResourceManager query per interval for every kernel of this server process.

The poller asks for the applications carrying the library's tag (``applicationTags=gateway-provisioners``, from the
earliest submission it still follows) and hands each kernel's application report to that kernel's handle. Kernels
are matched by their unique per-launch tag, never by name. ``poll()`` in the provisioner reads the handle; the cost on
the RM is one request per interval whatever the number of kernels: ``startup_interval`` while a launch waits for
its application master, ``interval`` otherwise, and nothing at all when no kernel is followed.

It also enforces two start-up rules the RM cannot express: an application still waiting for a container when its
launch deadline passes fails with :class:`QueueFull` and is killed; and an application the server has given up on
(a timed-out or cancelled launch) is killed whenever it shows up, even after the timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ...core.backend import BackendHandle, Observation, PlatformState
from .client import ResourceManagerClient
from .observe import LIBRARY_TAG, am_host, app_sort_key, app_tags, is_final, observe, queue_full

log = logging.getLogger("gateway_provisioners.yarn")

#: How long an abandoned launch's application is looked for (a spark-submit may register it late).
ABANDONED_KEEP_SECONDS = 600.0


@dataclass(eq=False)
class Followed:
    """One launch the poller follows."""

    handle: BackendHandle
    tag: str  # the launch's unique tag
    submitted_ms: int
    deadline: float | None  # monotonic; None once start-up is over (or for a restored kernel)
    callback: str | None = None
    app: dict[str, Any] | None = field(default=None, repr=False)
    missing: int = 0


class ApplicationPoller:
    """Follow every kernel's YARN application with one batched query per interval.

    Parameters
    ----------
    client:
        The ResourceManager client (its service user makes the queries).
    interval:
        Seconds between queries once every followed application has its AM (``GP_YARN_POLL_INTERVAL``).
    startup_interval:
        Seconds between queries while a launch waits for its AM (``GP_YARN_STARTUP_POLL_INTERVAL``).
    kill:
        Coroutine that kills an application by id (used for queue-full and abandoned launches).
    """

    def __init__(
        self,
        client: ResourceManagerClient,
        *,
        interval: float = 15.0,
        startup_interval: float = 1.0,
        kill: Callable[[str, str | None], Awaitable[Any]],
    ) -> None:
        self.client = client
        self.interval = interval
        self.startup_interval = startup_interval
        self._kill = kill
        self._followed: dict[str, Followed] = {}
        self._abandoned: dict[str, tuple[float, str | None]] = {}  # tag → (look until, user)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ips: dict[str, str] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self.queries = 0
        self.errors = 0
        self.last_error: str = ""

    # --- what the backend tells the poller --------------------------------------------------------------------------

    def follow(self, item: Followed) -> None:
        self._followed[item.tag] = item
        self.nudge()

    def forget(self, tag: str) -> None:
        self._followed.pop(tag, None)

    def abandon(self, tag: str, user: str | None) -> None:
        """Kill the application with ``tag`` whenever it appears (its launch was given up)."""
        self._followed.pop(tag, None)
        self._abandoned[tag] = (time.monotonic() + ABANDONED_KEEP_SECONDS, user)
        self.nudge()

    def nudge(self) -> None:
        """Query soon (a launch was submitted): start the loop if needed."""
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    # --- the loop ---------------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        while self._followed or self._abandoned:
            self._wake.clear()
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the RM is down or answered nonsense: keep the caches, retry next interval
                self.errors += 1
                if str(exc) != self.last_error:
                    log.warning("YARN ResourceManager query failed: %s", exc)
                self.last_error = str(exc)
            await self._sleep()

    async def _sleep(self) -> None:
        now = time.monotonic()
        starting = [f for f in self._followed.values() if f.deadline is not None and _waiting(f)]
        delay = self.startup_interval if starting or self._abandoned else self.interval
        deadlines = [f.deadline for f in starting if f.deadline is not None]
        if deadlines:
            delay = max(0.0, min(delay, min(deadlines) - now))
        timer = asyncio.get_running_loop().call_later(delay, self._wake.set)
        try:
            await self._wake.wait()
        finally:
            timer.cancel()

    async def poll_once(self) -> None:
        """One batched query, dispatched to every followed launch."""
        if not (self._followed or self._abandoned):
            return
        since = min([f.submitted_ms for f in self._followed.values()] or [int(time.time() * 1000)])
        self.queries += 1
        # Minus a minute: the RM's clock and ours may differ (startedTime is the RM's).
        apps = await self.client.applications([LIBRARY_TAG], started_after_ms=max(0, since - 60_000))
        self.last_error = ""
        by_tag: dict[str, dict[str, Any]] = {}
        for app in sorted(apps, key=lambda a: app_sort_key(str(a.get("id", "")))):
            for tag in app_tags(app):
                by_tag[tag] = app  # one launch tag is one application; the newest wins if ever two
        for item in list(self._followed.values()):
            found = by_tag.get(item.tag)
            if found is None:
                await self._missing(item)
            else:
                item.missing = 0
                await self._seen(item, found)
        now = time.monotonic()
        for tag, (until, user) in list(self._abandoned.items()):
            late = by_tag.get(tag)
            if late is not None and not is_final(late):
                self._spawn(self._kill(str(late["id"]), user))
            elif late is not None or now > until:
                self._abandoned.pop(tag, None)

    async def _seen(self, item: Followed, app: dict[str, Any]) -> None:
        handle = item.handle
        item.app = app
        handle.data["app_id"] = app.get("id")
        if handle.data.get("queue_full"):
            return  # already failed by the deadline rule; the kill is on its way
        observation = observe(app, await self._resolve(app), item.callback)
        if (
            item.deadline is not None
            and observation.state is PlatformState.PENDING
            and time.monotonic() >= item.deadline
        ):
            observation = queue_full(app)
            handle.data["queue_full"] = True
            log.warning("kernel %s: %s", handle.kernel_id, observation.reason)
            self._spawn(self._kill(str(app["id"]), handle.data.get("user")))
        if observation.state.is_over and not handle.observation.state.is_over:
            observation = await self._with_logs(observation, app, item.callback)
        if observation.state is not PlatformState.PENDING:
            # The AM runs (or the launch is over): only the callback and the core's deadline matter now.
            item.deadline = None
        if observation != handle.observation:
            handle.update(observation)

    async def _with_logs(self, observation: Observation, app: dict[str, Any], callback: str | None) -> Observation:
        """Add the agent's own log lines (from the NodeManager) to an application that just ended: the RM's
        diagnostics only say that the AM exited."""
        url = app.get("amContainerLogs")
        if not url:
            return observation
        lines = [f"the agent was told to call back to {callback}"] if callback else []
        for name in ("stderr", "kernel.log"):
            with contextlib.suppress(Exception):
                lines.extend(f"[{name}] {line}" for line in (await self.client.container_log(url, name))[-20:])
        error = observation.error
        if error is not None:
            error.diagnostics = [*error.diagnostics, *lines]
        return dataclasses.replace(observation, diagnostics=[*observation.diagnostics, *lines], error=error)

    async def _missing(self, item: Followed) -> None:
        """The launch's application is not in the answer: not registered yet, or gone from the RM."""
        app_id = item.handle.data.get("app_id")
        if not app_id:
            return  # spark-submit has not registered it yet
        item.missing += 1
        if item.missing < 2:
            return
        app = await self.client.application(str(app_id))  # rare: confirm with one direct look
        if app is None:
            item.handle.update(Observation(PlatformState.GONE, reason=f"YARN no longer knows application {app_id}"))
            self.forget(item.tag)
        else:
            await self._seen(item, app)

    async def _resolve(self, app: dict[str, Any]) -> str | None:
        host = am_host(app)
        if not host:
            return None
        if host not in self._ips:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
                self._ips[host] = str(infos[0][4][0])
            except OSError:
                return host
        return self._ips[host]

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for task in list(self._background):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)


def _waiting(item: Followed) -> bool:
    """Still waiting for an application master (not registered, submitted, or queued without a container)."""
    return item.handle.observation.state is PlatformState.PENDING
