"""The operator's path of docs/kubernetes.md, on the real cluster: `jupyter-image-bootstrap build` (the kernel_image
fixture) → the image into the cluster (`k8s-cluster.sh load-image`) → the RBAC manifest (server_kubeconfig) →
`jupyter-k8s-spec install` → a notebook executed through the spec with nbclient."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from .conftest import NAMESPACE, Cluster

pytestmark = pytest.mark.integration

CELLS = [
    "import os, socket\nhost = socket.gethostname()\nprint(host.startswith('kernel-'))",
    "import sys\nprint(sys.version_info >= (3, 9))",
    "print(os.getuid())",
    "data = [i * i for i in range(10)]\nprint(sum(data))",
    # a kernel in the shared namespace gets no service-account token
    "print(os.path.exists('/var/run/secrets/kubernetes.io/serviceaccount/token'))",
]


async def test_spec_from_jupyter_k8s_spec_runs_a_notebook(
    cluster: Cluster, kernel_image: str, server_kubeconfig: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = tmp_path / "prefix"
    install = subprocess.run(
        [sys.executable, "-m", "gateway_provisioners_cli.k8s_spec", "install", "--kernel-name", "k8s-op",
         "--image-name", kernel_image, "--namespace", NAMESPACE, "--prefix", str(prefix)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    spec_file = prefix / "share" / "jupyter" / "kernels" / "k8s-op" / "kernel.json"
    assert json.loads(spec_file.read_text())["metadata"]["kernel_provisioner"]["provisioner_name"] == (
        "kubernetes-provisioner"
    )
    # The server's environment, as an operator sets it (docs/kubernetes.md): its kubeconfig, and no pulls here.
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    monkeypatch.setenv("GP_KUBECONFIG", server_kubeconfig)
    monkeypatch.setenv("GP_IMAGE_PULL_POLICY", "Never")
    monkeypatch.setenv("KERNEL_USERNAME", "jovyan")  # the suite may run as root, which specs refuse by default
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code) for code in CELLS])
    client = NotebookClient(nb, kernel_name="k8s-op", timeout=120, startup_timeout=120)
    await client.async_execute()
    outputs = ["".join(o.get("text", "") for o in cell.outputs).strip() for cell in nb.cells]
    assert outputs == ["True", "True", "1000", "285", "False"], outputs
