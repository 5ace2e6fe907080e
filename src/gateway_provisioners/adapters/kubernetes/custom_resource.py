"""Kernels launched through a custom resource: an operator turns the resource into the kernel's pod.

The backend renders the resource from a template (the pod template's rules: every ``{{ }}`` is one JSON value), creates
it and the launch Secret — owned by the resource, so whoever deletes the resource deletes the token — and then follows
the *pod* the operator makes, through the hub's shared pod watch, exactly as :class:`~.backend.KubernetesBackend`
follows its own pods. The template must give that pod the name ``{{ pod_name }}`` and the labels ``{{ labels }}``,
run the agent with ``{{ agent_args }}`` and mount the Secret ``{{ secret_name }}`` at the folder of ``{{ token_file }}``
(the shipped SparkApplication template shows how).

Until the pod exists, only the resource can say that the launch failed (an operator that cannot submit it writes that
into its status): the backend reads the resource's status once a second while the launch waits for the pod, and fails
the launch with the operator's message when the status names a failed state. Once the pod exists, it reads nothing.
Shutdown deletes the resource and the pod itself: an operator need not delete the pod with its resource (the Spark
operator without its webhook does not), and the kernel ends at once whatever the operator's pace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ...core.backend import BackendHandle, Observation, PlatformState
from ...core.errors import ConfigurationError, LaunchError
from ...core.launch import ConnectionMode, LaunchSpec
from .backend import KubernetesBackend, PodPlan, launch_secret
from .client import KubeApiError
from .hub import KubeHub
from .pod_template import render_template
from .request import PodSettings

log = logging.getLogger("gateway_provisioners.kubernetes")

STATUS_INTERVAL = 1.0  # seconds between two reads of the resource's status while the launch waits for the pod


@dataclass(frozen=True)
class ResourceKind:
    """A custom resource's API: ``group``/``version``, its ``plural`` (the URL) and its ``kind``."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def path(self) -> tuple[str, str, str]:
        return self.group, self.version, self.plural


@dataclass
class ResourceSettings:
    """The operator's choices for the resource of one kernel spec (the provisioner fills this from its traits)."""

    kind: ResourceKind
    template: str  # the template's text
    state_field: str = ""  # dotted path of the resource's state in the object, e.g. status.applicationState.state
    message_field: str = ""  # dotted path of the operator's message about that state
    failed_states: tuple[str, ...] = ()  # states (any case) in which the launch has failed
    context: dict[str, Any] = field(default_factory=dict)  # the provisioner's own template variables


def field_at(obj: dict[str, Any], path: str) -> Any:
    """The value at dotted ``path`` in ``obj``; None where any step is missing."""
    value: Any = obj if path else None
    for key in path.split(".") if path else ():
        value = value.get(key) if isinstance(value, dict) else None
    return value


def render_resource(settings: ResourceSettings, context: dict[str, Any]) -> dict[str, Any]:
    """The resource rendered from ``settings.template``; it must be one mapping of the configured kind."""
    body = render_template(settings.template, context, "resource")
    kind = settings.kind
    if body.get("apiVersion") != kind.api_version or body.get("kind") != kind.kind:
        raise ConfigurationError(
            f"the resource template must render apiVersion: {kind.api_version} and kind: {kind.kind} (got "
            f"{body.get('apiVersion')!r}, {body.get('kind')!r})"
        )
    return body


