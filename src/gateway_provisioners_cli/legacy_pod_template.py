"""An older kernel-pod template (``scripts/kernel-pod.yaml.j2`` of gateway_provisioners ≤ 0.5) as ``extra_pod_config``.

The older template cannot be used as it is: its values sit inside quoted YAML strings, its variable names differ and
its container runs the image's ``bootstrap-kernel.sh``. What an operator usually changed in it, though, is static:
extra environment variables, labels, annotations, a nodeSelector, tolerations, volumes, a sidecar. Those carry over
mechanically as ``extra_pod_config``, which is merged into every kernel pod (and checked like it).

How: the template is rendered with a marker in place of every per-kernel value, and the fields the older shipped
template always set (the pod's name and namespace, its four labels, the autoscaler annotation, the restart policy,
the service account, the container's name and image) are taken out; this package's pod sets all of them. What is
left is the operator's addition. Any marker left means an addition uses a per-kernel value, which extra_pod_config
cannot express: that template is refused with the variables it uses.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .migrate import Refused

MARK = "GPMIGRATE-{}-END"  # a plain YAML scalar, so that it also survives where a template left a value unquoted
_MARKED = re.compile(r"GPMIGRATE-([A-Za-z0-9_]+)-END")
#: Values the older launcher always gave the template (so `is defined` holds for them, as it did there).
ALWAYS_DEFINED = (
    "kernel_id", "kernel_pod_name", "kernel_namespace", "kernel_image", "kernel_executor_image",
    "kernel_service_account_name", "kernel_username", "kernel_name", "kernel_language", "port_range",
    "public_key", "response_address", "kernel_spark_context_init_mode", "kernel_class_name",
)  # fmt: skip
#: The labels the older shipped templates set (gateway_provisioners' and Enterprise Gateway's), with their values.
STOCK_LABELS = {"kernel_id": (MARK.format("kernel_id"),), "app": ("gateway-provisioners", "enterprise-gateway"),
                "component": ("kernel",), "source": ("kernel-pod.yaml",)}  # fmt: skip
STOCK_ANNOTATIONS = {"cluster-autoscaler.kubernetes.io/safe-to-evict": ("false",)}


def _render(text: str) -> list[Any]:
    import yaml
    from jinja2 import Undefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Marked(Undefined):  # a variable the launcher gave only when set (KERNEL_CPUS …): undefined, but visible
        def __str__(self) -> str:
            return MARK.format(self._undefined_name)

    env = ImmutableSandboxedEnvironment(undefined=Marked, autoescape=False)
    env.filters["yaml_safe"] = lambda value: value  # Enterprise Gateway's quoting filter: markers need no quoting
    try:
        rendered = env.from_string(text).render({name: MARK.format(name) for name in ALWAYS_DEFINED})
        return [doc for doc in yaml.safe_load_all(rendered) if doc is not None]
    except Exception as exc:
        raise Refused(f"the older pod template cannot be rendered: {str(exc).splitlines()[0]}") from None


def _prune(value: Any) -> Any:
    """Drop empty mappings, lists and nulls, bottom up."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def extra_pod_config(text: str) -> dict[str, Any]:
    """The operator's additions in the older template ``text`` (empty for the shipped one); raises Refused."""
    docs = _render(text)
    kinds = [doc.get("kind") if isinstance(doc, dict) else type(doc).__name__ for doc in docs]
    if kinds != ["Pod"]:
        raise Refused(f"the older pod template renders {kinds}, not one Pod: convert it by hand (docs/migration.md)")
    pod = docs[0]
    metadata = pod.get("metadata") or {}
    for key in ("name", "namespace"):
        metadata.pop(key, None)
    for stock, key in ((STOCK_LABELS, "labels"), (STOCK_ANNOTATIONS, "annotations")):
        found = metadata.get(key) or {}
        for name, values in stock.items():
            if str(found.get(name)) in values:
                found.pop(name)
    spec = pod.get("spec") or {}
    if spec.get("restartPolicy") == "Never":
        spec.pop("restartPolicy")
    if spec.get("serviceAccountName") == MARK.format("kernel_service_account_name"):
        spec.pop("serviceAccountName")
    containers = spec.get("containers") or []
    kernel = [c for c in containers if isinstance(c, dict) and c.get("name") == MARK.format("kernel_pod_name")]
    if len(kernel) != 1:
        raise Refused("the older pod template has no container named {{ kernel_pod_name }}: convert it by hand")
    kernel[0]["name"] = "kernel"  # merged by name into this package's kernel container
    if kernel[0].get("image") == MARK.format("kernel_image"):
        kernel[0].pop("image")
    extra = _prune({"metadata": metadata, "spec": spec, **{k: v for k, v in pod.items() if k not in
                                                            ("apiVersion", "kind", "metadata", "spec")}})  # fmt: skip
    if extra.get("spec", {}).get("containers") == [{"name": "kernel"}]:
        del extra["spec"]["containers"]
        extra = _prune(extra)
    used = sorted(set(_MARKED.findall(json.dumps(extra))))
    if used:
        raise Refused(
            f"the older pod template's additions use per-kernel values ({', '.join(used)}): write a pod template of "
            "this package instead (docs/kubernetes.md, 'Pod templates')"
        )
    return extra
