"""Fixtures for the tests on a real Kubernetes cluster: the one ``scripts/k8s-cluster.sh up`` starts on this machine.

The cluster is found through ``scripts/k8s-cluster.sh env``. When none is up the tests skip, saying so, unless
GP_K8S_REAL_CLUSTER=1 (scripts/test.sh sets it after bringing the cluster up): then a missing cluster fails them.
The server side talks to the cluster only with the token of a ServiceAccount bound by the RBAC manifests under
deploy/kubernetes/ (the files docs/kubernetes.md shows), applied as they are: if they lack a verb, the tests fail.
The kernel image is built by ``jupyter-image-bootstrap build`` (as for the Docker tests, cached by content) and
copied into the cluster's containerd (``k8s-cluster.sh load-image``); pods never pull (imagePullPolicy Never).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway_provisioners.adapters.kubernetes import close_hubs

from ....conftest import write_kernel_spec
from ....support.images import build_kernel_image

REPO = Path(__file__).resolve().parents[4]
SCRIPT = REPO / "scripts" / "k8s-cluster.sh"
SHARED_RBAC = REPO / "deploy" / "kubernetes" / "rbac-shared-namespace.yaml"
PER_KERNEL_RBAC = REPO / "deploy" / "kubernetes" / "rbac-namespace-per-kernel.yaml"
NAMESPACE = "kernels"  # the namespace the shared-namespace manifest grants
KERNEL_IMAGE = "gp-test-kernel:k8s"  # a tag of its own: the Docker tests of another checkout may rebuild theirs
KERNEL_ARGV = ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
REQUIRED = os.environ.get("GP_K8S_REAL_CLUSTER") == "1"


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"GP_K8S_REAL_CLUSTER=1 but {reason}")
    pytest.skip(reason)


@dataclass
class Cluster:
    """The running cluster: its env lines, and admin access for the tests' own checks (never for the server side)."""

    env: dict[str, str]

    @property
    def node_ip(self) -> str:
        return self.env["GP_K8S_NODE_IP"]

    def script(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"k8s-cluster.sh {' '.join(args)}: {result.stderr[-2000:]}"
        return result.stdout

    def kubectl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [f"{self.env['GP_K8S_BIN']}/kubectl", "--kubeconfig", self.env["KUBECONFIG"], *args],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if check:
            assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr[-2000:]}"
        return result

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The object as the API has it, or None when it does not exist."""
        ns = ["-n", namespace] if namespace else []
        result = self.kubectl("get", kind, name, *ns, "-o", "json", check=False)
        if result.returncode != 0:
            assert "NotFound" in result.stderr, result.stderr
            return None
        return dict(json.loads(result.stdout))

    def wait_until(self, what: str, condition: Callable[[], Any], timeout: float = 60) -> Any:
        """Poll ``condition`` until it returns something true; fail with ``what`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: not within {timeout:.0f} s")
            time.sleep(0.2)

    def audit_mark(self) -> int:
        """A position in the apiserver's audit log (requests of the Jupyter server's ServiceAccounts only)."""
        return Path(self.env["GP_K8S_AUDIT_LOG"]).stat().st_size

    def requests_since(self, mark: int) -> list[str]:
        """The server side's API requests after ``mark``, in order: "VERB /path" (query left out), one per request."""
        seen: set[str] = set()
        requests: list[str] = []
        with open(self.env["GP_K8S_AUDIT_LOG"], "rb") as log:
            log.seek(mark)
            for line in log.read().decode().splitlines():
                event = json.loads(line)
                if event["auditID"] in seen:  # a watch logs ResponseStarted and ResponseComplete
                    continue
                seen.add(event["auditID"])
                requests.append(f"{event['verb'].upper()} {event['requestURI'].split('?', 1)[0]}")
        return requests

    def ctr(self, *args: str) -> str:
        result = subprocess.run(
            ["ctr", "--address", self.env["GP_K8S_CONTAINERD"], "-n", "k8s.io", *args],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    if not SCRIPT.exists():
        _unavailable(f"{SCRIPT} is missing")
    result = subprocess.run(["bash", str(SCRIPT), "env"], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        _unavailable("no real Kubernetes cluster is up on this machine (run `sh scripts/k8s-cluster.sh up` as root)")
    env = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    c = Cluster(env)
    if c.kubectl("get", "--raw", "/readyz", check=False).returncode != 0:
        _unavailable("the cluster's kube-apiserver does not answer /readyz")
    return c


@pytest.fixture(scope="session")
def kernel_image(cluster: Cluster) -> str:
    """The kernel image: built with jupyter-image-bootstrap (cached by content), then imported into the cluster."""
    started = time.monotonic()
    build_kernel_image(KERNEL_IMAGE, _unavailable)
    cluster.script("load-image", KERNEL_IMAGE, timeout=300)
    print(f"\nkernel image {KERNEL_IMAGE} in the cluster after {time.monotonic() - started:.1f} s", file=sys.stderr)
    return KERNEL_IMAGE


def _server_kubeconfig(cluster: Cluster, manifest: Path) -> str:
    return cluster.script("server-kubeconfig", str(manifest)).strip().splitlines()[-1]


@pytest.fixture(scope="session")
def server_kubeconfig(cluster: Cluster) -> str:
    """A kubeconfig for the ServiceAccount that deploy/kubernetes/rbac-shared-namespace.yaml binds, and nothing else."""
    if cluster.get("namespace", NAMESPACE) is None:
        cluster.kubectl("create", "namespace", NAMESPACE)
    return _server_kubeconfig(cluster, SHARED_RBAC)


@pytest.fixture(scope="session")
def per_kernel_kubeconfig(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The same for deploy/kubernetes/rbac-namespace-per-kernel.yaml, bound to a ServiceAccount of its own.

    The manifest is applied with only its subject renamed (jupyter-server → jupyter-server-nspk), so that the
    shared-namespace tests cannot borrow its cluster-wide rights.
    """
    text = PER_KERNEL_RBAC.read_text()
    assert text.count("name: jupyter-server,") == 1
    renamed = tmp_path_factory.mktemp("rbac") / PER_KERNEL_RBAC.name
    renamed.write_text(
        text.replace("name: jupyter-server,", "name: jupyter-server-nspk,").replace(
            "metadata: {name: gateway-provisioners}\nroleRef", "metadata: {name: gateway-provisioners-nspk}\nroleRef"
        )
    )
    return _server_kubeconfig(cluster, renamed)


@pytest.fixture(autouse=True)
async def _fresh_hubs() -> Any:
    """Each test's event loop gets its own shared client and watches; they close with the test."""
    yield
    await close_hubs()


@pytest.fixture
def real_spec(jupyter_path: Path, kernel_image: str, server_kubeconfig: str) -> Callable[..., str]:
    """Write a kernel spec for kubernetes-provisioner on the real cluster, ``config`` overriding; returns its name."""

    def write(name: str = "gp-k8s-real", argv: list[str] | None = None, metadata: dict[str, Any] | None = None,
              **config: Any) -> str:  # fmt: skip
        full = {
            "kubeconfig": server_kubeconfig,
            "namespace": NAMESPACE,
            "image_name": kernel_image,
            "image_pull_policy": "Never",  # no registry anywhere: the image was imported into containerd
            "launch_timeout": 120,
            **config,
        }
        write_kernel_spec(jupyter_path, name, argv=argv or KERNEL_ARGV, provisioner="kubernetes-provisioner",
                          config=full, metadata=metadata)  # fmt: skip
        return name

    return write


@pytest.fixture
def pods_left(cluster: Cluster) -> Iterator[None]:
    """Fail a test that leaves a kernel pod of its own behind in the shared namespace."""
    before = set(_kernel_pods(cluster))
    yield
    left = set(_kernel_pods(cluster)) - before
    for name in left:
        cluster.kubectl("delete", "pod", name, "-n", NAMESPACE, "--grace-period=0", "--wait=false", check=False)
    assert not left, f"pods left behind: {sorted(left)}"


def _kernel_pods(cluster: Cluster) -> list[str]:
    out = cluster.kubectl("get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=kernel", "-o",
                          "jsonpath={.items[*].metadata.name}").stdout  # fmt: skip
    return out.split()