def summary(message: str) -> str:
    """One line of an operator's message: its first line, and the last exception line where a tool's output (e.g.
    spark-submit's stderr, warnings first and a stack after) follows it."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return ""
    cause = [line for line in lines[1:] if ("Exception" in line or "Error" in line) and not line.startswith("at ")]
    return f"{lines[0]} ({cause[-1]})" if cause else lines[0]


class CustomResourceBackend(KubernetesBackend):
    """Kernels as custom resources whose operator makes the kernel's pod."""

    name: ClassVar[str] = "custom-resource"
    # The server assigns the ports and reads the pod's IP from the watch; callback mode is not offered (untried).
    modes: ClassVar[tuple[ConnectionMode, ...]] = (ConnectionMode.ASSIGNED,)

    def __init__(self, hub: KubeHub, settings: PodSettings, resource: ResourceSettings) -> None:
        super().__init__(hub, settings)
        self.resource = resource

    def plan_resource(self, spec: LaunchSpec) -> tuple[PodPlan, dict[str, Any], str]:
        """(the launch's plan, the resource to create, the name of the pod it makes) for ``spec``; no request yet."""
        plan, context = self.launch_context(spec)
        if plan.owns_namespace:
            raise ConfigurationError(
                f"{self.resource.kind.kind} kernels run in a shared namespace: set shared_namespace (an operator "
                "watches the namespaces it was told to)"
            )
        name = context["pod_name"]  # a resource and its pod may share a name: they are of different kinds
        context.update(self.resource.context, resource_name=name)
        body = render_resource(self.resource, context)
        meta = body.setdefault("metadata", {})
        meta.update(name=name, namespace=plan.namespace)
        meta.setdefault("labels", {}).update({k: v for k, v in context["labels"].items() if k != "kernel_username"})
        return plan, body, context["pod_name"]

    async def submit(self, spec: LaunchSpec) -> BackendHandle:
        plan, body, pod = self.plan_resource(spec)
        kind, client = self.resource.kind, self.hub.client
        ns, name = plan.namespace, body["metadata"]["name"]
        await self.hub.watcher(ns)
        handle = BackendHandle(
            spec.kernel_id,
            data={"namespace": ns, "pod": pod, "resource": name, "secret": plan.secret_name, "owns_namespace": False},
        )
        self._follow(handle)
        try:
            created = await client.create_custom(kind.path, ns, body)
        except KubeApiError as exc:
            self._forget(handle)
            if exc.status == 404:
                raise LaunchError(
                    f"the API server has no {kind.plural}.{kind.group}/{kind.version}",
                    hint=f"Install the operator of {kind.kind} and its CustomResourceDefinition",
                ) from None
            if exc.status == 409:
                raise LaunchError(f"{kind.kind} {ns}/{name} already exists", hint="Delete the old one") from None
            raise LaunchError(f"cannot create {kind.kind} {ns}/{name}: {exc}") from None
        handle.data["resource_uid"] = created["metadata"]["uid"]
        # Owned by the resource: the garbage collector deletes the token with it, whoever deletes it.
        owner = {"apiVersion": kind.api_version, "kind": kind.kind, "name": name, "uid": handle.data["resource_uid"],
                 "controller": True}  # fmt: skip
        secret = launch_secret(plan, dict(body["metadata"]["labels"]), owner, spec.token)
        try:
            await client.create_secret(ns, secret)
        except Exception as exc:
            await self.terminate(handle)
            raise LaunchError(f"cannot create the launch Secret {ns}/{plan.secret_name}: {exc}") from None
        log.info("kernel %s [kubernetes] %s %s/%s created", spec.kernel_id, kind.kind, ns, name)
        if self.resource.state_field and self.resource.failed_states:
            self._spawn(self._watch_status(handle))
        return handle

    async def _watch_status(self, handle: BackendHandle) -> None:
        """Read the resource's status while the launch waits for its pod; fail the launch on a failed state."""
        kind, failed = self.resource.kind, {state.upper() for state in self.resource.failed_states}
        ns, name = handle.data["namespace"], handle.data["resource"]
        key = f"{ns}/{handle.data['pod']}"
        while handle.kernel_id in self._unsubscribe and self.hub.cached(key) is None:
            with contextlib.suppress(Exception):
                obj = await self.hub.client.get_custom(kind.path, ns, name)
                state = str(field_at(obj, self.resource.state_field) or "") if obj else ""
                if state.upper() in failed:
                    message = str(field_at(obj, self.resource.message_field) or "").strip() if obj else ""
                    reason = f"{kind.kind} {ns}/{name} is {state}" + (f": {summary(message)}" if message else "")
                    error = LaunchError(reason, diagnostics=message.splitlines()[-20:])
                    log.warning("kernel %s [kubernetes] %s", handle.kernel_id, reason)
                    handle.update(Observation(PlatformState.FAILED, reason=reason, error=error))
                    return
            await asyncio.sleep(STATUS_INTERVAL)

    async def terminate(self, handle: BackendHandle, grace: float = 0.0) -> None:
        """Delete the resource and the kernel's pod; on a restart, wait until both are gone (same names again)."""
        ns, name = handle.data.get("namespace"), handle.data.get("resource")
        if ns and name:
            await self.hub.client.delete_custom(self.resource.kind.path, ns, name)
            if handle.data.get("restarting"):
                await self._wait_resource_gone(ns, name, grace + 30)
        await super().terminate(handle, grace)

    async def _wait_resource_gone(self, ns: str, name: str, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline and await self.hub.client.get_custom(self.resource.kind.path, ns, name):
            await asyncio.sleep(STATUS_INTERVAL / 2)

    def serialize(self, handle: BackendHandle) -> dict[str, Any]:
        data = super().serialize(handle)
        data.update({k: handle.data[k] for k in ("resource", "resource_uid") if k in handle.data})
        return data
