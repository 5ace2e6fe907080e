"""An in-process Kubernetes API emulator: just enough of the core/v1 and rbac/v1 HTTP contract for the real client.

Why our own instead of kmock 0.8 (../shared/reference/test-infra.md §1): the provisioner's correctness hinges on watch
semantics — resume from a ``resourceVersion``, ``410 Gone`` once history is compacted, a dropped stream — and on
counting every request. kmock needs a private-API shim for watches and has no history or 410, so the parts we most
need to test would be the shim's. This emulator is an aiohttp app served on 127.0.0.1 in the test's own event loop
(the provisioner uses the async client, so there is no deadlock), and it keeps:

- objects by (resource, namespace, name), each with uid, resourceVersion (one global counter, as etcd's) and
  creationTimestamp; 409 on a duplicate create, 404 on a missing object or namespace;
- an event history for watches: ``resourceVersion=N`` replays every change after N, then streams live ones;
  :meth:`compact` forgets history so older versions get ``410 Expired``; :meth:`drop_watches` cuts every stream;
- label selectors (``k=v``, ``k!=v``, ``k``, ``!k``, ``k in (..)``, ``k notin (..)``) and simple field selectors;
- ownerReferences garbage collection (a deleted owner takes its dependents along), namespace deletion cascading;
- a request log (:attr:`requests`) — every HTTP request the client made, so tests and the benchmark count them.

The test plays the kubelet by changing pod status through :meth:`patch_status` / :meth:`add_event` (not over HTTP,
so only the provisioner's own traffic is counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import itertools
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

KINDS = {
    "pods": "Pod",
    "secrets": "Secret",
    "events": "Event",
    "namespaces": "Namespace",
    "serviceaccounts": "ServiceAccount",
    "roles": "Role",
    "rolebindings": "RoleBinding",
}
RBAC = "rbac.authorization.k8s.io/v1"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    watch: bool = False

    def __str__(self) -> str:
        return f"{self.method} {self.path}{' (watch)' if self.watch else ''}"


@dataclass
class _Change:
    rv: int
    resource: str
    kind: str  # ADDED / MODIFIED / DELETED
    obj: dict[str, Any]


@dataclass
class _Watcher:
    resource: str
    namespace: str | None
    params: dict[str, str]
    queue: asyncio.Queue[_Change | None] = field(default_factory=asyncio.Queue)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def label_match(labels: dict[str, str] | None, selector: str | None) -> bool:
    labels = labels or {}
    for term in filter(None, (t.strip() for t in re.split(r",(?![^()]*\))", selector or ""))):
        if m := re.fullmatch(r"([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)", term):
            values = {v.strip() for v in m[3].split(",")}
            if (m[2] == "in") != (labels.get(m[1]) in values):
                return False
        elif m := re.fullmatch(r"([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)", term):
            if (m[2] == "!=") == (labels.get(m[1]) == m[3]):
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def field_match(obj: dict[str, Any], selector: str | None) -> bool:
    for term in filter(None, (selector or "").split(",")):
        m = re.fullmatch(r"([\w.]+)\s*(==|=|!=)\s*(.*)", term.strip())
        if not m:
            return False
        current: Any = obj
        for part in m[1].split("."):
            current = current.get(part) if isinstance(current, dict) else None
        if (m[2] == "!=") == (str(current) == m[3]):
            return False
    return True


def merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """JSON merge patch (RFC 7386): what the client's dict patches mean for the fields the provisioner touches."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


