"""The pod template: hostile values stay inside the field they were put in, and the secure defaults hold."""

from __future__ import annotations

import pytest

pytest.importorskip("jinja2", reason="the k8s extra (jinja2) is not installed")
pytest.importorskip("yaml", reason="the k8s extra (pyyaml) is not installed")

from gateway_provisioners.adapters.kubernetes import KubernetesBackend, PodSettings
from gateway_provisioners.adapters.kubernetes.hub import KubeHub
from gateway_provisioners.adapters.kubernetes.pod_template import (
    deep_merge,
    enforce_security,
    render_pod,
)
from gateway_provisioners.core.errors import ConfigurationError
from gateway_provisioners.core.launch import ConnectionMode, LaunchSpec

HOSTILE = [
    "a\nprivileged: true",
    'x" \nhostNetwork: true\n#',
    "{{ 7 * 7 }}",
    "{% raw %}x{% endraw %}",
    "&anchor x",
    "*anchor",
    "- item\n- other",
    "key: value",
    "'single' \"double\"",
    "\\u0000 \x00 nul",
    "--- !!python/object:os.system 'echo x'",
    "]} {[",
    "\u2028line separator\u2029",
]


def backend(**settings) -> KubernetesBackend:  # type: ignore[no-untyped-def]
    return KubernetesBackend(KubeHub(client=None), PodSettings(**settings))  # type: ignore[arg-type]


def spec(**env: str) -> LaunchSpec:
    return LaunchSpec("4d2c7f0e-1111-2222-3333-444455556666", ["python", "-m", "ipykernel_launcher", "-f",
                      "{connection_file}"], env=dict(env), username="alice", kernel_name="Python",
                      mode=ConnectionMode.ASSIGNED)  # fmt: skip


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_keep_the_yaml_structure(value: str) -> None:
    """Every value a client or a kernel spec controls is rendered as one scalar: the pod's shape never changes."""
    launch = spec(KERNEL_EXTRA=value)
    launch.username = value
    launch.kernel_name = value
    plan = backend().plan(launch)
    pod = plan.pod
    reference = backend().plan(spec(KERNEL_EXTRA="plain")).pod
    assert set(pod) == set(reference)
    assert set(pod["spec"]) == set(reference["spec"])
    assert set(pod["spec"]["containers"][0]) == set(reference["spec"]["containers"][0])
    container = pod["spec"]["containers"][0]
    assert plan.params["env"]["KERNEL_EXTRA"] == value
    assert not container.get("env"), "nothing of the launch (key, token, parameters) is in the pod spec"
    assert container["command"][2:4] == ["--params", "/var/run/secrets/gateway-provisioners/params.json"]
    assert pod["spec"]["containers"][0]["securityContext"]["privileged"] is False
    assert "hostNetwork" not in pod["spec"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["gateway-provisioners/username"] == value
    assert annotations["gateway-provisioners/kernel-name"] == value


@pytest.mark.parametrize("value", HOSTILE)
def test_render_keeps_every_hostile_string_verbatim(value: str) -> None:
    template = "kind: Pod\nmetadata:\n  name: {{ name }}\n  labels: {{ labels }}\nspec:\n  containers:\n" \
               "    - name: kernel\n      image: {{ image }}\n      args: [{{ arg }}, {{ arg }}]\n"  # fmt: skip
    pod = render_pod(template, {"name": value, "labels": {value: value}, "image": value, "arg": value})
    assert pod["metadata"] == {"name": value, "labels": {value: value}}
    assert pod["spec"]["containers"] == [{"name": "kernel", "image": value, "args": [value, value]}]


def test_template_must_render_a_pod_with_a_kernel_container() -> None:
    with pytest.raises(ConfigurationError, match="kind: Pod"):
        render_pod("kind: Service\nspec: {}\n", {})
    with pytest.raises(ConfigurationError, match="container named 'kernel'"):
        render_pod("kind: Pod\nspec:\n  containers: [{name: other}]\n", {})
    with pytest.raises(ConfigurationError, match="cannot be rendered"):
        render_pod("kind: Pod\nspec: {{ missing }}\n", {})
    with pytest.raises(ConfigurationError, match="cannot be rendered"):  # the sandbox
        render_pod("kind: Pod\nspec: {{ ''.__class__.__mro__ }}\n", {})


def test_secure_defaults_and_numeric_uid_checks() -> None:
    pod = backend().plan(spec()).pod
    enforce_security(pod, [0], [0])
    container = pod["spec"]["containers"][0]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] == 1000
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "privileged": False, "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }  # fmt: skip
    for uid in (0, "0", "00", " 0"):
        bad = deep_merge(pod, {"spec": {"containers": [{"name": "kernel", "securityContext": {"runAsUser": uid}}]}})
        with pytest.raises(ConfigurationError, match="runAsUser 0 is prohibited"):
            enforce_security(bad, [0], [0])
    with pytest.raises(ConfigurationError, match="runAsGroup 5 is prohibited"):
        enforce_security(deep_merge(pod, {"spec": {"securityContext": {"runAsGroup": "005"}}}), [0], ["5"])
    with pytest.raises(ConfigurationError, match="privileges"):
        enforce_security(
            deep_merge(pod, {"spec": {"containers": [{"name": "kernel", "securityContext": {"privileged": True}}]}}),
            [0], [0],
        )  # fmt: skip
    with pytest.raises(ConfigurationError, match="adds capabilities"):
        caps = {"capabilities": {"add": ["SYS_ADMIN"]}}
        enforce_security(deep_merge(pod, {"spec": {"containers": [{"name": "kernel", "securityContext": caps}]}}),
                         [0], [0])  # fmt: skip
    with pytest.raises(ConfigurationError, match="runAsNonRoot: false"):
        enforce_security(deep_merge(pod, {"spec": {"securityContext": {"runAsNonRoot": False}}}), [0], [0])


def test_extra_pod_config_merges_named_lists() -> None:
    pod = backend(extra_pod_config={"spec": {"priorityClassName": "kernels", "containers": [
        {"name": "kernel", "env": [{"name": "EXTRA", "value": "1"}]}, {"name": "sidecar", "image": "s:1"}]}}).plan(
        spec()).pod  # fmt: skip
    names = [c["name"] for c in pod["spec"]["containers"]]
    assert names == ["kernel", "sidecar"] and pod["spec"]["priorityClassName"] == "kernels"


def test_token_never_in_the_pod() -> None:
    launch = spec()
    pod = backend().plan(launch).pod
    from gateway_provisioners.core.handshake import encode_token

    assert encode_token(launch.token) not in str(pod)
