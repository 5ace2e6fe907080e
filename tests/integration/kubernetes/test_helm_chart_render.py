"""The Helm chart (deploy/helm/gateway-provisioners) as helm renders it: lint clean, the RBAC exactly the shipped
manifests', NetworkPolicies with exactly the selectors and ports of each connection mode, kernel specs the provisioner
accepts. The test cluster's network plugin does not enforce NetworkPolicy, so what the policies say is checked here;
tests/integration/kubernetes/real/test_helm_chart.py installs the chart on the real cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway_provisioners.provisioners.kubernetes import KubernetesProvisioner

from ...support.helm import CHART, REPO, helm

MANIFESTS = REPO / "deploy" / "kubernetes"
SERVER = {"app.kubernetes.io/name": "gateway-provisioners", "app.kubernetes.io/instance": "rel",
          "app.kubernetes.io/component": "server"}  # fmt: skip
KERNELS = {"app.kubernetes.io/managed-by": "gateway-provisioners", "app.kubernetes.io/component": "kernel",
           "gateway-provisioners.io/server": "rel-gateway-provisioners"}  # fmt: skip


def render(*sets: str, namespace: str = "jupyter") -> dict[tuple[str, str], dict[str, Any]]:
    """The chart's objects rendered for release "rel", keyed (kind, name)."""
    args = [arg for s in sets for arg in ("--set", s)]
    result = helm("template", "rel", str(CHART), "--namespace", namespace, *args)
    assert result.returncode == 0, result.stderr
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def manifest_rules(name: str) -> list[dict[str, Any]]:
    docs = list(yaml.safe_load_all((MANIFESTS / name).read_text()))
    return list(docs[0]["rules"])


def test_lint_is_clean() -> None:
    result = helm("lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


def test_objects_and_rbac_of_a_shared_namespace() -> None:
    objects = render()
    assert sorted(objects) == sorted([
        ("ServiceAccount", "rel-gateway-provisioners"), ("Role", "rel-gateway-provisioners"),
        ("RoleBinding", "rel-gateway-provisioners"), ("ConfigMap", "rel-gateway-provisioners"),
        ("Secret", "rel-gateway-provisioners"), ("Deployment", "rel-gateway-provisioners"),
        ("Service", "rel-gateway-provisioners"), ("NetworkPolicy", "rel-gateway-provisioners-server"),
        ("NetworkPolicy", "rel-gateway-provisioners-kernels"),
        # the pre-delete hook that stops the server before its RBAC goes (deleted by helm once it has run)
        ("ServiceAccount", "rel-gateway-provisioners-uninstall"), ("Role", "rel-gateway-provisioners-uninstall"),
        ("RoleBinding", "rel-gateway-provisioners-uninstall"), ("Job", "rel-gateway-provisioners-uninstall"),
    ])  # fmt: skip
    hook = objects[("Role", "rel-gateway-provisioners-uninstall")]
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
    assert hook["rules"] == [
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "resourceNames": ["rel-gateway-provisioners"],
         "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    ]  # fmt: skip
    job = objects[("Job", "rel-gateway-provisioners-uninstall")]["spec"]["template"]["spec"]["containers"][0]
    selector = {e["name"]: e["value"] for e in job["env"]}["SELECTOR"]
    assert dict(pair.split("=") for pair in selector.split(",")) == SERVER
    role = objects[("Role", "rel-gateway-provisioners")]
    assert role["metadata"]["namespace"] == "jupyter"  # kernels in the release's namespace by default
    assert role["rules"] == manifest_rules("rbac-shared-namespace.yaml")
    binding = objects[("RoleBinding", "rel-gateway-provisioners")]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "rel-gateway-provisioners", "namespace": "jupyter"}
    ]
    pod = objects[("Deployment", "rel-gateway-provisioners")]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "rel-gateway-provisioners"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000


def test_rbac_of_a_namespace_per_kernel_is_the_cluster_role_manifest() -> None:
    objects = render("kernels.namespacePerKernel=true")
    assert ("Role", "rel-gateway-provisioners") not in objects
    role = objects[("ClusterRole", "rel-gateway-provisioners-jupyter")]
    assert role["rules"] == manifest_rules("rbac-namespace-per-kernel.yaml")
    binding = objects[("ClusterRoleBinding", "rel-gateway-provisioners-jupyter")]
    assert binding["roleRef"]["name"] == "rel-gateway-provisioners-jupyter"
    # per-kernel namespaces do not exist at install time: only the server's policy can be installed
    assert [name for kind, name in objects if kind == "NetworkPolicy"] == ["rel-gateway-provisioners-server"]


