"""The Kubernetes API as this adapter uses it: a dozen calls on the async client, returning plain dicts.

Every call goes through ``kubernetes_asyncio`` (the official generated client, async), so nothing here blocks the
event loop. Responses are read as raw JSON (``_preload_content=False``) rather than deserialized into models: the
adapter works on dicts everywhere (templates, the watch cache, the emulator in the tests), and a pod list of a few
hundred kernels parses in milliseconds instead of seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from ...core.errors import BackendUnavailable, ConfigurationError

log = logging.getLogger("gateway_provisioners.kubernetes")

EXTRA_HINT = "install the Kubernetes extra: pip install 'gateway_provisioners[k8s]'"


def _sdk() -> Any:
    try:
        import kubernetes_asyncio
        import kubernetes_asyncio.client
        import kubernetes_asyncio.config
    except ImportError:
        raise ConfigurationError(f"the Kubernetes provisioner needs kubernetes_asyncio: {EXTRA_HINT}") from None
    return kubernetes_asyncio


class KubeApiError(Exception):
    """A non-2xx answer from the API server, with its status code and message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status, self.reason, self.message = status, reason, message
        super().__init__(f"{status} {reason}: {message}")


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (410 Gone): the caller must list again."""


class KubeClient:
    """One API client per backend (one connection pool), created lazily in the running event loop.

    Parameters
    ----------
    kubeconfig:
        Path of a kubeconfig file; empty means in-cluster configuration when running in a pod, else ``~/.kube/config``.
    context:
        The kubeconfig context to use (default: its current context).
    max_connections:
        Size of the connection pool: bounds the concurrent requests of this server process.
    request_timeout:
        Seconds allowed for one ordinary request (watches have their own, longer timeout).
    """

    def __init__(
        self, kubeconfig: str = "", context: str = "", max_connections: int = 32, request_timeout: float = 30.0
    ) -> None:
        self.kubeconfig, self.context = kubeconfig, context
        self.max_connections, self.request_timeout = max_connections, request_timeout
        self._api: Any = None
        self._lock = asyncio.Lock()

    async def _client(self) -> Any:
        if self._api is not None:
            return self._api
        async with self._lock:
            if self._api is None:
                sdk = _sdk()
                cfg = sdk.client.Configuration()
                try:
                    if not self.kubeconfig and _in_cluster():
                        sdk.config.load_incluster_config(client_configuration=cfg)
                    else:
                        await sdk.config.load_kube_config(
                            config_file=self.kubeconfig or None, context=self.context or None, client_configuration=cfg
                        )
                except Exception as exc:
                    raise ConfigurationError(
                        f"cannot load the Kubernetes configuration ({exc}): set kubeconfig (GP_KUBECONFIG) "
                        "or run the server in a pod with a service account"
                    ) from None
                cfg.connection_pool_maxsize = self.max_connections
                self._api = sdk.client.ApiClient(cfg)
        return self._api

    async def core(self) -> Any:
        return _sdk().client.CoreV1Api(await self._client())

    async def rbac(self) -> Any:
        return _sdk().client.RbacAuthorizationV1Api(await self._client())

    async def custom(self) -> Any:
        return _sdk().client.CustomObjectsApi(await self._client())

    async def close(self) -> None:
        if self._api is not None:
            api, self._api = self._api, None
            await api.close()

    # --- plumbing ---------------------------------------------------------------------------------------------------

    async def _json(self, call: Any, *args: Any, text: bool = False, **kwargs: Any) -> Any:
        """Await one generated-client call and return its JSON (or text) body; raise :class:`KubeApiError`."""
        kwargs.setdefault("_request_timeout", self.request_timeout)
        try:
            response = await call(*args, _preload_content=False, **kwargs)
        except Exception as exc:  # aiohttp's connection errors
            raise BackendUnavailable(f"the Kubernetes API is unreachable: {exc}") from exc
        try:
            body = await response.read()
        finally:
            response.release()
        if not 200 <= response.status < 300:
            try:
                status = json.loads(body)
            except ValueError:
                status = {}
            raise KubeApiError(response.status, status.get("reason", ""), status.get("message", body[:200].decode()))
        if text:
            return body.decode("utf-8", "replace")
        return json.loads(body) if body else {}

    # --- pods -------------------------------------------------------------------------------------------------------

    async def create_pod(self, namespace: str, pod: dict[str, Any]) -> dict[str, Any]:
        return await self._json((await self.core()).create_namespaced_pod, namespace, pod)

    async def delete_pod(self, namespace: str, name: str, grace: float = 0) -> None:
        await self._ignore_404(
            (await self.core()).delete_namespaced_pod, name, namespace, grace_period_seconds=int(grace)
        )

    async def list_pods(self, namespace: str | None, label_selector: str) -> tuple[list[dict[str, Any]], str]:
        """(pods, resourceVersion) of one list, across all namespaces when ``namespace`` is None."""
        core = await self.core()
        if namespace is None:
            data = await self._json(core.list_pod_for_all_namespaces, label_selector=label_selector)
        else:
            data = await self._json(core.list_namespaced_pod, namespace, label_selector=label_selector)
        return data.get("items") or [], str((data.get("metadata") or {}).get("resourceVersion") or "")

    async def watch_pods(
        self, namespace: str | None, label_selector: str, resource_version: str, timeout: float
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Yield (type, pod) from one watch request; ends when the server ends it. 410 → :class:`WatchExpired`."""
        core = await self.core()
        kwargs: dict[str, Any] = dict(
            label_selector=label_selector, watch=True, resource_version=resource_version,
            timeout_seconds=int(timeout), allow_watch_bookmarks=True, _preload_content=False,
            # No total timeout: a quiet watch is healthy. The server ends it after timeout_seconds.
            _request_timeout=_watch_timeout(timeout),
        )  # fmt: skip
        if namespace is None:
            response = await core.list_pod_for_all_namespaces(**kwargs)
        else:
            response = await core.list_namespaced_pod(namespace, **kwargs)
        try:
            if response.status == 410:
                raise WatchExpired(f"resourceVersion {resource_version} expired")
            if not 200 <= response.status < 300:
                body = await response.read()
                raise KubeApiError(response.status, "", body[:200].decode("utf-8", "replace"))
            while line := await response.content.readline():
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    if obj.get("code") == 410:
                        raise WatchExpired(obj.get("message", "resourceVersion expired"))
                    raise KubeApiError(int(obj.get("code") or 500), obj.get("reason", ""), obj.get("message", ""))
                yield event["type"], obj
        finally:
            response.release()
            response.close()

    async def pod_log(self, namespace: str, name: str, lines: int) -> list[str]:
        text = await self._json(
            (await self.core()).read_namespaced_pod_log, name, namespace, tail_lines=lines, text=True
        )
        return [line for line in text.splitlines() if line.strip()][-lines:]

    async def pod_events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        data = await self._json(
            (await self.core()).list_namespaced_event,
            namespace,
            field_selector=f"involvedObject.kind=Pod,involvedObject.name={name}",
        )
        return data.get("items") or []

    # --- secrets, namespaces, RBAC ----------------------------------------------------------------------------------

    async def create_secret(self, namespace: str, secret: dict[str, Any]) -> dict[str, Any]:
        return await self._json((await self.core()).create_namespaced_secret, namespace, secret)

    async def create_namespace(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """Create a namespace; None when it exists already."""
        try:
            return await self._json((await self.core()).create_namespace, body)
        except KubeApiError as exc:
            if exc.status == 409:
                return None
            raise

    async def list_namespaces(self, label_selector: str) -> list[dict[str, Any]]:
        data = await self._json((await self.core()).list_namespace, label_selector=label_selector)
        return data.get("items") or []

    async def delete_namespace(self, name: str) -> None:
        await self._ignore_404((await self.core()).delete_namespace, name)

    async def create_role(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._json((await self.rbac()).create_namespaced_role, namespace, body)

    async def create_role_binding(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._json((await self.rbac()).create_namespaced_role_binding, namespace, body)

    # --- custom resources (``kind`` is (group, version, plural)) -----------------------------------------------------

    async def create_custom(self, kind: tuple[str, str, str], namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._json((await self.custom()).create_namespaced_custom_object, *kind[:2], namespace, kind[2],
                                body)  # fmt: skip

    async def get_custom(self, kind: tuple[str, str, str], namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return await self._json((await self.custom()).get_namespaced_custom_object, *kind[:2], namespace, kind[2],
                                    name)  # fmt: skip
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def delete_custom(self, kind: tuple[str, str, str], namespace: str, name: str) -> None:
        await self._ignore_404((await self.custom()).delete_namespaced_custom_object, *kind[:2], namespace, kind[2],
                               name, propagation_policy="Background")  # fmt: skip

    async def list_custom(
        self, kind: tuple[str, str, str], namespace: str | None, label_selector: str
    ) -> list[dict[str, Any]]:
        """The labelled objects of ``kind`` in ``namespace`` (None: in all namespaces)."""
        custom = await self.custom()
        if namespace is None:
            data = await self._json(custom.list_cluster_custom_object, *kind, label_selector=label_selector)
        else:
            data = await self._json(custom.list_namespaced_custom_object, *kind[:2], namespace, kind[2],
                                    label_selector=label_selector)  # fmt: skip
        return data.get("items") or []

    async def _ignore_404(self, call: Any, *args: Any, **kwargs: Any) -> None:
        try:
            await self._json(call, *args, **kwargs)
        except KubeApiError as exc:
            if exc.status != 404:
                raise


def _in_cluster() -> bool:
    import os

    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(
        "/var/run/secrets/kubernetes.io/serviceaccount/token"
    )


def _watch_timeout(timeout: float) -> Any:
    import aiohttp

    # The read may stay quiet up to the server-side timeout; allow some slack before calling the stream dead.
    return aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout + 30)