class KubeEmulator:
    """The emulated API server. ``async with KubeEmulator() as kube:`` serves it; ``kube.url`` is its address."""

    def __init__(self, namespaces: tuple[str, ...] = ("default",)) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.history: list[_Change] = []
        self.compacted_at = 0  # watches from a resourceVersion below this get 410
        self.requests: list[Request] = []
        self.listeners: list[Callable[[str, str, dict[str, Any]], None]] = []
        self.logs: dict[tuple[str, str], list[str]] = {}
        self._rv = itertools.count(1)
        self._current_rv = 0
        self._watchers: list[_Watcher] = []
        self._streams: set[web.StreamResponse] = set()
        self._runner: web.AppRunner | None = None
        self.url = ""
        for name in namespaces:
            self._store("namespaces", "", {"metadata": {"name": name}, "status": {"phase": "Active"}})

    # --- serving ----------------------------------------------------------------------------------------------------

    async def __aenter__(self) -> KubeEmulator:
        app = web.Application(middlewares=[self._record])
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()

    def kubeconfig(self, path: str) -> str:
        """Write a kubeconfig pointing at this emulator (as an operator's would point at a cluster)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "emulator-token"}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tester"}}],
            "current-context": "emulator",
        }
        with open(path, "w") as handle:
            json.dump(config, handle)
        return path

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        query = dict(request.query)
        watching = str(query.get("watch", "")).lower() in ("true", "1")
        self.requests.append(Request(request.method, request.path, query, watching))
        return await handler(request)

    # --- test controls ----------------------------------------------------------------------------------------------

    def mark(self) -> int:
        return len(self.requests)

    def requests_since(self, mark: int) -> list[Request]:
        return self.requests[mark:]

    def compact(self) -> None:
        """Forget the change history, as etcd compaction does: older resourceVersions now get 410 Gone."""
        self.history.clear()
        self.compacted_at = self._current_rv + 1

    def drop_watches(self) -> None:
        """Cut every open watch stream (an API server restart, a load balancer's idle timeout)."""
        for watcher in self._watchers:
            watcher.queue.put_nowait(None)

    @property
    def open_watches(self) -> int:
        return len(self._watchers)

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((resource, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list(self, resource: str, namespace: str | None = None, label_selector: str = "") -> list[dict[str, Any]]:
        return [
            copy.deepcopy(obj)
            for (res, ns, _), obj in self.objects.items()
            if res == resource and (namespace is None or ns == namespace)
            and label_match(obj["metadata"].get("labels"), label_selector)
        ]  # fmt: skip

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any] | None:
        """The kubelet's status update (merge patch of ``status``)."""
        obj = self.objects.get(("pods", namespace, name))
        if obj is None:
            return None
        merge(obj.setdefault("status", {}), status)
        self._changed("pods", "MODIFIED", obj)
        return copy.deepcopy(obj)

    def add_event(self, namespace: str, pod: str, reason: str, message: str, kind: str = "Normal") -> None:
        """An event about a pod, as the scheduler and kubelet record them."""
        self._store(
            "events",
            namespace,
            {
                "metadata": {"name": f"{pod}.{uuid.uuid4().hex[:12]}", "namespace": namespace},
                "involvedObject": {"kind": "Pod", "name": pod, "namespace": namespace},
                "reason": reason,
                "message": message,
                "type": kind,
                "lastTimestamp": _now(),
            },
        )

    def delete_object(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.pop((resource, namespace, name), None)
        if obj is None:
            return None
        self._changed(resource, "DELETED", obj)
        uid = obj["metadata"]["uid"]
        # Garbage collection: dependents owned by the deleted object go too (background propagation).
        for key, other in list(self.objects.items()):
            if any(ref.get("uid") == uid for ref in other["metadata"].get("ownerReferences") or []):
                self.delete_object(*key)
        if resource == "namespaces":
            for key in [k for k in self.objects if k[1] == name]:
                self.delete_object(*key)
        return obj

    # --- storage ----------------------------------------------------------------------------------------------------

    def _store(self, resource: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now())
        if namespace:
            meta["namespace"] = namespace
        body.setdefault("kind", KINDS.get(resource, resource))
        self.objects[(resource, namespace, meta["name"])] = body
        self._changed(resource, "ADDED", body)
        return body

    def _changed(self, resource: str, kind: str, obj: dict[str, Any]) -> None:
        self._current_rv = next(self._rv)
        obj["metadata"]["resourceVersion"] = str(self._current_rv)
        change = _Change(self._current_rv, resource, kind, copy.deepcopy(obj))
        self.history.append(change)
        for watcher in self._watchers:
            if watcher.resource == resource:
                watcher.queue.put_nowait(change)
        for listener in list(self.listeners):
            listener(resource, kind, change.obj)

    # --- HTTP -------------------------------------------------------------------------------------------------------

    @staticmethod
    def _status(code: int, reason: str, message: str) -> web.Response:
        body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message,
                "code": code}  # fmt: skip
        return web.json_response(body, status=code)

    def _route(self, path: str) -> tuple[str, str | None, str | None, str | None] | None:
        """(resource, namespace, name, subresource) for the paths this emulator serves."""
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "v1"]:
            rest = parts[2:]
        elif parts[:3] == ["apis", *RBAC.split("/")]:
            rest = parts[3:]
        else:
            return None
        if rest[:1] == ["namespaces"] and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
            return rest[0], namespace, rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None
        if rest[:1] == ["namespaces"]:
            return "namespaces", "", rest[1] if len(rest) > 1 else None, None
        if len(rest) == 1:
            return rest[0], None, None, None  # all namespaces
        return None

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        route = self._route(request.path)
        if route is None or route[0] not in KINDS:
            return self._status(404, "NotFound", f"the server could not find the requested resource {request.path}")
        resource, namespace, name, sub = route
        method = request.method
        if resource != "namespaces" and namespace and ("namespaces", "", namespace) not in self.objects:
            if method == "POST":
                return self._status(404, "NotFound", f'namespaces "{namespace}" not found')
        if name is None:
            if method == "GET":
                if str(request.query.get("watch", "")).lower() in ("true", "1"):
                    return await self._watch(request, resource, namespace)
                return self._list(request, resource, namespace)
            if method == "POST":
                body = await request.json()
                body_name = (body.get("metadata") or {}).get("name")
                key = (resource, namespace or "", body_name)
                if body_name and key in self.objects:
                    return self._status(409, "AlreadyExists", f'{resource} "{body_name}" already exists')
                return web.json_response(self._store(resource, namespace or "", body), status=201)
            return self._status(405, "MethodNotAllowed", method)
        key = (resource, namespace or "", name)
        obj = self.objects.get(key)
        if obj is None:
            return self._status(404, "NotFound", f'{resource} "{name}" not found')
        if sub == "log" and method == "GET":
            lines = self.logs.get((namespace or "", name), [])
            tail = int(request.query.get("tailLines", 0) or 0)
            return web.Response(text="".join(f"{line}\n" for line in (lines[-tail:] if tail else lines)))
        if method == "GET":
            return web.json_response(obj)
        if method == "PATCH":
            merge(obj, await request.json())
            self._changed(resource, "MODIFIED", obj)
            return web.json_response(obj)
        if method == "DELETE":
            return web.json_response(self.delete_object(*key))
        return self._status(405, "MethodNotAllowed", method)

    def _selected(self, obj: dict[str, Any], namespace: str | None, query: Any) -> bool:
        meta = obj["metadata"]
        return (
            (not namespace or meta.get("namespace") == namespace)
            and label_match(meta.get("labels"), query.get("labelSelector"))
            and field_match(obj, query.get("fieldSelector"))
        )

    def _list(self, request: web.Request, resource: str, namespace: str | None) -> web.Response:
        items = [copy.deepcopy(obj) for (res, _, _), obj in self.objects.items()
                 if res == resource and self._selected(obj, namespace, request.query)]  # fmt: skip
        kind = KINDS[resource] + "List"
        return web.json_response(
            {"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": str(self._current_rv)}, "items": items}
        )

    async def _watch(self, request: web.Request, resource: str, namespace: str | None) -> web.StreamResponse:
        query = request.query
        since = int(query.get("resourceVersion") or 0)
        timeout = float(query.get("timeoutSeconds") or 0) or None
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)

        async def send(kind: str, obj: dict[str, Any]) -> None:
            await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

        if since and since < self.compacted_at:
            await send("ERROR", {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410,
                                 "reason": "Expired", "message": f"too old resource version: {since}"})  # fmt: skip
            return response
        watcher = _Watcher(resource, namespace, dict(query))
        self._watchers.append(watcher)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            # One consistent snapshot: what is sent first, and the version after which live changes count.
            if not since:  # no version: the current state first, as synthetic ADDED events
                first = [("ADDED", copy.deepcopy(obj)) for (res, _, _), obj in self.objects.items()
                         if res == resource and self._selected(obj, namespace, query)]  # fmt: skip
            else:
                changes = [c for c in self.history if c.rv > since and c.resource == resource]
                first = [(c.kind, c.obj) for c in changes if self._selected(c.obj, namespace, query)]
            last = max(since, self._current_rv)
            for kind, obj in first:
                await send(kind, obj)
            while True:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    change = await asyncio.wait_for(watcher.queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
                if change is None:  # dropped on purpose: cut the connection without a clean end
                    with contextlib.suppress(Exception):
                        request.transport.close()  # type: ignore[union-attr]
                    break
                if change.rv <= last or not self._selected(change.obj, namespace, query):
                    continue
                await send(change.kind, change.obj)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._watchers.remove(watcher)
        return response
