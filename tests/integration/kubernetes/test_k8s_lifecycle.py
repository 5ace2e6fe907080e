"""A real AsyncKernelManager runs real ipykernels through kubernetes-provisioner against the API emulator."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from jupyter_client.manager import AsyncKernelManager

from gateway_provisioners.provisioners.kubernetes import KubernetesProvisioner

from ...support.kernels import INTERRUPTED_WITHIN, interrupt_running_cell, run_code, shell_answers
from .conftest import NAMESPACE
from .emulator import KubeEmulator
from .kubelet import Kubelet

pytestmark = pytest.mark.integration


async def wait_for_watches(kube: KubeEmulator, mark: int, count: int = 1, timeout: float = 10) -> None:
    """The shared watch's request is sent concurrently with the launch: wait until `count` watch requests have arrived
    since `mark`. (Counting open watches is not enough: a watch a closed client left behind stays open on the server
    until it notices the connection is gone.)"""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while sum(r.watch for r in kube.requests_since(mark)) < count and loop.time() < deadline:
        await asyncio.sleep(0.01)


def pod_name(km: AsyncKernelManager) -> str:
    return f"kernel-{km.kernel_id}"


async def test_launch_execute_interrupt_restart_shutdown(kube: KubeEmulator, kubelet: Kubelet, k8s_spec) -> None:
    km = AsyncKernelManager(kernel_name=k8s_spec())
    mark = kube.mark()
    await km.start_kernel()
    try:
        await wait_for_watches(kube, mark)
        launch = [str(r) for r in kube.requests_since(mark)]
        assert isinstance(km.provisioner, KubernetesProvisioner)
        # One launch: list + watch (the shared watch's first use), create pod, create Secret. Nothing else.
        # (The watch request runs concurrently with the creates, so the order varies.)
        assert sorted(launch) == sorted(
            [
                f"GET /api/v1/namespaces/{NAMESPACE}/pods",
                f"GET /api/v1/namespaces/{NAMESPACE}/pods (watch)",
                f"POST /api/v1/namespaces/{NAMESPACE}/pods",
                f"POST /api/v1/namespaces/{NAMESPACE}/secrets",
            ]
        ), launch
        name = pod_name(km)
        pod = kube.get("pods", NAMESPACE, name)
        secret = kube.get("secrets", NAMESPACE, f"{name}-launch")
        assert pod is not None and secret is not None
        # The token and the launch parameters (with the HMAC key) are in the Secret, owned by the pod; not in the pod.
        assert secret["metadata"]["ownerReferences"][0]["uid"] == pod["metadata"]["uid"]
        container = pod["spec"]["containers"][0]
        params = json.loads(base64.b64decode(secret["data"]["params.json"]))
        assert "token" not in params and params["mode"] == "assigned"
        token = base64.b64decode(secret["data"]["token"]).decode()
        assert token not in json.dumps(pod)
        assert params["connection"]["key"] not in json.dumps(pod)
        # Secure defaults.
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert pod["spec"]["automountServiceAccountToken"] is False
        assert km.get_connection_info()["ip"] == "127.0.0.1"

        content, out = await run_code(km, "print(6 * 7)")
        assert content["status"] == "ok" and "".join(out).strip() == "42"

        # Interrupt a running cell.
        reply, elapsed = await interrupt_running_cell(km)
        assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
        assert elapsed < INTERRUPTED_WITHIN

        # Restart in place: same pod (uid), same ports, a new kernel process, no pod request.
        _, before = await run_code(km, "import os; print(os.getpid())")
        ports = km.get_connection_info()
        mark = kube.mark()
        await km.restart_kernel(now=True)
        assert [r for r in kube.requests_since(mark) if r.method != "GET"] == []
        assert kube.get("pods", NAMESPACE, name)["metadata"]["uid"] == pod["metadata"]["uid"]
        assert {k: km.get_connection_info()[k] for k in ("shell_port", "iopub_port", "control_port")} == {
            k: ports[k] for k in ("shell_port", "iopub_port", "control_port")
        }
        _, after = await run_code(km, "import os; print(os.getpid())")
        assert before != after
    finally:
        await km.shutdown_kernel(now=True)
    # Shutdown deletes the pod, and the Secret goes with it (ownership).
    assert kube.get("pods", NAMESPACE, name) is None
    assert kube.get("secrets", NAMESPACE, f"{name}-launch") is None
    assert not kubelet.procs or all(p.returncode is not None for p in kubelet.procs.values())


async def test_second_launch_reuses_the_shared_watch(kube: KubeEmulator, kubelet: Kubelet, k8s_spec) -> None:
    name = k8s_spec()
    first = AsyncKernelManager(kernel_name=name)
    mark = kube.mark()
    await first.start_kernel()
    second = AsyncKernelManager(kernel_name=name)
    try:
        await wait_for_watches(kube, mark)  # the first launch's watch request may still be on its way
        mark = kube.mark()
        await second.start_kernel()
        assert [str(r) for r in kube.requests_since(mark)] == [
            f"POST /api/v1/namespaces/{NAMESPACE}/pods",
            f"POST /api/v1/namespaces/{NAMESPACE}/secrets",
        ]
        assert kube.open_watches == 1
        _content, out = await run_code(second, "print('second')")
        assert "".join(out).strip() == "second"
    finally:
        await asyncio.gather(first.shutdown_kernel(now=True), second.shutdown_kernel(now=True))


async def test_encrypted_kernel_channels(kube: KubeEmulator, kubelet: Kubelet, k8s_spec) -> None:
    # The Curve secret key travels like the launch token, in the kernel's Secret, never in the pod spec.
    name = k8s_spec("gp-k8s-curve", metadata={"supported_encryption": ["curve"]})
    km = AsyncKernelManager(kernel_name=name, transport_encryption="required")
    await km.start_kernel()
    try:
        info = km.get_connection_info()
        pod = kube.get("pods", NAMESPACE, pod_name(km))
        assert info["curve_secretkey"] not in json.dumps(pod)
        assert await shell_answers(info, curve=True, timeout=30)
        assert not await shell_answers(info, curve=False, timeout=2)
        _, out = await run_code(km, "print('sealed')")
        assert out.strip() == "sealed"
    finally:
        await km.shutdown_kernel(now=True)
