"""What a server process shares for Kubernetes: one API client and one pod watch per namespace and label selector.

Provisioners are created per kernel and per kernel spec; the hub is per process (per event loop, strictly: a client
belongs to the loop that made it). A kernel's backend registers its pod with the hub, and the hub's watchers route
each change of that pod to it. However many kernels there are, the API sees one list and one long-lived watch per
namespace, and no request at all for an idle kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from ...per_loop import PerLoop
from .client import KubeClient
from .watcher import PodWatcher

log = logging.getLogger("gateway_provisioners.kubernetes")

MANAGED_BY = "app.kubernetes.io/managed-by"
COMPONENT = "app.kubernetes.io/component"
POOLED_LABEL = "gateway-provisioners/pooled"  # launched for a warm pool: the reaper spares it while it runs
KERNEL_ID_LABEL = "kernel_id"  # the older package's label name, kept so existing tooling still finds kernel pods
MANAGED_BY_VALUE = "gateway-provisioners"
LABEL_SELECTOR = f"{MANAGED_BY}={MANAGED_BY_VALUE},{COMPONENT}=kernel"

PodCallback = Callable[[dict[str, Any], bool], None]  # (pod, deleted)


class KubeHub:
    """The shared client and watchers. Use :func:`shared_hub` to get this process's hub."""

    def __init__(self, client: KubeClient, watch_timeout: float = 300.0, label_selector: str = LABEL_SELECTOR) -> None:
        self.client = client
        self.watch_timeout = watch_timeout
        self.label_selector = label_selector
        self.watchers: dict[str | None, PodWatcher] = {}
        self._routes: dict[str, list[PodCallback]] = {}
        self._starting: dict[str | None, asyncio.Lock] = {}

    async def watcher(self, namespace: str | None) -> PodWatcher:
        """The running watcher for ``namespace`` (None: all namespaces), started and listed once on first use."""
        lock = self._starting.setdefault(namespace, asyncio.Lock())
        async with lock:
            watcher = self.watchers.get(namespace)
            if watcher is None:
                watcher = PodWatcher(
                    self.client, namespace, self.label_selector,
                    lambda key, pod, deleted: self._route(key, pod, deleted), self.watch_timeout,
                )  # fmt: skip
                self.watchers[namespace] = watcher
            await watcher.start()
        return watcher

    def cached(self, key: str) -> dict[str, Any] | None:
        """The latest view of pod ``namespace/name`` from any watcher (no request)."""
        for watcher in self.watchers.values():
            if key in watcher.pods:
                return watcher.pods[key]
        return None

    def subscribe(self, key: str, callback: PodCallback) -> Callable[[], None]:
        """Route changes of pod ``namespace/name`` to ``callback``; returns the unsubscribe function."""
        self._routes.setdefault(key, []).append(callback)

        def unsubscribe() -> None:
            callbacks = self._routes.get(key, [])
            with contextlib.suppress(ValueError):
                callbacks.remove(callback)
            if not callbacks:
                self._routes.pop(key, None)

        return unsubscribe

    def _route(self, key: str, pod: dict[str, Any] | None, deleted: bool) -> None:
        for callback in list(self._routes.get(key, ())):
            try:
                callback(pod or {}, deleted)
            except Exception:  # one kernel's bug must not stop the watch for the others
                log.exception("pod update for %s failed", key)

    async def close(self) -> None:
        for watcher in list(self.watchers.values()):
            await watcher.close()
        self.watchers.clear()
        await self.client.close()


_HUBS: PerLoop[KubeHub] = PerLoop()


def shared_hub(kubeconfig: str = "", context: str = "", watch_timeout: float = 300.0) -> KubeHub:
    """This process's hub for the cluster named by ``kubeconfig`` and ``context`` (in the running event loop)."""
    return _HUBS.get((kubeconfig, context), lambda: KubeHub(KubeClient(kubeconfig, context), watch_timeout))


async def close_hubs() -> None:
    """Close the hubs of the running loop (a server's shutdown, the end of a test)."""
    for hub in _HUBS.pop_running():
        await hub.close()
