"""One list-and-watch of pods for one namespace (or all) and one label selector: the adapter's shared observer.

The failure model, after KubeSpawner's reflector: list, then watch from the list's resourceVersion; when a watch ends
(server timeout, dropped connection) watch again *from the last version seen*, so no transition is missed; when that
version has expired (410 Gone) list again and reconcile the cache (pods that vanished in between are reported as
deleted); on errors back off exponentially and keep trying. It runs as a task in the server's event loop on the async
client, so the cache is only ever touched from the loop and nothing is shared with threads.

``on_change(pod_key, pod, deleted)`` is called in the loop for every change; readers use :attr:`pods` (a dict keyed
``namespace/name``) and never make a request of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Any

from .client import KubeApiError, KubeClient, WatchExpired

log = logging.getLogger("gateway_provisioners.kubernetes")


def pod_key(pod: dict[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


class PodWatcher:
    """Keep :attr:`pods` equal to the API server's view of the selected pods.

    Parameters
    ----------
    client:
        The API client.
    namespace:
        The namespace watched; None watches all namespaces (per-kernel namespaces).
    label_selector:
        Only pods carrying these labels (the adapter's own).
    on_change:
        Called with (``namespace/name``, the pod, whether it was deleted) after each change.
    watch_timeout:
        Seconds a single watch request lasts before the server ends it and it is renewed from the last version:
        one request per ``watch_timeout`` per watcher, whatever the number of kernels.
    max_backoff:
        Longest wait between attempts while the API server fails.
    """

    def __init__(
        self,
        client: KubeClient,
        namespace: str | None,
        label_selector: str,
        on_change: Callable[[str, dict[str, Any], bool], None],
        watch_timeout: float = 300.0,
        max_backoff: float = 30.0,
    ) -> None:
        self.client, self.namespace, self.label_selector = client, namespace, label_selector
        self.on_change, self.watch_timeout, self.max_backoff = on_change, watch_timeout, max_backoff
        self.pods: dict[str, dict[str, Any]] = {}
        self.resource_version = ""
        self.stats = {"lists": 0, "watches": 0, "expired": 0, "errors": 0}
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._failures = 0  # consecutive failed attempts; any event received resets it

    @property
    def where(self) -> str:
        return self.namespace or "all namespaces"

    async def start(self, timeout: float = 30.0) -> None:
        """Start (once) and return after the first list, so the cache is complete. Raises the first list's error."""
        if self._task is None or self._task.done():
            self._synced.clear()
            self._failure = None
            self._task = asyncio.ensure_future(self._run())
        if not self._synced.is_set():
            waiter = asyncio.ensure_future(self._synced.wait())
            _done, _ = await asyncio.wait({waiter, self._task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if not self._synced.is_set():
                error = self._failure or (self._task.exception() if self._task.done() else None)
                raise error or asyncio.TimeoutError(f"no pod list from the API server within {timeout:g} s")

    async def close(self) -> None:
        """Stop watching. Idempotent."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _run(self) -> None:
        backoff, relist = 0.5, True
        while True:
            try:
                if relist:
                    await self._list()
                    relist = False
                await self._watch()
                self._failures = 0  # a watch that ended normally: renew it from the last version
            except WatchExpired:
                self.stats["expired"] += 1
                log.info("pod watch in %s: resourceVersion %s expired, listing again", self.where,
                         self.resource_version)  # fmt: skip
                relist = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats["errors"] += 1
                self._failures += 1
                failures = self._failures
                if not self._synced.is_set():
                    self._failure = exc
                    if isinstance(exc, KubeApiError) and exc.status in (401, 403, 404):
                        return  # configuration or RBAC: retrying will not help; start() reports it
                # A stream cut mid-way resumes at once from the last version; repeated failures back off.
                relist = not self.resource_version
                if failures == 1 and not relist:
                    log.info("pod watch in %s ended (%s); resuming from %s", self.where, exc, self.resource_version)
                    continue
                delay = min(backoff * 2 ** (failures - 1), self.max_backoff) * (1 + random.random() / 4)
                log.warning("pod watch in %s failed (%s); retrying in %.1f s", self.where, exc, delay)
                await asyncio.sleep(delay)

    async def _list(self) -> None:
        items, version = await self.client.list_pods(self.namespace, self.label_selector)
        self.stats["lists"] += 1
        fresh = {pod_key(pod): pod for pod in items}
        gone = {key: pod for key, pod in self.pods.items() if key not in fresh}
        self.pods = fresh
        self.resource_version = version
        self._synced.set()
        for key, pod in gone.items():  # deleted while the watch was down: after a 410 those DELETED events are lost
            self.on_change(key, pod, True)
        for key, pod in fresh.items():
            self.on_change(key, pod, False)

    async def _watch(self) -> None:
        self.stats["watches"] += 1
        async for kind, obj in self.client.watch_pods(
            self.namespace, self.label_selector, self.resource_version, self.watch_timeout
        ):
            version = (obj.get("metadata") or {}).get("resourceVersion")
            if version:
                self.resource_version = str(version)
            self._failures = 0
            if kind == "BOOKMARK":
                continue
            key = pod_key(obj)
            if kind == "DELETED":
                self.pods.pop(key, None)
                self.on_change(key, obj, True)
            else:
                self.pods[key] = obj
                self.on_change(key, obj, False)
