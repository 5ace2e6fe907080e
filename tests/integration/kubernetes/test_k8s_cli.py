"""``jupyter-k8s-spec install`` writes a complete kernel spec; ``reap`` removes orphaned pods from the emulator."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest
from click.testing import CliRunner

from gateway_provisioners_cli.k8s_spec import main
from gateway_provisioners_cli.kernelspec import unfilled

from .conftest import NAMESPACE
from .emulator import KubeEmulator

pytestmark = pytest.mark.integration


def test_install_dry_run_is_complete(tmp_path) -> None:  # type: ignore[no-untyped-def]
    template = tmp_path / "pod.yaml.j2"
    template.write_text("kind: Pod\nspec:\n  containers: [{name: kernel, image: {{ image }}}]\n")
    args = ["install", "--kernel-name", "k8s-py", "--image-name", "reg/kernel-py:1", "--namespace", "kernels"]
    result = CliRunner().invoke(main, [*args, "--pod-template", str(template), "--dry-run"])
    assert result.exit_code == 0, result.output
    spec = json.loads(result.output)
    config = spec["metadata"]["kernel_provisioner"]["config"]
    assert spec["metadata"]["kernel_provisioner"]["provisioner_name"] == "kubernetes-provisioner"
    assert config["image_name"] == "reg/kernel-py:1" and config["namespace"] == "kernels"
    assert config["pod_template"] == str(template.resolve())
    assert unfilled(spec) == []
    bad = tmp_path / "bad.j2"
    bad.write_text("{% if %}")
    result = CliRunner().invoke(main, ["install", "--kernel-name", "x", "--image-name", "i", "--pod-template",
                                       str(bad), "--dry-run"])  # fmt: skip
    assert result.exit_code != 0 and "does not compile" in result.output


async def test_reap_command(kube: KubeEmulator, kubeconfig: str) -> None:
    labels = {"app.kubernetes.io/managed-by": "gateway-provisioners", "app.kubernetes.io/component": "kernel"}
    for kernel_id in ("live", "dead"):
        kube._store("pods", NAMESPACE, {"metadata": {"name": f"kernel-{kernel_id}",
                    "labels": {**labels, "kernel_id": kernel_id}}, "spec": {}})  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway_provisioners_cli.k8s_spec", "reap", "--keep", "live", "--min-age", "0",
        "--namespace", NAMESPACE, "--kubeconfig", kubeconfig,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    assert f"removed Pod {NAMESPACE}/kernel-dead (kernel dead)" in out.decode()
    assert kube.get("pods", NAMESPACE, "kernel-dead") is None and kube.get("pods", NAMESPACE, "kernel-live")
