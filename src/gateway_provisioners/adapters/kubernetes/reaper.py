"""The reaper: remove kernel pods (and per-kernel namespaces) whose kernel no longer exists.

A server that crashed, or was killed while a launch was in flight, leaves pods behind (and, for custom-resource
kernels, the resources that made them). Every pod this library creates carries the
``app.kubernetes.io/managed-by=gateway-provisioners`` label and its kernel id; the reaper lists them (one request per
resource kind) and deletes those whose kernel id is not among the live kernels, once they are older than ``min_age``
(so a launch in progress on another server is never touched).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Collection, Iterable
from typing import Any

from .backend import owned_entry
from .client import KubeClient
from .hub import COMPONENT, KERNEL_ID_LABEL, LABEL_SELECTOR, MANAGED_BY, MANAGED_BY_VALUE

log = logging.getLogger("gateway_provisioners.kubernetes")


def _age(created: str | None, now: datetime.datetime) -> float:
    if not created:
        return float("inf")
    try:
        when = datetime.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return float("inf")
    return (now - when).total_seconds()


async def reap_orphans(
    client: KubeClient,
    alive: Collection[str] | Callable[[str], bool],
    *,
    namespace: str | None = None,
    min_age: float = 300.0,
    dry_run: bool = False,
    resources: Iterable[tuple[str, str, str]] = (),
) -> list[dict[str, Any]]:
    """Delete labelled kernel pods and namespaces whose kernel id is not ``alive``; returns what was (or would be)
    removed.

    Parameters
    ----------
    alive:
        The live kernel ids, or a predicate on a kernel id.
    namespace:
        Only this namespace's pods (None: all namespaces, which needs cluster-wide list permission).
    min_age:
        Seconds a pod must have existed before it may be reaped.
    dry_run:
        Report without deleting.
    resources:
        Custom resources (group, version, plural) of custom-resource kernels: labelled ones of vanished kernels are
        deleted too (the pods their operator made are, like any kernel pod).
    """
    is_alive = alive if callable(alive) else (lambda kernel_id, ids=set(alive): kernel_id in ids)
    now = datetime.datetime.now(datetime.timezone.utc)
    removed: list[dict[str, Any]] = []
    pods, _ = await client.list_pods(namespace, LABEL_SELECTOR)
    # A warm pool's pods carry ids no server lists (claimed ones keep theirs): spared while they run, removed like any
    # other once their agent has ended (its watchdog ends it when the server that pooled it is gone).
    pooled_running = set()
    for pod in pods:
        entry = owned_entry(pod)
        if entry.pop("pooled") and entry["phase"] in ("Pending", "Running"):
            pooled_running.add(entry["kernel_id"])
            continue
        if not entry["kernel_id"] or is_alive(entry["kernel_id"]) or _age(entry["created"], now) < min_age:
            continue
        removed.append({"kind": "Pod", **entry})
        if not dry_run:
            log.info("reaping pod %s/%s of vanished kernel %s", entry["namespace"], entry["pod"], entry["kernel_id"])
            await client.delete_pod(entry["namespace"], entry["pod"], 0)
    for kind in resources:
        for obj in await client.list_custom(kind, namespace, LABEL_SELECTOR):
            meta = obj.get("metadata") or {}
            kernel_id = (meta.get("labels") or {}).get(KERNEL_ID_LABEL, "")
            if not kernel_id or is_alive(kernel_id) or kernel_id in pooled_running:
                continue
            if _age(meta.get("creationTimestamp"), now) < min_age:
                continue
            removed.append({"kind": obj.get("kind", kind[2]), "kernel_id": kernel_id,
                            "namespace": meta.get("namespace"), "name": meta.get("name")})  # fmt: skip
            if not dry_run:
                log.info("reaping %s %s/%s of vanished kernel %s", obj.get("kind"), meta.get("namespace"),
                         meta.get("name"), kernel_id)  # fmt: skip
                await client.delete_custom(kind, meta["namespace"], meta["name"])
    if namespace is None:
        selector = f"{MANAGED_BY}={MANAGED_BY_VALUE},{COMPONENT}=kernel-namespace"
        for ns in await client.list_namespaces(selector):
            meta = ns.get("metadata") or {}
            kernel_id = (meta.get("labels") or {}).get(KERNEL_ID_LABEL, "")
            if not kernel_id or is_alive(kernel_id) or kernel_id in pooled_running:
                continue
            if _age(meta.get("creationTimestamp"), now) < min_age:
                continue
            removed.append({"kind": "Namespace", "kernel_id": kernel_id, "namespace": meta.get("name")})
            if not dry_run:
                log.info("reaping namespace %s of vanished kernel %s", meta.get("name"), kernel_id)
                await client.delete_namespace(meta["name"])
    return removed
