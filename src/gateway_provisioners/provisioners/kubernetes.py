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

from ..adapters.kubernetes import KubernetesBackend, PodSettings, pod_request, shared_hub
from ..adapters.kubernetes.params import K8S_PARAMS
from ..adapters.kubernetes.pod_template import load_template
from ..adapters.kubernetes.request import DEFAULT_AGENT_PATH, DEFAULT_KERNEL_ROLE_RULES
from ..core.backend import Backend
from ..core.errors import ConfigurationError
from ..core.launch import COMMON_PARAMS, ConnectionMode, LaunchSpec, parse_user_list
from .base import RemoteProvisionerBase
from .settings import Anything, Flag, Integer, Mapping, NameList, Number, Sequence, Text, setting

PULL_POLICIES = ("IfNotPresent", "Always", "Never")


def _role_rules(rules: list[Any], setting: str, provisioner: Any = None) -> list[dict[str, Any]]:
    """``rules`` if each is a Role rule with non-empty ``verbs`` and ``resources``; else one line naming the bad one."""
    for rule in rules:
        well_formed = isinstance(rule, dict) and all(
            isinstance(rule.get(key), list) and rule[key] for key in ("verbs", "resources")
        )
        if not well_formed:
            raise ConfigurationError(
                f"{setting}: {rule!r} is not a Role rule "
                '(an object with lists "verbs" and "resources", e.g. {"resources": ["pods"], "verbs": ["get"]})'
            )
    return list(rules)


def _id_list(value: Any, setting: str, provisioner: Any = None) -> Any:
    """``value`` if it is a list (or comma string) of whole numbers; else one line naming ``setting``."""
    try:
        _ids(value)
    except ValueError:
        raise ConfigurationError(f"{setting} must be whole numbers, got {value!r}") from None
    return value


def _ids(value: Any) -> tuple[int, ...]:
    return tuple(sorted({int(str(v).strip()) for v in parse_user_list(value)}))


