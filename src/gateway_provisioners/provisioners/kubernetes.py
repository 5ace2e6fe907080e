"""``kubernetes-provisioner``: each kernel runs in a pod, with the agent next to it.

The facade holds the operator's settings (traitlets, with the older package's environment names as defaults) and
turns them into :class:`~gateway_provisioners.adapters.kubernetes.PodSettings`; the adapter does the rest. By default
the server assigns the kernel's ports and key and reads the pod's IP from the shared watch: no callback from the pod
to the server is needed. ``connection_mode = "callback"`` remains for clusters where the server cannot reach pod IPs
directly but pods can reach the server.
"""

from __future__ import annotations

import importlib
from typing import Any

from jupyter_client.connect import KernelConnectionInfo
from traitlets import Any as AnyTrait
from traitlets import Bool, Dict, Float, Int, List, TraitError, Unicode, Union, default, validate

from ..adapters.kubernetes import KubernetesBackend, PodSettings, shared_hub
from ..adapters.kubernetes.backend import DEFAULT_AGENT_PATH, DEFAULT_KERNEL_ROLE_RULES
from ..adapters.kubernetes.params import K8S_PARAMS
from ..adapters.kubernetes.pod_template import load_template
from ..core.backend import Backend
from ..core.launch import COMMON_PARAMS, ConnectionMode, parse_bool, parse_user_list
from .base import RemoteProvisionerBase, env_choice, env_default, env_json, env_number

PULL_POLICIES = ("IfNotPresent", "Always", "Never")


def _role_rules(rules: list[Any], setting: str) -> list[dict[str, Any]]:
    """``rules`` if each is a Role rule with non-empty ``verbs`` and ``resources``; else one line naming the bad one."""
    for rule in rules:
        well_formed = isinstance(rule, dict) and all(
            isinstance(rule.get(key), list) and rule[key] for key in ("verbs", "resources")
        )
        if not well_formed:
            raise TraitError(
                f"{setting}: {rule!r} is not a Role rule "
                '(an object with lists "verbs" and "resources", e.g. {"resources": ["pods"], "verbs": ["get"]})'
            )
    return list(rules)


def _id_list(value: Any, setting: str) -> Any:
    """``value`` if it is a list (or comma string) of whole numbers; else one line naming ``setting``."""
    try:
        _ids(value)
    except ValueError:
        raise TraitError(f"{setting} must be whole numbers, got {value!r}") from None
    return value


def _ids(value: Any) -> tuple[int, ...]:
    return tuple(sorted({int(str(v).strip()) for v in parse_user_list(value)}))


