"""What one launch may have on Kubernetes, decided once: the operator's pod settings and the client's checked values.

:func:`pod_request` is the one place where per-launch values are authorized and parsed (image, service account, user
and group ids, namespace, scheduling, volumes, resources). It runs before the backend sees the launch; the backend's
``plan()`` only builds the pod from its result, the way a template renders what it is given.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ...core.errors import NotAuthorized
from ...core.launch import LaunchSpec
from . import params as kparams

DEFAULT_AGENT_PATH = "/usr/local/share/gateway-provisioners/gp_agent.py"
# What a kernel in its own namespace may do there by default: what a Spark driver needs to run its executors.
DEFAULT_KERNEL_ROLE_RULES: tuple[dict[str, Any], ...] = (
    {"apiGroups": [""], "resources": ["pods", "services", "configmaps", "persistentvolumeclaims"],
     "verbs": ["get", "list", "watch", "create", "delete"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
)  # fmt: skip

PodHook = Callable[[dict[str, Any], LaunchSpec], Awaitable[dict[str, Any] | None]]


@dataclass
class PodSettings:
    """The operator's choices for one kernel spec's pods (the provisioner fills this from its traits)."""

    namespace: str = "default"
    shared_namespace: bool = True
    allow_client_namespace: bool = False
    namespace_prefix: str = ""
    image: str = "gateway-provisioners/kernel-py:latest"
    allowed_images: tuple[str, ...] = ()
    image_pull_policy: str = "IfNotPresent"
    service_account: str = "default"
    allowed_service_accounts: tuple[str, ...] = ()
    template: str = ""  # the template's text; empty: the shipped default
    extra_pod_config: dict[str, Any] = field(default_factory=dict)
    modify_pod_hook: PodHook | None = None
    uid: int | None = 1000
    gid: int | None = 100
    prohibited_uids: tuple[int, ...] = (0,)
    prohibited_gids: tuple[int, ...] = (0,)
    python: str = "python3"
    agent_path: str = DEFAULT_AGENT_PATH
    agent_args: tuple[str, ...] = ()
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    allow_client_scheduling: bool = False
    allow_client_volumes: bool = False
    gpu_resource: str = "nvidia.com/gpu"
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    unschedulable_grace: float = 30.0
    kernel_role_rules: tuple[dict[str, Any], ...] = DEFAULT_KERNEL_ROLE_RULES


def label_value(text: str) -> str:
    """``text`` as a valid label value (63 chars of [A-Za-z0-9-_.], alphanumeric at both ends)."""
    value = re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:63].strip("-_.")
    return value


def dns_label(text: str) -> str:
    value = re.sub(r"[^a-z0-9-]", "-", text.lower())[:63].strip("-")
    return value or "kernel"


@dataclass(frozen=True)
class PodRequest:
    """The checked per-launch choices of one pod."""

    namespace: str
    owns_namespace: bool  # a namespace made for this kernel (and deleted with it)
    pod_name: str
    image: str
    service_account: str
    uid: int | None
    gid: int | None
    node_selector: dict[str, str]
    tolerations: list[dict[str, Any]]
    volumes: list[dict[str, Any]]
    volume_mounts: list[dict[str, Any]]
    resources: dict[str, Any]


def pod_request(spec: LaunchSpec, s: PodSettings) -> PodRequest:
    """Decide the pod's per-launch choices; raises :class:`NotAuthorized` for a value the operator does not allow."""
    values, env = spec.values, spec.env
    namespace, owns = namespace_for(spec, s)
    image = values.get("KERNEL_IMAGE") or s.image
    # Closed by default, like the Docker backend: a client's image runs only when the operator listed it (an image
    # is code run with the kernel's service account and inside the cluster's network).
    if image != s.image and image not in s.allowed_images:
        raise NotAuthorized(
            f"KERNEL_IMAGE={image!r} is not allowed here: only the kernel spec's image {s.image!r} and those in "
            "allowed_images (GP_ALLOWED_IMAGES) may run"
        )
    account = values.get("KERNEL_SERVICE_ACCOUNT_NAME") or s.service_account
    if account != s.service_account and account not in s.allowed_service_accounts:
        raise NotAuthorized(
            f"KERNEL_SERVICE_ACCOUNT_NAME={account!r} is not in allowed_service_accounts (GP_ALLOWED_SERVICE_ACCOUNTS)"
        )
    uid, gid = values.get("KERNEL_UID", s.uid), values.get("KERNEL_GID", s.gid)
    if uid is not None and int(uid) in {int(u) for u in s.prohibited_uids}:
        raise NotAuthorized(f"KERNEL_UID={uid} is prohibited (prohibited_uids, GP_PROHIBITED_UIDS)")
    if gid is not None and int(gid) in {int(g) for g in s.prohibited_gids}:
        raise NotAuthorized(f"KERNEL_GID={gid} is prohibited (prohibited_gids, GP_PROHIBITED_GIDS)")
    node_selector, tolerations = dict(s.node_selector), list(s.tolerations)
    scheduling = [v for v in ("KERNEL_NODE_SELECTOR", "KERNEL_TOLERATIONS") if env.get(v)]
    if scheduling and not s.allow_client_scheduling:
        raise NotAuthorized(f"{', '.join(scheduling)} not allowed here (allow_client_scheduling)")
    if env.get("KERNEL_NODE_SELECTOR"):
        node_selector.update(kparams.node_selector(env["KERNEL_NODE_SELECTOR"]))
    if env.get("KERNEL_TOLERATIONS"):
        tolerations.extend(kparams.tolerations(env["KERNEL_TOLERATIONS"]))
    if (env.get("KERNEL_VOLUMES") or env.get("KERNEL_VOLUME_MOUNTS")) and not s.allow_client_volumes:
        raise NotAuthorized("KERNEL_VOLUMES / KERNEL_VOLUME_MOUNTS not allowed here (allow_client_volumes)")
    volumes = kparams.volumes(env["KERNEL_VOLUMES"]) if env.get("KERNEL_VOLUMES") else []
    mounts = kparams.volume_mounts(env["KERNEL_VOLUME_MOUNTS"]) if env.get("KERNEL_VOLUME_MOUNTS") else []
    return PodRequest(
        namespace=namespace,
        owns_namespace=owns,
        pod_name=values.get("KERNEL_POD_NAME") or dns_label(f"kernel-{spec.kernel_id}"),
        image=image,
        service_account=account,
        uid=None if uid is None else int(uid),
        gid=None if gid is None else int(gid),
        node_selector=node_selector,
        tolerations=tolerations,
        volumes=list(volumes),
        volume_mounts=list(mounts),
        resources=resources(values, s.gpu_resource),
    )


