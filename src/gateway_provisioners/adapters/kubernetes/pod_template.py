"""The kernel pod: rendered from a Jinja2 template so that no value can change the YAML's structure.

Every ``{{ expression }}`` in a template is rendered as one JSON value (JSON is YAML): a client value containing a
newline, a quote, ``{{``, ``&anchor`` or ``- item`` stays the string it was, inside the field it was put in. Templates
render in Jinja2's sandbox. After rendering, the result must be a Pod mapping; the operator's ``extra_pod_config`` is
merged into it and the secure defaults are applied and checked (:func:`enforce_security`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from ...core.errors import ConfigurationError

TEMPLATE_NAME = "kernel-pod.yaml.j2"
TOKEN_DIR = "/var/run/secrets/gateway-provisioners"
TOKEN_KEY = "token"
PARAMS_KEY = "params.json"


def default_template(name: str = TEMPLATE_NAME) -> str:
    """The text of a template shipped in this package's ``templates`` folder."""
    return resources.files(__package__).joinpath("templates").joinpath(name).read_text()  # one part: 3.10


def _scalar(value: Any) -> str:
    """Jinja2's ``finalize``: every expression becomes one JSON value (a string is always quoted)."""
    if hasattr(value, "__html__"):  # Markup from a filter: still just text
        value = str(value)
    return json.dumps(value, sort_keys=False)


@lru_cache(maxsize=32)
def _compile(text: str) -> Any:
    try:
        from jinja2 import StrictUndefined
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise ConfigurationError("pod templates need jinja2: pip install 'gateway_provisioners[k8s]'") from None
    env = ImmutableSandboxedEnvironment(finalize=_scalar, undefined=StrictUndefined, autoescape=False)
    try:
        return env.from_string(text)
    except Exception as exc:
        raise ConfigurationError(f"the pod template does not compile: {exc}") from None


def load_template(path: str = "", what: str = "pod") -> str:
    """The operator's template at ``path``; the shipped pod template when ``path`` is empty, a shipped template when
    it is the bare name of one (``spark-application.yaml.j2``)."""
    if not path:
        return default_template()
    if "/" not in path and resources.files(__package__).joinpath("templates").joinpath(path).is_file():
        return default_template(path)
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the {what} template {path}: {exc.strerror}") from None


def render_template(template: str, context: dict[str, Any], what: str = "pod") -> dict[str, Any]:
    """Render ``template`` with ``context`` and parse it into one mapping; raises :class:`ConfigurationError`."""
    import yaml

    try:
        text = _compile(template).render(**context)
    except ConfigurationError:
        raise
    except Exception as exc:
        raise ConfigurationError(f"the {what} template cannot be rendered: {exc}") from None
    try:
        body = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"the rendered {what} template is not valid YAML: {exc}") from None
    if not isinstance(body, dict):
        raise ConfigurationError(f"the {what} template must render one mapping")
    return body


def render_pod(template: str, context: dict[str, Any]) -> dict[str, Any]:
    """Render ``template`` with ``context`` and parse it into a Pod dict; raises :class:`ConfigurationError`."""
    pod = render_template(template, context)
    if pod.get("kind") != "Pod" or not isinstance(pod.get("spec"), dict):
        raise ConfigurationError("the pod template must render one mapping with kind: Pod and a spec")
    if not any(c.get("name") == "kernel" for c in pod["spec"].get("containers") or [] if isinstance(c, dict)):
        raise ConfigurationError("the pod template must have a container named 'kernel'")
    return pod


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` merged into a copy of ``base``: mappings merge, lists of named items merge by name, else replace."""
    result = copy.deepcopy(base)
    for key, value in extra.items():
        current = result.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            result[key] = deep_merge(current, value)
        elif (
            isinstance(current, list)
            and isinstance(value, list)
            and all(isinstance(v, dict) and "name" in v for v in current + value)
        ):
            merged = {item["name"]: item for item in current}
            for item in value:
                merged[item["name"]] = deep_merge(merged.get(item["name"], {}), item)
            result[key] = list(merged.values())
        else:
            result[key] = copy.deepcopy(value)
    return result


def enforce_security(pod: dict[str, Any], prohibited_uids: Iterable[int], prohibited_gids: Iterable[int]) -> None:
    """Apply the secure defaults where a template left them out, and refuse a pod that breaks them.

    Defaults: runAsNonRoot, no privilege escalation, not privileged, every capability dropped. Refused: a user or group
    id (pod or container level, compared as numbers, so "0", 0 and "00" are the same root) in the prohibited lists,
    runAsNonRoot false, privileged or privilege escalation turned on, capabilities added.
    """
    uids, gids = {int(u) for u in prohibited_uids}, {int(g) for g in prohibited_gids}
    spec = pod["spec"]
    pod_ctx = spec.setdefault("securityContext", {}) or {}
    spec["securityContext"] = pod_ctx
    pod_ctx.setdefault("runAsNonRoot", True)
    contexts = [("pod", pod_ctx)]
    for container in list(spec.get("containers") or []) + list(spec.get("initContainers") or []):
        ctx = container.setdefault("securityContext", {}) or {}
        container["securityContext"] = ctx
        ctx.setdefault("runAsNonRoot", True)
        ctx.setdefault("allowPrivilegeEscalation", False)
        ctx.setdefault("privileged", False)
        caps = ctx.setdefault("capabilities", {}) or {}
        ctx["capabilities"] = caps
        caps.setdefault("drop", ["ALL"])
        if caps.get("add"):
            raise ConfigurationError(f"container {container.get('name')!r} adds capabilities {caps['add']}: refused")
        if ctx.get("privileged") is True or ctx.get("allowPrivilegeEscalation") is True:
            raise ConfigurationError(f"container {container.get('name')!r} asks for privileges: refused")
        contexts.append((f"container {container.get('name')!r}", ctx))
    for where, ctx in contexts:
        if ctx.get("runAsNonRoot") is False:
            raise ConfigurationError(f"{where} sets runAsNonRoot: false; kernels never run as root")
        for field, prohibited in (("runAsUser", uids), ("runAsGroup", gids), ("fsGroup", gids)):
            if field in ctx and ctx[field] is not None:
                try:
                    number = int(str(ctx[field]).strip())
                except ValueError:
                    raise ConfigurationError(f"{where} {field} {ctx[field]!r} is not a number") from None
                if number in prohibited:
                    raise ConfigurationError(
                        f"{where} {field} {number} is prohibited (prohibited_uids / prohibited_gids)"
                    )
                ctx[field] = number
