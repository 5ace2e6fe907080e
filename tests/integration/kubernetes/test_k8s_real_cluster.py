"""The lifecycle against a real cluster (kind, minikube, any): run by ``nox -s k8s_real_cluster``.

Needs GP_K8S_REAL_CLUSTER=1, a working kubeconfig, GP_K8S_TEST_IMAGE (an image with Python, ipykernel and the agent at
GP_AGENT_PATH, see docs/kubernetes.md), a namespace (GP_K8S_TEST_NAMESPACE, default "default") where the kubeconfig's
user has the server's RBAC, and pod IPs routable from this machine. Without GP_K8S_REAL_CLUSTER=1 it skips and says so;
the emulator-based tests in this folder cover the same behaviour in CI.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from jupyter_client.manager import AsyncKernelManager

from gateway_provisioners.adapters.kubernetes import close_hubs
from gateway_provisioners.adapters.kubernetes.client import KubeApiError, KubeClient
from gateway_provisioners.core.errors import ImagePullError

from ...conftest import write_kernel_spec
from ...support.kernels import run_code

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.environ.get("GP_K8S_REAL_CLUSTER") != "1",
        reason="no real cluster requested: run `nox -s k8s_real_cluster` (sets GP_K8S_REAL_CLUSTER=1)",
    ),
]
NAMESPACE = os.environ.get("GP_K8S_TEST_NAMESPACE", "default")


def spec(jupyter_path, image: str, **extra) -> str:  # type: ignore[no-untyped-def]
    config = {"namespace": NAMESPACE, "image_name": image, "launch_timeout": 300, "unschedulable_grace": 60, **extra}
    if os.environ.get("GP_KUBECONFIG"):
        config["kubeconfig"] = os.environ["GP_KUBECONFIG"]
    write_kernel_spec(jupyter_path, "gp-k8s-real", argv=["python3", "-m", "ipykernel_launcher", "-f",
                      "{connection_file}"], provisioner="kubernetes-provisioner", config=config)  # fmt: skip
    return "gp-k8s-real"


async def test_real_cluster_lifecycle(jupyter_path) -> None:  # type: ignore[no-untyped-def]
    image = os.environ.get("GP_K8S_TEST_IMAGE")
    if not image:
        pytest.skip("GP_K8S_TEST_IMAGE is not set: build the kernel image (docs/kubernetes.md) and name it")
    km = AsyncKernelManager(kernel_name=spec(jupyter_path, image))
    await km.start_kernel()
    pod = f"kernel-{km.kernel_id}"
    try:
        content, out = await run_code(km, "print(6 * 7)", timeout=120)
        assert content["status"] == "ok" and "".join(out).strip() == "42"
        await km.restart_kernel(now=True)
        _, out = await run_code(km, "print('after restart')", timeout=120)
        assert "after restart" in "".join(out)
    finally:
        await km.shutdown_kernel(now=True)
    client = KubeClient(os.environ.get("GP_KUBECONFIG", ""))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the garbage collector removes the Secret after the pod
            try:
                await client._json((await client.core()).read_namespaced_secret, f"{pod}-launch", NAMESPACE)
            except KubeApiError as exc:
                assert exc.status == 404
                break
            await asyncio.sleep(1)
        else:
            pytest.fail(f"Secret {pod}-launch still exists two minutes after the pod was deleted")
    finally:
        await client.close()
        await close_hubs()


async def test_real_cluster_image_pull_fails_fast(jupyter_path) -> None:  # type: ignore[no-untyped-def]
    km = AsyncKernelManager(kernel_name=spec(jupyter_path, "registry.invalid/gateway-provisioners/none:0"))
    started = time.monotonic()
    with pytest.raises(ImagePullError):
        await km.start_kernel()
    assert time.monotonic() - started < 120
    await close_hubs()
