"""A kernel spec written by the older jupyter-k8s-spec (0.5.0) with a customised pod template, converted by
jupyter-gp-migrate, runs a kernel through kubernetes-provisioner against the API emulator; the template's additions
(a node selector, an environment variable) reach the pod and the kernel."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from jupyter_client.manager import AsyncKernelManager

from gateway_provisioners.agent import agent_path
from tests.conftest import AS_ROOT
from tests.support.older_package import older_spec

from ...support.kernels import run_code
from . import kubelet as kubelet_module
from .conftest import IMAGE, NAMESPACE
from .emulator import KubeEmulator
from .kubelet import Kubelet

pytestmark = pytest.mark.integration


async def test_older_k8s_spec_with_custom_template_converted_runs(
    kube: KubeEmulator, kubelet: Kubelet, kubeconfig: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernels = older_spec(tmp_path / "prefix", "jupyter-k8s-spec", "--kernel-name", "old_k8s", "--image-name", IMAGE)
    template = kernels / "old_k8s" / "scripts" / "kernel-pod.yaml.j2"
    text = template.read_text().replace("  restartPolicy: Never\n", "  restartPolicy: Never\n  nodeSelector:\n"
                                        "    pool: kernels\n")  # fmt: skip
    template.write_text(text.replace("    env:\n", '    env:\n    - name: TEAM\n      value: "analytics"\n', 1))
    migrate = subprocess.run([str(Path(sys.executable).parent / "jupyter-gp-migrate"), str(kernels / "old_k8s")],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr

    # The operator's server settings for this cluster (the emulator); the spec itself is the converted one.
    monkeypatch.setenv("JUPYTER_PATH", str(kernels.parent))
    monkeypatch.setenv("KERNEL_USERNAME", "gp-tester")
    if AS_ROOT:
        monkeypatch.setenv("GP_ALLOW_ROOT_KERNELS", "true")
    monkeypatch.setenv("GP_KUBECONFIG", kubeconfig)
    monkeypatch.setenv("GP_NAMESPACE", NAMESPACE)
    monkeypatch.setenv("GP_AGENT_PYTHON", sys.executable)
    monkeypatch.setenv("GP_AGENT_PATH", str(agent_path()))
    monkeypatch.setenv("GP_KERNEL_IP", "127.0.0.1")  # the "pod" is this machine: bind loopback only
    # The converted argv runs the image's python3; in the emulated pod that is this environment's.
    monkeypatch.setitem(
        kubelet_module.BASE_ENV, "PATH", f"{Path(sys.executable).parent}:{kubelet_module.BASE_ENV.get('PATH', '')}"
    )

    km = AsyncKernelManager(kernel_name="old_k8s")
    await km.start_kernel()
    try:
        pod = kube.get("pods", NAMESPACE, f"kernel-{km.kernel_id}")
        assert pod is not None
        assert pod["spec"]["nodeSelector"] == {"pool": "kernels"}
        reply, output = await run_code(km, "import os; print(6 * 7, os.environ.get('TEAM'))")
        assert reply["status"] == "ok" and output == "42 analytics\n"
    finally:
        await km.shutdown_kernel(now=False)