def test_network_policies_of_assigned_mode() -> None:
    objects = render(namespace="jupyter")
    server = objects[("NetworkPolicy", "rel-gateway-provisioners-server")]["spec"]
    assert server == {
        "podSelector": {"matchLabels": SERVER},
        "policyTypes": ["Ingress"],
        "ingress": [{"ports": [{"protocol": "TCP", "port": 8888}]}],  # clients only: no kernel connects back
    }
    kernels = objects[("NetworkPolicy", "rel-gateway-provisioners-kernels")]
    assert kernels["metadata"]["namespace"] == "jupyter"
    assert kernels["spec"] == {
        "podSelector": {"matchLabels": KERNELS},
        "policyTypes": ["Ingress"],
        "ingress": [{
            "ports": [{"protocol": "TCP", "port": 50000, "endPort": 50999}],  # 5 ZMQ ports + control, from the range
            "from": [{"podSelector": {"matchLabels": SERVER},
                      "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "jupyter"}}}],
        }],
    }  # fmt: skip
    deployment = objects[("Deployment", "rel-gateway-provisioners")]
    assert deployment["spec"]["template"]["metadata"]["labels"] == SERVER
    assert objects[("Service", "rel-gateway-provisioners")]["spec"]["selector"] == SERVER


def test_network_policies_of_callback_mode_in_another_namespace() -> None:
    objects = render("kernels.connectionMode=callback", "kernels.namespace=kernels", "kernels.portRange=41000..41009",
                     "networkPolicy.serverClients[0].namespaceSelector.matchLabels.team=data")  # fmt: skip
    server = objects[("NetworkPolicy", "rel-gateway-provisioners-server")]["spec"]
    assert server["ingress"] == [
        {"ports": [{"protocol": "TCP", "port": 8888}],
         "from": [{"namespaceSelector": {"matchLabels": {"team": "data"}}}]},
        {"ports": [{"protocol": "TCP", "port": 8877}],  # the response port, from this release's kernels only
         "from": [{"podSelector": {"matchLabels": KERNELS},
                   "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kernels"}}}]},
    ]  # fmt: skip
    kernels = objects[("NetworkPolicy", "rel-gateway-provisioners-kernels")]
    assert kernels["metadata"]["namespace"] == "kernels"
    assert kernels["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 41000, "endPort": 41009}]
    container = objects[("Deployment", "rel-gateway-provisioners")]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["GP_RESPONSE_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["GP_RESPONSE_PORT"] == "8877" and env["GP_RESPONSE_PORT_RETRIES"] == "0"
    assert objects[("Role", "rel-gateway-provisioners")]["metadata"]["namespace"] == "kernels"


def test_kernel_specs_are_what_the_provisioner_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GP_IMAGE_NAME", raising=False)
    objects = render()
    data = objects[("ConfigMap", "rel-gateway-provisioners")]["data"]
    spec = json.loads(data["python-k8s.kernel.json"])
    assert spec["argv"] == ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    provisioner = spec["metadata"]["kernel_provisioner"]
    assert provisioner["provisioner_name"] == "kubernetes-provisioner"
    config = provisioner["config"]
    # the chart's default kernel image is the provisioner's default, the one the documented recipe builds
    assert config["image_name"] == KubernetesProvisioner().image_name == "gateway-provisioners/kernel-py:latest"
    assert config["allowed_images"] == []  # closed: a client's KERNEL_IMAGE is refused
    assert config["extra_pod_config"] == {
        "metadata": {"labels": {"gateway-provisioners.io/server": KERNELS["gateway-provisioners.io/server"]}}
    }  # what the kernels' NetworkPolicy selects
    settings = KubernetesProvisioner(**config).pod_settings()  # every key is a real setting, every value valid
    assert (settings.namespace, settings.shared_namespace) == ("jupyter", True)
    server = json.loads(data["jupyter_server_config.json"])
    assert server["ServerApp"]["jpserver_extensions"] == {"gateway_provisioners.server": True}
    assert server["ServerApp"]["terminals_enabled"] is False  # no shell next to the ServiceAccount's token
    assert server["MappingKernelManager"] == {"default_kernel_name": "python-k8s"}
    assert server["KernelSpecManager"] == {"ensure_native_kernel": False, "allowed_kernelspecs": ["python-k8s"]}
    assert server["GatewayProvisionersServer"]["keep_kernels_on_shutdown"] is False


SCALA_SPEC = '[{"name": "scala-k8s", "displayName": "Scala", "language": "scala", "image": "scala", "argv": ["x"]}]'


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (["--set", "kernels.portRange=0..0"], 'kernels.portRange "0..0": need 1024 <= lower'),
        (["--set", "kernels.portRange=50000"], 'kernels.portRange "50000" must be "lower..upper"'),
        (
            ["--set", "kernels.connectionMode=stdout"],
            'kernels.connectionMode "stdout" must be "assigned" or "callback"',
        ),
        (
            ["--set-json", f"kernels.specs={SCALA_SPEC}"],
            'kernel spec "scala-k8s": image "scala" is not a key of kernels.images',
        ),
    ],
)
def test_bad_values_fail_with_one_line(setting: list[str], message: str) -> None:
    result = helm("template", "rel", str(CHART), *setting)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_chart_sources_are_in_the_repository() -> None:
    assert (CHART / "Chart.yaml").exists() and (CHART / "README.md").exists()
    assert not list(Path(CHART).rglob("*.tgz")), "no packaged charts committed"