class KubernetesProvisioner(RemoteProvisionerBase):
    """Run the kernel in a Kubernetes pod."""

    param_schema = COMMON_PARAMS + K8S_PARAMS

    namespace = setting(Text, "GP_NAMESPACE", default="default", help="Namespace of kernel pods when shared.")
    shared_namespace = setting(
        Flag, "GP_SHARED_NAMESPACE", default=True,
        help="Run every kernel in `namespace`. False gives each kernel a namespace of its own, with a Role limited "
        "to kernel_role_rules, deleted with the kernel.",
    )  # fmt: skip
    allow_client_namespace = setting(
        Flag, "GP_ALLOW_CLIENT_NAMESPACE", default=False,
        help="Honour a client's KERNEL_NAMESPACE (an existing namespace; never created or deleted).",
    )  # fmt: skip
    image_name = setting(
        Text, "GP_IMAGE_NAME", default="gateway-provisioners/kernel-py:latest",
        help="The kernel image: it must hold Python 3.9+ and the agent.",
    )  # fmt: skip
    allowed_images = setting(
        NameList,
        "GP_ALLOWED_IMAGES",
        default=[],
        help="Images a client may choose with KERNEL_IMAGE besides image_name; any other is refused (empty: only "
        "image_name).",
    )
    image_pull_policy = setting(
        Text, "GP_IMAGE_PULL_POLICY", default="IfNotPresent", choices=PULL_POLICIES, help="Pull policy of kernel pods."
    )
    service_account_name = setting(
        Text, "GP_DEFAULT_KERNEL_SERVICE_ACCOUNT_NAME", default="default", help="Service account of kernel pods."
    )
    mount_service_account_token = setting(
        Flag, "GP_MOUNT_SERVICE_ACCOUNT_TOKEN", default=False,
        help="Mount the service account's API token into kernel pods of a shared namespace (a Spark driver needs it "
        "to create its executors; bind the account to no more than that, as deploy/kubernetes/rbac-spark-kernel.yaml "
        "does). Pods of a per-kernel namespace always get it.",
    )  # fmt: skip
    allowed_service_accounts = setting(
        NameList, "GP_ALLOWED_SERVICE_ACCOUNTS", default=[],
        help="Service accounts a client may pick with KERNEL_SERVICE_ACCOUNT_NAME.",
    )  # fmt: skip
    pod_template = setting(
        Text, "GP_POD_TEMPLATE", default="", default_doc="the shipped template",
        help="Path of a Jinja2 pod template replacing the shipped one; every {{ }} renders as one JSON value.",
    )  # fmt: skip
    extra_pod_config = setting(
        Mapping, default={}, help="A partial Pod merged into the rendered pod (mappings merge, named lists by name)."
    )
    modify_pod_hook = setting(
        Anything, default=None, allow_none=True,
        help="An async callable (or 'module:function') given (pod dict, LaunchSpec); it may change the pod in place "
        "or return a new one. The secure defaults are checked after it.",
    )  # fmt: skip
    kernel_uid = setting(
        Integer, "GP_KERNEL_UID", default=1000, minimum=0, maximum=2**31 - 1, allow_none=True,
        help="runAsUser of kernel pods.",
    )  # fmt: skip
    kernel_gid = setting(
        Integer, "GP_KERNEL_GID", default=100, minimum=0, maximum=2**31 - 1, allow_none=True,
        help="runAsGroup and fsGroup of kernel pods.",
    )  # fmt: skip
    prohibited_uids = setting(
        NameList, "GP_PROHIBITED_UIDS", default="0", parse=lambda raw, name: raw, check=_id_list,
        limits_doc="whole numbers", help="User ids refused, compared as numbers.",
    )  # fmt: skip
    prohibited_gids = setting(
        NameList, "GP_PROHIBITED_GIDS", default="0", parse=lambda raw, name: raw, check=_id_list,
        limits_doc="whole numbers", help="Group ids refused, compared as numbers.",
    )  # fmt: skip
    agent_python = setting(Text, "GP_AGENT_PYTHON", default="python3", help="Interpreter in the image that runs the "
                           "agent.")  # fmt: skip
    agent_path = setting(Text, "GP_AGENT_PATH", default=DEFAULT_AGENT_PATH, help="Path of gp_agent.py in the image.")
    kernel_bind_ip = setting(Text, "GP_KERNEL_IP", default="0.0.0.0", help="Address the kernel binds in its pod.")
    kubeconfig = setting(
        Text, "GP_KUBECONFIG", default="", default_doc="in-cluster config, else ~/.kube/config",
        help="kubeconfig file of the server's access to the cluster.",
    )  # fmt: skip
    kube_context = setting(
        Text, "GP_KUBE_CONTEXT", default="", default_doc="the current context", help="kubeconfig context."
    )
    watch_timeout = setting(
        Number, "GP_K8S_WATCH_TIMEOUT", default=300.0, minimum=1, maximum=86400,
        help="Seconds one watch request lasts before it is renewed from its resourceVersion: one request per "
        "namespace per period, whatever the number of kernels.",
    )  # fmt: skip
    unschedulable_grace = setting(
        Number, "GP_UNSCHEDULABLE_GRACE", default=30.0, minimum=0, maximum=86400,
        help="Seconds a pod may stay unschedulable (an autoscaler may add a node) before the launch fails.",
    )  # fmt: skip
    allow_client_scheduling = setting(
        Flag, default=False, help="Honour KERNEL_NODE_SELECTOR and KERNEL_TOLERATIONS (JSON)."
    )
    allow_client_volumes = setting(
        Flag, default=False, help="Honour KERNEL_VOLUMES and KERNEL_VOLUME_MOUNTS (PVC, configMap, emptyDir)."
    )
    node_selector = setting(Mapping, default={}, help="nodeSelector of every kernel pod.")
    tolerations = setting(Sequence, default=[], help="Tolerations of every kernel pod.")
    kernel_role_rules = setting(
        Sequence, "GP_KERNEL_ROLE_RULES", default=[dict(rule) for rule in DEFAULT_KERNEL_ROLE_RULES],
        default_doc="read the pods of its namespace (docs/kubernetes.md)", check=_role_rules,
        limits_doc="each an object with non-empty lists `verbs` and `resources`",
        help="Rules of the Role a kernel gets in its own namespace (shared_namespace false); [] for none.",
    )  # fmt: skip

    def backend_modes(self) -> tuple[ConnectionMode, ...]:
        return KubernetesBackend.modes

    def kernel_ip(self) -> str:
        return self.kernel_bind_ip

    def pod_settings(self) -> PodSettings:
        """The operator's pod settings of this kernel spec."""
        hook = self.modify_pod_hook
        if isinstance(hook, str) and hook:
            module, _, attr = hook.partition(":")
            hook = getattr(importlib.import_module(module), attr)
        return PodSettings(
            namespace=self.namespace, shared_namespace=self.shared_namespace,
            allow_client_namespace=self.allow_client_namespace, image=self.image_name,
            allowed_images=tuple(parse_user_list(self.allowed_images)), image_pull_policy=self.image_pull_policy,
            service_account=self.service_account_name, mount_service_account_token=self.mount_service_account_token,
            allowed_service_accounts=tuple(parse_user_list(self.allowed_service_accounts)),
            template=load_template(self.pod_template), extra_pod_config=dict(self.extra_pod_config),
            modify_pod_hook=hook or None, uid=self.kernel_uid, gid=self.kernel_gid,
            prohibited_uids=_ids(self.prohibited_uids), prohibited_gids=_ids(self.prohibited_gids),
            python=self.agent_python, agent_path=self.agent_path, node_selector=dict(self.node_selector),
            tolerations=list(self.tolerations), allow_client_scheduling=self.allow_client_scheduling,
            allow_client_volumes=self.allow_client_volumes, unschedulable_grace=self.unschedulable_grace,
            kernel_role_rules=tuple(self.kernel_role_rules),
        )  # fmt: skip

    def make_backend(self) -> Backend:
        """A backend with this kernel spec's pod settings, on the process's shared client and watches."""
        return KubernetesBackend(
            shared_hub(self.kubeconfig, self.kube_context, self.watch_timeout), self.pod_settings()
        )

    def complete_spec(self, spec: LaunchSpec) -> None:
        """The KERNEL_* values become the pod's choices, checked against the operator's settings before anything is
        created."""
        spec.request = pod_request(spec, self.pod_settings())

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        """Start phase. A restart whose agent is gone replaces the pod but keeps a per-kernel namespace."""
        # A claimed pooled kernel's pod and namespace go with it: the relaunch is a new kernel under this kernel's id.
        claimed = self.kernel is not None and self.kernel.launch_id != str(self.kernel_id)
        if self.kernel is not None and not self.kernel.agent_alive and self.kernel.handle is not None and not claimed:
            self.kernel.handle.data["restarting"] = True
        return await super().launch_kernel(cmd, **kwargs)
