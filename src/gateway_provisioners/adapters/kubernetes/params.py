"""The per-launch ``KERNEL_*`` values the Kubernetes provisioner accepts from clients, and how they are checked.

Each value is untrusted: it is parsed against a :class:`Param` (pattern, bounds) by the core before any template
sees it, and the structured ones (node selector, tolerations, volumes) are parsed here into plain data of a fixed
shape. They are honoured only where the operator allows them (see the provisioner's ``allow_*`` settings).
"""

from __future__ import annotations

import json
import re
from typing import Any

from ...core.errors import ConfigurationError
from ...core.launch import Param

DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?"
CPU = r"([0-9]{1,4}(\.[0-9]{1,3})?|[0-9]{1,7}m)"
MEMORY = r"[0-9]{1,9}(\.[0-9]{1,3})?(Ki|Mi|Gi|Ti|k|M|G|T)?"
IMAGE = r"[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}"
LABEL_KEY = r"([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
LABEL_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?"

K8S_PARAMS: tuple[Param, ...] = (
    Param("KERNEL_NAMESPACE", pattern=DNS_LABEL, help="a DNS label: a-z, 0-9 and -, up to 63"),
    Param("KERNEL_POD_NAME", pattern=DNS_LABEL, help="a DNS label: a-z, 0-9 and -, up to 63"),
    Param("KERNEL_SERVICE_ACCOUNT_NAME", pattern=DNS_SUBDOMAIN, help="a DNS subdomain: a-z, 0-9, - and ."),
    Param("KERNEL_IMAGE", pattern=IMAGE, help="an image reference such as registry/name:tag"),
    Param("KERNEL_CPUS", pattern=CPU, help="CPU cores, e.g. 0.5 or 500m"),
    Param("KERNEL_CPUS_LIMIT", pattern=CPU, help="CPU cores, e.g. 2 or 2000m"),
    Param("KERNEL_MEMORY", pattern=MEMORY, help="bytes with an optional unit, e.g. 512Mi or 2Gi"),
    Param("KERNEL_MEMORY_LIMIT", pattern=MEMORY, help="bytes with an optional unit, e.g. 4Gi"),
    Param("KERNEL_GPUS", kind=int, minimum=0, maximum=64),
    Param("KERNEL_GPUS_LIMIT", kind=int, minimum=0, maximum=64),
    Param("KERNEL_UID", kind=int, minimum=0, maximum=2**31 - 1),
    Param("KERNEL_GID", kind=int, minimum=0, maximum=2**31 - 1),
    Param("KERNEL_NODE_SELECTOR", help="JSON object of label: value"),
    Param("KERNEL_TOLERATIONS", help="JSON list of tolerations"),
    Param("KERNEL_VOLUMES", help="JSON list of volumes (persistentVolumeClaim, configMap, emptyDir)"),
    Param("KERNEL_VOLUME_MOUNTS", help="JSON list of volume mounts"),
)

_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
_VOLUME_SOURCES = {"persistentVolumeClaim": {"claimName", "readOnly"}, "configMap": {"name", "optional"},
                   "emptyDir": {"medium", "sizeLimit"}}  # fmt: skip


def _json(name: str, raw: str, kind: type) -> Any:
    try:
        value = json.loads(raw)
    except ValueError:
        raise ConfigurationError(f"{name} is not valid JSON") from None
    if not isinstance(value, kind):
        raise ConfigurationError(f"{name} must be a JSON {'object' if kind is dict else 'list'}")
    return value


def _text(name: str, value: Any, pattern: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        raise ConfigurationError(f"{name}: {value!r} is not allowed here (must match {pattern})")
    return value


def node_selector(raw: str) -> dict[str, str]:
    value = _json("KERNEL_NODE_SELECTOR", raw, dict)
    return {
        _text("KERNEL_NODE_SELECTOR key", k, LABEL_KEY): _text("KERNEL_NODE_SELECTOR value", v, LABEL_VALUE)
        for k, v in value.items()
    }


def tolerations(raw: str) -> list[dict[str, Any]]:
    result = []
    for item in _json("KERNEL_TOLERATIONS", raw, list):
        if not isinstance(item, dict) or set(item) - _TOLERATION_KEYS:
            raise ConfigurationError(f"KERNEL_TOLERATIONS items may only have {', '.join(sorted(_TOLERATION_KEYS))}")
        clean: dict[str, Any] = {}
        for key, value in item.items():
            if key == "tolerationSeconds":
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise ConfigurationError("KERNEL_TOLERATIONS tolerationSeconds must be a whole number >= 0")
                clean[key] = value
            elif key == "operator":
                clean[key] = _text("KERNEL_TOLERATIONS operator", value, "Exists|Equal")
            elif key == "effect":
                clean[key] = _text("KERNEL_TOLERATIONS effect", value, "NoSchedule|PreferNoSchedule|NoExecute")
            else:
                clean[key] = _text(f"KERNEL_TOLERATIONS {key}", value, LABEL_KEY if key == "key" else LABEL_VALUE)
        result.append(clean)
    return result


def volumes(raw: str) -> list[dict[str, Any]]:
    result = []
    for item in _json("KERNEL_VOLUMES", raw, list):
        if not isinstance(item, dict) or len(item) != 2 or "name" not in item:
            raise ConfigurationError("KERNEL_VOLUMES items need a name and exactly one source")
        ((source, spec),) = [(k, v) for k, v in item.items() if k != "name"]
        allowed = _VOLUME_SOURCES.get(source)
        if allowed is None or not isinstance(spec, dict) or set(spec) - allowed:
            raise ConfigurationError(
                f"KERNEL_VOLUMES source {source!r} is not allowed (only {', '.join(sorted(_VOLUME_SOURCES))})"
            )
        clean = {k: _text(f"KERNEL_VOLUMES {k}", v, DNS_SUBDOMAIN + "|[0-9]+[A-Za-z]*|Memory") if isinstance(v, str)
                 else bool(v) for k, v in spec.items()}  # fmt: skip
        result.append({"name": _text("KERNEL_VOLUMES name", item["name"], DNS_LABEL), source: clean})
    return result


def volume_mounts(raw: str) -> list[dict[str, Any]]:
    result = []
    for item in _json("KERNEL_VOLUME_MOUNTS", raw, list):
        if (
            not isinstance(item, dict)
            or set(item) - {"name", "mountPath", "readOnly", "subPath"}
            or "mountPath" not in item
        ):
            raise ConfigurationError("KERNEL_VOLUME_MOUNTS items have name, mountPath and optionally readOnly, subPath")
        clean: dict[str, Any] = {
            "name": _text("KERNEL_VOLUME_MOUNTS name", item.get("name"), DNS_LABEL),
            "mountPath": _text("KERNEL_VOLUME_MOUNTS mountPath", item["mountPath"], r"/[A-Za-z0-9._/-]{0,250}"),
        }
        if ".." in clean["mountPath"].split("/"):
            raise ConfigurationError("KERNEL_VOLUME_MOUNTS mountPath may not contain ..")
        if "readOnly" in item:
            clean["readOnly"] = bool(item["readOnly"])
        if "subPath" in item:
            clean["subPath"] = _text(
                "KERNEL_VOLUME_MOUNTS subPath", item["subPath"], r"[A-Za-z0-9._-][A-Za-z0-9._/-]{0,250}"
            )
        result.append(clean)
    return result
