"""The Kubernetes backend: a kernel is a pod running the agent; the pod's IP comes from the shared watch.

A launch makes (at most) these requests: in a per-kernel namespace, create the Namespace, Role and RoleBinding; then
create the Pod, and the Secret holding the launch token — owned by the pod (ownerReferences), so that deleting the pod
deletes the token too. Everything after that — scheduling, image pull, the pod IP, a failure — arrives through the
hub's shared watch; a running kernel costs no request at all. Shutdown deletes the pod (and with it the Secret), and a
per-kernel namespace unless the kernel is restarting.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from ...core.backend import Backend, BackendHandle, Observation, PlatformState
from ...core.errors import LaunchError
from ...core.handshake import encode_token
from ...core.launch import ConnectionMode, LaunchSpec
from ...core.tasks import BackgroundTasks
from .client import KubeApiError
from .hub import COMPONENT, KERNEL_ID_LABEL, MANAGED_BY, MANAGED_BY_VALUE, POOLED_LABEL, KubeHub
from .pod_template import PARAMS_KEY, TOKEN_DIR, TOKEN_KEY, deep_merge, enforce_security, load_template, render_pod
from .request import PodRequest, PodSettings, label_value, pod_request
from .status import event_lines, is_unschedulable, observe

log = logging.getLogger("gateway_provisioners.kubernetes")


@dataclass
class PodPlan:
    namespace: str
    pod: dict[str, Any]
    secret_name: str
    owns_namespace: bool
    params: dict[str, Any]  # the agent's launch parameters without the token; they travel in the Secret


class KubernetesBackend(Backend):
    """Kernels as pods. One instance per provisioner; the client and the watches are the hub's, shared per process.

    Parameters
    ----------
    hub:
        The process's shared client and watchers (:func:`~.hub.shared_hub`).
    settings:
        The operator's pod settings for this kernel spec.
    """

    name: ClassVar[str] = "kubernetes"
    kernel_ends_with_resource: ClassVar[bool] = True  # the pod holds the agent
    modes: ClassVar[tuple[ConnectionMode, ...]] = (ConnectionMode.ASSIGNED, ConnectionMode.CALLBACK)

    def __init__(self, hub: KubeHub, settings: PodSettings | None = None) -> None:
        self.hub = hub
        self.settings = settings or PodSettings()
        self._unsubscribe: dict[str, Callable[[], None]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._unschedulable_since: dict[str, float] = {}
        self._reported: set[str] = set()
        self._tasks = BackgroundTasks(log, "Kubernetes backend task")

    # --- building the pod -------------------------------------------------------------------------------------------

    def plan(self, spec: LaunchSpec) -> PodPlan:
        """Build the pod for ``spec`` (no request yet) from its checked :class:`PodRequest`.

        The request is decided before the backend sees the launch (the provisioner's ``pre_launch``); a launch that
        comes without one (an embedder calling the backend directly) is checked here, by the same function.
        """
        plan, context = self.launch_context(spec)
        pod = render_pod(self.settings.template or load_template(), context)
        if self.settings.extra_pod_config:
            pod = deep_merge(pod, self.settings.extra_pod_config)
        pod.setdefault("metadata", {}).update(name=context["pod_name"], namespace=plan.namespace)
        labels = context["labels"]
        pod["metadata"].setdefault("labels", {}).update({k: v for k, v in labels.items() if k != "kernel_username"})
        plan.pod = pod
        return plan

    def launch_context(self, spec: LaunchSpec) -> tuple[PodPlan, dict[str, Any]]:
        """The plan of ``spec`` without its pod, and the variables a template renders it with (docs/kubernetes.md)."""
        s, values = self.settings, spec.values
        request = spec.request if isinstance(spec.request, PodRequest) else pod_request(spec, s)
        namespace, owns, pod_name = request.namespace, request.owns_namespace, request.pod_name
        volumes, mounts = list(request.volumes), list(request.volume_mounts)
        secret_name = f"{pod_name}-launch"[:253]
        volumes.append({"name": "gp-launch", "secret": {"secretName": secret_name, "defaultMode": 0o400}})
        mounts.append({"name": "gp-launch", "mountPath": TOKEN_DIR, "readOnly": True})

        params = spec.agent_params()
        params.pop("token", None)  # the token travels in the Secret, never in the pod spec
        kernel_env = {k: v for k, v in params.get("env", {}).items() if not k.startswith("KERNEL_VOLUME")}
        params["env"] = {k: v for k, v in kernel_env.items() if k not in ("KERNEL_NODE_SELECTOR", "KERNEL_TOLERATIONS")}
        token_file = f"{TOKEN_DIR}/{TOKEN_KEY}"
        params_file = f"{TOKEN_DIR}/{PARAMS_KEY}"
        # The parameters hold the kernel's HMAC key, so they go in the Secret with the token, not in the pod spec
        # (which anyone allowed to read pods can read).
        labels = {**s.labels, MANAGED_BY: MANAGED_BY_VALUE, COMPONENT: "kernel",
                  KERNEL_ID_LABEL: label_value(spec.kernel_id)}  # fmt: skip
        if spec.username and label_value(spec.username):
            labels["kernel_username"] = label_value(spec.username)
        if spec.pooled:
            labels[POOLED_LABEL] = "true"
        annotations = {**s.annotations, "gateway-provisioners/kernel-id": spec.kernel_id,
                       "gateway-provisioners/username": spec.username,
                       "gateway-provisioners/kernel-name": spec.kernel_name}  # fmt: skip
        agent_args = ["--params", params_file, "--token-file", token_file, *s.agent_args]
        context = {
            "pod_name": pod_name, "namespace": namespace, "labels": labels, "annotations": annotations,
            "kernel_id": spec.kernel_id, "kernel_username": spec.username, "kernel_name": spec.kernel_name,
            "language": spec.language, "image": request.image, "image_pull_policy": s.image_pull_policy,
            "service_account": request.service_account,
            "automount_service_account_token": owns or s.mount_service_account_token,
            "node_selector": request.node_selector, "tolerations": request.tolerations,
            "uid": request.uid, "gid": request.gid,
            "command": [s.python, s.agent_path, *agent_args], "agent_path": s.agent_path, "agent_args": agent_args,
            "env": [], "working_dir": spec.cwd or "", "resources": request.resources,
            "volumes": volumes, "volume_mounts": mounts, "secret_name": secret_name, "token_file": token_file,
            "values": {k: v for k, v in values.items()},
        }  # fmt: skip
        return PodPlan(namespace, {}, secret_name, owns, params), context

    # --- the port ---------------------------------------------------------------------------------------------------

    async def submit(self, spec: LaunchSpec) -> BackendHandle:
        plan = self.plan(spec)
        if self.settings.modify_pod_hook is not None:
            changed = await self.settings.modify_pod_hook(plan.pod, spec)
            plan.pod = changed if changed is not None else plan.pod
        enforce_security(plan.pod, self.settings.prohibited_uids, self.settings.prohibited_gids)
        client, ns, name = self.hub.client, plan.namespace, plan.pod["metadata"]["name"]
        if plan.owns_namespace:
            await self._create_namespace(ns, spec, plan.pod)
        await self.hub.watcher(None if plan.owns_namespace else ns)
        handle = BackendHandle(
            spec.kernel_id,
            data={"namespace": ns, "pod": name, "secret": plan.secret_name, "owns_namespace": plan.owns_namespace},
        )
        self._follow(handle)
        try:
            created = await client.create_pod(ns, plan.pod)
        except KubeApiError as exc:
            self._forget(handle)
            if exc.status == 409:
                raise LaunchError(
                    f"pod {ns}/{name} already exists", hint="Use another KERNEL_POD_NAME, or remove the old pod"
                ) from None
            raise LaunchError(f"cannot create pod {ns}/{name}: {exc}") from None
        handle.data["uid"] = created["metadata"]["uid"]
        # Owned by the pod: the garbage collector deletes the token with the pod, whoever deletes the pod.
        owner = {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": handle.data["uid"], "controller": True}
        secret = launch_secret(plan, dict(plan.pod["metadata"]["labels"]), owner, spec.token)
        try:
            await client.create_secret(ns, secret)
        except Exception as exc:
            await self.terminate(handle)
            raise LaunchError(f"cannot create the launch Secret {ns}/{plan.secret_name}: {exc}") from None
        log.info("kernel %s [kubernetes] pod %s/%s created", spec.kernel_id, ns, name)
        cached = self.hub.cached(f"{ns}/{name}")
        if cached is not None:
            self._on_pod(handle, cached, False)
        return handle

    async def _create_namespace(self, ns: str, spec: LaunchSpec, pod: dict[str, Any]) -> None:
        client = self.hub.client
        labels = {
            MANAGED_BY: MANAGED_BY_VALUE,
            COMPONENT: "kernel-namespace",
            KERNEL_ID_LABEL: label_value(spec.kernel_id),
        }
        created = await client.create_namespace({"apiVersion": "v1", "kind": "Namespace",
                                                 "metadata": {"name": ns, "labels": labels}})  # fmt: skip
        if created is None or not self.settings.kernel_role_rules:
            return  # kept from before a restart, or the kernel needs no API access
        meta = {"name": "kernel", "namespace": ns, "labels": labels}
        await client.create_role(ns, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
                                      "rules": [dict(r) for r in self.settings.kernel_role_rules]})  # fmt: skip
        account = pod["spec"].get("serviceAccountName") or "default"
        await client.create_role_binding(ns, {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "kernel"},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns}],
        })  # fmt: skip

    def _follow(self, handle: BackendHandle) -> None:
        key = f"{handle.data['namespace']}/{handle.data['pod']}"
        self._forget(handle)
        self._unsubscribe[handle.kernel_id] = self.hub.subscribe(
            key, lambda pod, deleted: self._on_pod(handle, pod, deleted)
        )

    def _forget(self, handle: BackendHandle) -> None:
        unsubscribe = self._unsubscribe.pop(handle.kernel_id, None)
        if unsubscribe is not None:
            unsubscribe()
        timer = self._timers.pop(handle.kernel_id, None)
        if timer is not None:
            timer.cancel()
        self._unschedulable_since.pop(handle.kernel_id, None)

    def _on_pod(self, handle: BackendHandle, pod: dict[str, Any], deleted: bool) -> None:
        """A change of this kernel's pod, from the shared watch (in the event loop, no request)."""
        uid = handle.data.get("uid")
        pod_uid = (pod.get("metadata") or {}).get("uid")
        if uid is None and deleted:
            return  # an earlier pod of the same name going away while ours is being created
        if uid is not None and pod_uid and pod_uid != uid:
            return
        kernel_id = handle.kernel_id
        now = time.monotonic()
        if not deleted and is_unschedulable(pod):
            since = self._unschedulable_since.setdefault(kernel_id, now)
        else:
            self._unschedulable_since.pop(kernel_id, None)
            since = now
        reading = observe(None if deleted else pod, now - since, self.settings.unschedulable_grace)
        timer = self._timers.pop(kernel_id, None)
        if timer is not None:
            timer.cancel()
        if reading.recheck_in is not None:
            key = f"{handle.data['namespace']}/{handle.data['pod']}"

            def recheck() -> None:
                self._timers.pop(kernel_id, None)
                cached = self.hub.cached(key)
                if cached is not None:
                    self._on_pod(handle, cached, False)

            self._timers[kernel_id] = asyncio.get_running_loop().call_later(reading.recheck_in, recheck)
        obs = reading.observation
        if obs.state is PlatformState.FAILED and obs.error is not None:
            if kernel_id not in self._reported:
                self._reported.add(kernel_id)
                self._spawn(self._report_failure(handle, obs))
            return
        current = handle.observation
        if (obs.state, obs.ip, obs.reason) != (current.state, current.ip, current.reason):
            if obs.reason != current.reason:
                log.info("kernel %s [kubernetes] %s: %s", kernel_id, obs.state.value, obs.reason)
            handle.update(obs)

    async def _report_failure(self, handle: BackendHandle, obs: Observation) -> None:
        """Add the pod's recent events and last log lines to a failure, then report it (two requests, once)."""
        assert obs.error is not None
        ns, name = handle.data["namespace"], handle.data["pod"]
        diagnostics: list[str] = []
        with contextlib.suppress(Exception):
            events = await asyncio.wait_for(self.hub.client.pod_events(ns, name), 5)
            diagnostics.extend(event_lines(events))
        with contextlib.suppress(Exception):
            lines = await asyncio.wait_for(self.hub.client.pod_log(ns, name, 20), 5)
            diagnostics.extend(f"log: {line}" for line in lines)
        obs.error.diagnostics.extend(diagnostics)
        log.warning("kernel %s [kubernetes] pod %s/%s failed: %s", handle.kernel_id, ns, name, obs.error.reason)
        handle.update(Observation(obs.state, obs.ip, obs.host, obs.reason, tuple(obs.error.diagnostics),
                                  obs.exit_code, obs.error))  # fmt: skip

    def _spawn(self, coro: Any) -> None:
        self._tasks.spawn(coro)

    async def terminate(self, handle: BackendHandle, grace: float = 0.0) -> None:
        """Delete the pod (its Secret goes with it) and a per-kernel namespace unless restarting. No-op if gone.

        On a restart the old pod must be gone before a new one of the same name is created, so then this waits for the
        watch to report the deletion.
        """
        ns, name = handle.data.get("namespace"), handle.data.get("pod")
        if not ns or not name:
            return
        restarting = bool(handle.data.get("restarting"))
        try:
            await self.hub.client.delete_pod(ns, name, grace)
            if restarting and handle.data.get("uid"):
                await self._wait_gone(handle, grace + 30)
            if handle.data.get("owns_namespace") and not restarting:
                await self.hub.client.delete_namespace(ns)
        finally:
            self._forget(handle)
            self._reported.discard(handle.kernel_id)
        log.info("kernel %s [kubernetes] pod %s/%s deleted", handle.kernel_id, ns, name)

    async def _wait_gone(self, handle: BackendHandle, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        key = f"{handle.data['namespace']}/{handle.data['pod']}"
        while (cached := self.hub.cached(key)) is not None and cached["metadata"].get("uid") == handle.data["uid"]:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(handle.wait_changed(), min(remaining, 1.0))

    async def signal(self, handle: BackendHandle, signum: int) -> None:
        """Without the agent a pod's processes cannot be signalled; a kill request deletes the pod."""
        import signal as signals

        if signum in (signals.SIGKILL, signals.SIGTERM) and handle.data.get("pod"):
            await self.hub.client.delete_pod(handle.data["namespace"], handle.data["pod"], 0)

    async def log_tail(self, handle: BackendHandle, lines: int = 20) -> list[str]:
        try:
            return await self.hub.client.pod_log(handle.data["namespace"], handle.data["pod"], lines)
        except Exception:
            return []

    def serialize(self, handle: BackendHandle) -> dict[str, Any]:
        keys = ("namespace", "pod", "uid", "secret", "owns_namespace")
        return {"kernel_id": handle.kernel_id, **{k: handle.data[k] for k in keys if k in handle.data}}

    async def restore(self, data: dict[str, Any]) -> BackendHandle:
        """Reattach: follow the pod named in ``data`` through the shared watch; GONE if it (or its uid) is gone."""
        handle = BackendHandle(str(data.get("kernel_id", "")), data=dict(data))
        ns, name = data["namespace"], data["pod"]
        watcher = await self.hub.watcher(None if data.get("owns_namespace") else ns)
        self._follow(handle)
        pod = watcher.pods.get(f"{ns}/{name}")
        if pod is None or (data.get("uid") and pod["metadata"].get("uid") != data["uid"]):
            handle.update(Observation(PlatformState.GONE, reason=f"pod {ns}/{name} no longer exists"))
        else:
            self._on_pod(handle, pod, False)
        return handle

    async def list_owned(self) -> list[dict[str, Any]]:
        namespace = None if not self.settings.shared_namespace else self.settings.namespace
        pods, _ = await self.hub.client.list_pods(namespace, self.hub.label_selector)
        return [owned_entry(pod) for pod in pods]

    async def close(self) -> None:
        self._tasks.cancel()
        for kernel_id in list(self._unsubscribe):
            self._forget(BackendHandle(kernel_id))


def launch_secret(plan: PodPlan, labels: dict[str, str], owner: dict[str, Any], token: bytes) -> dict[str, Any]:
    """The Secret that carries a launch's token and parameters to the agent, owned by ``owner`` (it goes with it)."""
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": plan.secret_name, "namespace": plan.namespace, "labels": labels,
                     "ownerReferences": [owner]},
        "data": {
            TOKEN_KEY: base64.b64encode(encode_token(token).encode()).decode(),
            PARAMS_KEY: base64.b64encode(json.dumps(plan.params).encode()).decode(),
        },
    }  # fmt: skip


def owned_entry(pod: dict[str, Any]) -> dict[str, Any]:
    meta = pod.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return {
        "kernel_id": annotations.get("gateway-provisioners/kernel-id")
        or (meta.get("labels") or {}).get(KERNEL_ID_LABEL),
        "namespace": meta.get("namespace"),
        "pod": meta.get("name"),
        "uid": meta.get("uid"),
        "phase": (pod.get("status") or {}).get("phase"),
        "pooled": (meta.get("labels") or {}).get(POOLED_LABEL) == "true",
        "created": meta.get("creationTimestamp"),
    }