def namespace_for(spec: LaunchSpec, s: PodSettings) -> tuple[str, bool]:
    """(namespace, whether this launch owns it)."""
    requested = spec.values.get("KERNEL_NAMESPACE")
    if requested and requested != s.namespace:
        if not s.allow_client_namespace:
            raise NotAuthorized(
                f"KERNEL_NAMESPACE={requested!r} is not allowed: kernels run in {s.namespace!r} "
                "(the operator may set allow_client_namespace, GP_ALLOW_CLIENT_NAMESPACE)"
            )
        return requested, False
    if s.shared_namespace or requested:
        return s.namespace, False
    base = f"{s.namespace_prefix}{spec.username}-{spec.kernel_id}" if spec.username else spec.kernel_id
    return dns_label(base), True


def resources(values: dict[str, Any], gpu_resource: str) -> dict[str, Any]:
    """The kernel container's requests and limits from KERNEL_CPUS, KERNEL_MEMORY, KERNEL_GPUS and their limits."""
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    for name, key in (("CPUS", "cpu"), ("MEMORY", "memory")):
        if values.get(f"KERNEL_{name}"):
            requests[key] = str(values[f"KERNEL_{name}"])
        if values.get(f"KERNEL_{name}_LIMIT"):
            limits[key] = str(values[f"KERNEL_{name}_LIMIT"])
    gpus = values.get("KERNEL_GPUS_LIMIT") or values.get("KERNEL_GPUS")
    if gpus:
        limits[gpu_resource] = int(gpus)  # extended resources are set as limits
    result: dict[str, Any] = {}
    if requests:
        result["requests"] = requests
    if limits:
        result["limits"] = limits
    return result