class KubernetesProvisioner(RemoteProvisionerBase):
    """Run the kernel in a Kubernetes pod."""

    param_schema = COMMON_PARAMS + K8S_PARAMS

    namespace = Unicode(help="Namespace of kernel pods when shared (GP_NAMESPACE; default 'default').").tag(config=True)
    shared_namespace = Bool(
        help="""Run every kernel in `namespace` (GP_SHARED_NAMESPACE, default true). False gives each kernel a
        namespace of its own, with a Role limited to kernel_role_rules, deleted with the kernel.""",
    ).tag(config=True)
    allow_client_namespace = Bool(
        help="Honour a client's KERNEL_NAMESPACE (an existing namespace; never created or deleted) "
        "(GP_ALLOW_CLIENT_NAMESPACE, default false).",
    ).tag(config=True)
    image_name = Unicode(help="The kernel image: it must hold Python 3.9+ and the agent (GP_IMAGE_NAME).").tag(
        config=True
    )
    allowed_images = Union(
        [List(Unicode()), Unicode()],
        help="Images a client may choose with KERNEL_IMAGE; empty allows any (GP_ALLOWED_IMAGES, comma-separated).",
    ).tag(config=True)
    image_pull_policy = Unicode(help="IfNotPresent, Always or Never (GP_IMAGE_PULL_POLICY).").tag(config=True)
    service_account_name = Unicode(
        help="Service account of kernel pods (GP_DEFAULT_KERNEL_SERVICE_ACCOUNT_NAME, default 'default')."
    ).tag(config=True)
    allowed_service_accounts = Union(
        [List(Unicode()), Unicode()],
        help="Service accounts a client may pick with KERNEL_SERVICE_ACCOUNT_NAME (GP_ALLOWED_SERVICE_ACCOUNTS).",
    ).tag(config=True)
    pod_template = Unicode(
        help="Path of a Jinja2 pod template replacing the shipped one; every {{ }} renders as one JSON value "
        "(GP_POD_TEMPLATE).",
    ).tag(config=True)
    extra_pod_config = Dict(
        help="A partial Pod merged into the rendered pod (mappings merge, named lists by name)."
    ).tag(config=True)
    modify_pod_hook = AnyTrait(
        help="An async callable (or 'module:function') given (pod dict, LaunchSpec); it may change the pod in place "
        "or return a new one. The secure defaults are checked after it.",
    ).tag(config=True)
    kernel_uid = Int(allow_none=True, help="runAsUser of kernel pods (GP_KERNEL_UID, default 1000).").tag(config=True)
    kernel_gid = Int(allow_none=True, help="runAsGroup/fsGroup of kernel pods (GP_KERNEL_GID, default 100).").tag(
        config=True
    )
    prohibited_uids = Union([List(), Unicode()], help="User ids refused, compared as numbers (GP_PROHIBITED_UIDS, "
                            "default 0).").tag(config=True)  # fmt: skip
    prohibited_gids = Union([List(), Unicode()], help="Group ids refused, compared as numbers (GP_PROHIBITED_GIDS, "
                            "default 0).").tag(config=True)  # fmt: skip
    agent_python = Unicode(help="Interpreter in the image that runs the agent (GP_AGENT_PYTHON, 'python3').").tag(
        config=True
    )
    agent_path = Unicode(help=f"Path of gp_agent.py in the image (GP_AGENT_PATH, {DEFAULT_AGENT_PATH}).").tag(
        config=True
    )
    kernel_bind_ip = Unicode(help="Address the kernel binds in its pod (GP_KERNEL_IP, 0.0.0.0).").tag(config=True)
    kubeconfig = Unicode(help="kubeconfig file; empty: in-cluster config, else ~/.kube/config (GP_KUBECONFIG).").tag(
        config=True
    )
    kube_context = Unicode(help="kubeconfig context (GP_KUBE_CONTEXT; default: the current one).").tag(config=True)
    watch_timeout = Float(
        help="Seconds one watch request lasts before it is renewed from its resourceVersion: one request per "
        "namespace per period, whatever the number of kernels (GP_K8S_WATCH_TIMEOUT, 300).",
    ).tag(config=True)
    unschedulable_grace = Float(
        help="Seconds a pod may stay unschedulable (an autoscaler may add a node) before the launch fails "
        "(GP_UNSCHEDULABLE_GRACE, 30).",
    ).tag(config=True)
    allow_client_scheduling = Bool(help="Honour KERNEL_NODE_SELECTOR and KERNEL_TOLERATIONS (JSON).").tag(config=True)
    allow_client_volumes = Bool(help="Honour KERNEL_VOLUMES and KERNEL_VOLUME_MOUNTS (PVC, configMap, emptyDir).").tag(
        config=True
    )
    node_selector = Dict(help="nodeSelector of every kernel pod.").tag(config=True)
    tolerations: List[dict[str, Any]] = List(help="Tolerations of every kernel pod.").tag(config=True)
    kernel_role_rules: List[dict[str, Any]] = List(
        help="Rules of the Role a kernel gets in its own namespace (shared_namespace false); [] for none.",
    ).tag(config=True)

    @default("namespace")
    def _d_namespace(self) -> str:
        return env_default("GP_NAMESPACE", default="default")

    @default("shared_namespace")
    def _d_shared(self) -> bool:
        return parse_bool(env_default("GP_SHARED_NAMESPACE", default="true"), "GP_SHARED_NAMESPACE")

    @default("allow_client_namespace")
    def _d_client_ns(self) -> bool:
        return parse_bool(env_default("GP_ALLOW_CLIENT_NAMESPACE", default="false"), "GP_ALLOW_CLIENT_NAMESPACE")

    @default("image_name")
    def _d_image(self) -> str:
        return env_default("GP_IMAGE_NAME", default="gateway-provisioners/kernel-py:latest")

    @default("allowed_images")
    def _d_allowed_images(self) -> list[str]:
        return sorted(parse_user_list(env_default("GP_ALLOWED_IMAGES")))

    @default("image_pull_policy")
    def _d_pull(self) -> str:
        return env_choice("GP_IMAGE_PULL_POLICY", "IfNotPresent", PULL_POLICIES)

    @validate("image_pull_policy")
    def _v_pull(self, proposal: dict[str, Any]) -> str:
        if proposal["value"] not in PULL_POLICIES:
            raise TraitError(f"image_pull_policy {proposal['value']!r} is not one of {', '.join(PULL_POLICIES)}")
        return str(proposal["value"])

    @default("service_account_name")
    def _d_sa(self) -> str:
        return env_default("GP_DEFAULT_KERNEL_SERVICE_ACCOUNT_NAME", default="default")

    @default("allowed_service_accounts")
    def _d_allowed_sa(self) -> list[str]:
        return sorted(parse_user_list(env_default("GP_ALLOWED_SERVICE_ACCOUNTS")))

    @default("pod_template")
    def _d_template(self) -> str:
        return env_default("GP_POD_TEMPLATE")

    @default("kernel_uid")
    def _d_uid(self) -> int:
        return env_number("GP_KERNEL_UID", int, "1000", 0, 2**31 - 1)

    @default("kernel_gid")
    def _d_gid(self) -> int:
        return env_number("GP_KERNEL_GID", int, "100", 0, 2**31 - 1)

    @default("prohibited_uids")
    def _d_puids(self) -> str:
        return _id_list(env_default("GP_PROHIBITED_UIDS", default="0"), "GP_PROHIBITED_UIDS")

    @default("prohibited_gids")
    def _d_pgids(self) -> str:
        return _id_list(env_default("GP_PROHIBITED_GIDS", default="0"), "GP_PROHIBITED_GIDS")

    @validate("prohibited_uids", "prohibited_gids")
    def _v_ids(self, proposal: dict[str, Any]) -> Any:
        return _id_list(proposal["value"], proposal["trait"].name)

    @default("agent_python")
    def _d_python(self) -> str:
        return env_default("GP_AGENT_PYTHON", default="python3")

    @default("agent_path")
    def _d_agent(self) -> str:
        return env_default("GP_AGENT_PATH", default=DEFAULT_AGENT_PATH)

    @default("kernel_bind_ip")
    def _d_kernel_ip(self) -> str:
        return env_default("GP_KERNEL_IP", default="0.0.0.0")

    @default("kubeconfig")
    def _d_kubeconfig(self) -> str:
        return env_default("GP_KUBECONFIG")

    @default("kube_context")
    def _d_context(self) -> str:
        return env_default("GP_KUBE_CONTEXT")

    @default("watch_timeout")
    def _d_watch(self) -> float:
        return env_number("GP_K8S_WATCH_TIMEOUT", float, "300", 1, 86400)

    @default("unschedulable_grace")
    def _d_grace(self) -> float:
        return env_number("GP_UNSCHEDULABLE_GRACE", float, "30", 0, 86400)

    @default("kernel_role_rules")
    def _d_rules(self) -> list[dict[str, Any]]:
        rules = env_json("GP_KERNEL_ROLE_RULES", list)
        if rules is None:
            return [dict(rule) for rule in DEFAULT_KERNEL_ROLE_RULES]
        return _role_rules(rules, "GP_KERNEL_ROLE_RULES")  # traitlets does not validate dynamic defaults

    @validate("kernel_role_rules")
    def _v_rules(self, proposal: dict[str, Any]) -> list[dict[str, Any]]:
        return _role_rules(proposal["value"], "kernel_role_rules")

    def backend_modes(self) -> tuple[ConnectionMode, ...]:
        return KubernetesBackend.modes

    def kernel_ip(self) -> str:
        return self.kernel_bind_ip

    def make_backend(self) -> Backend:
        """A backend with this kernel spec's pod settings, on the process's shared client and watches."""
        hook = self.modify_pod_hook
        if isinstance(hook, str) and hook:
            module, _, attr = hook.partition(":")
            hook = getattr(importlib.import_module(module), attr)
        settings = PodSettings(
            namespace=self.namespace, shared_namespace=self.shared_namespace,
            allow_client_namespace=self.allow_client_namespace, image=self.image_name,
            allowed_images=tuple(parse_user_list(self.allowed_images)), image_pull_policy=self.image_pull_policy,
            service_account=self.service_account_name,
            allowed_service_accounts=tuple(parse_user_list(self.allowed_service_accounts)),
            template=load_template(self.pod_template), extra_pod_config=dict(self.extra_pod_config),
            modify_pod_hook=hook or None, uid=self.kernel_uid, gid=self.kernel_gid,
            prohibited_uids=_ids(self.prohibited_uids), prohibited_gids=_ids(self.prohibited_gids),
            python=self.agent_python, agent_path=self.agent_path, node_selector=dict(self.node_selector),
            tolerations=list(self.tolerations), allow_client_scheduling=self.allow_client_scheduling,
            allow_client_volumes=self.allow_client_volumes, unschedulable_grace=self.unschedulable_grace,
            kernel_role_rules=tuple(self.kernel_role_rules),
        )  # fmt: skip
        return KubernetesBackend(shared_hub(self.kubeconfig, self.kube_context, self.watch_timeout), settings)

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        """Start phase. A restart whose agent is gone replaces the pod but keeps a per-kernel namespace."""
        if self.kernel is not None and not self.kernel.agent_alive and self.kernel.handle is not None:
            self.kernel.handle.data["restarting"] = True
        return await super().launch_kernel(cmd, **kwargs)
