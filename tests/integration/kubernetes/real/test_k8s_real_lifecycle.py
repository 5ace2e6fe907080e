"""kubernetes-provisioner on a real cluster (scripts/k8s-cluster.sh): real pods, CNI addresses, RBAC, the garbage
collector, the namespace controller, the kubelet's own reasons for failures.

Each test drives a real ipykernel in a real pod through AsyncKernelManager, with the server side bound to the RBAC
manifest of docs/kubernetes.md; the test's own checks use the cluster's admin credentials.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from typing import Any

import pytest
from jupyter_client.manager import AsyncKernelManager

from gateway_provisioners.adapters.kubernetes.client import KubeClient
from gateway_provisioners.adapters.kubernetes.reaper import reap_orphans
from gateway_provisioners.core.errors import ImagePullError, KernelExited, LaunchError, Unschedulable

from ....support.kernels import interrupt_running_cell, kernel_pid, reattach_in_new_process, run_code, shell_answers
from .conftest import NAMESPACE, Cluster

pytestmark = pytest.mark.integration
PORT_KEYS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


def pod_name(km: AsyncKernelManager) -> str:
    return f"kernel-{km.kernel_id}"


async def until(what: str, condition: Any, timeout: float = 60) -> None:
    """Await ``condition()`` (sync or async) until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        await asyncio.sleep(0.2)


async def aget(cluster: Cluster, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
    return await asyncio.to_thread(cluster.get, kind, name, namespace)


def in_pod_network(cluster: Cluster, ip: str) -> bool:
    return ipaddress.ip_address(ip) in ipaddress.ip_network(cluster.env["GP_K8S_POD_CIDR"])


async def test_launch_execute_interrupt_restart_in_place_shutdown(cluster: Cluster, real_spec, pods_left) -> None:
    km = AsyncKernelManager(kernel_name=real_spec())
    started = time.monotonic()
    await km.start_kernel()
    launch_seconds = time.monotonic() - started
    name = pod_name(km)
    try:
        pod = await aget(cluster, "pod", name, NAMESPACE)
        secret = await aget(cluster, "secret", f"{name}-launch", NAMESPACE)
        assert pod is not None and secret is not None
        assert pod["status"]["phase"] == "Running"
        # The Secret is owned by the pod, so that the garbage collector deletes it with the pod.
        owner = secret["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["uid"]) == ("Pod", pod["metadata"]["uid"])
        # Server-assigned mode: the server talks to the kernel at the pod's own IP, given by the CNI bridge.
        info = km.get_connection_info()
        assert info["ip"] == pod["status"]["podIP"] and in_pod_network(cluster, info["ip"])
        # Admission did not undo the secure defaults, and the kubelet runs the kernel as the non-root user.
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        content, out = await run_code(km, "import os; print(6 * 7, os.getuid())")
        assert content["status"] == "ok" and out.split() == ["42", "1000"]

        reply, elapsed = await interrupt_running_cell(km)
        assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
        assert elapsed < 5

        # Restart in place: the same pod (uid), IP and ports; a new kernel process.
        before = await kernel_pid(km)
        await km.restart_kernel(now=True)
        after_pod = await aget(cluster, "pod", name, NAMESPACE)
        assert after_pod is not None and after_pod["metadata"]["uid"] == pod["metadata"]["uid"]
        assert after_pod["status"]["podIP"] == pod["status"]["podIP"]
        restarted = km.get_connection_info()
        assert {k: restarted[k] for k in ("ip", *PORT_KEYS)} == {k: info[k] for k in ("ip", *PORT_KEYS)}
        assert await kernel_pid(km) != before
    finally:
        await km.shutdown_kernel(now=True)
    # Shutdown deletes the pod; the garbage collector deletes the Secret through its ownerReference.
    await until("pod deleted", lambda: aget_none(cluster, "pod", name))
    await until("Secret garbage-collected", lambda: aget_none(cluster, "secret", f"{name}-launch"))
    assert launch_seconds < 60


async def aget_none(cluster: Cluster, kind: str, name: str, namespace: str = NAMESPACE) -> bool:
    return await aget(cluster, kind, name, namespace) is None


async def test_callback_mode_pod_calls_the_server(cluster: Cluster, real_spec, pods_left) -> None:
    # The pod reaches the server's listener at the host's address on the pod bridge.
    km = AsyncKernelManager(kernel_name=real_spec(connection_mode="callback", response_ip=cluster.node_ip))
    await km.start_kernel()
    try:
        # The agent may call back before the kubelet has reported the pod's IP to the API.
        await until("the pod's IP in its status", lambda: pod_ip(cluster, km), 30)
        assert km.get_connection_info()["ip"] == await pod_ip(cluster, km)
        _, out = await run_code(km, "print('called back')")
        assert out.strip() == "called back"
    finally:
        await km.shutdown_kernel(now=True)


async def pod_ip(cluster: Cluster, km: AsyncKernelManager) -> str | None:
    pod = await aget(cluster, "pod", pod_name(km), NAMESPACE)
    return None if pod is None else (pod.get("status") or {}).get("podIP")


async def test_curve_encrypted_channels(cluster: Cluster, real_spec, pods_left) -> None:
    km = AsyncKernelManager(
        kernel_name=real_spec("gp-k8s-real-curve", metadata={"supported_encryption": ["curve"]}),
        transport_encryption="required",
    )
    await km.start_kernel()
    try:
        info = km.get_connection_info()
        pod = await aget(cluster, "pod", pod_name(km), NAMESPACE)
        assert info["curve_secretkey"] not in str(pod)
        assert await shell_answers(info, curve=True, timeout=30)
        assert not await shell_answers(info, curve=False, timeout=2)
        _, out = await run_code(km, "print('sealed')")
        assert out.strip() == "sealed"
    finally:
        await km.shutdown_kernel(now=True)


async def test_reattach_from_another_process(cluster: Cluster, real_spec, pods_left, tmp_path) -> None:
    km = AsyncKernelManager(kernel_name=real_spec())
    await km.start_kernel()
    try:
        pid = await kernel_pid(km)
        other_pid, handle = await reattach_in_new_process(km, tmp_path)
        assert other_pid == pid
        assert handle["state"] == "running" and handle["data"]["pod"] == pod_name(km)
    finally:
        await km.shutdown_kernel(now=True)


async def test_reaper_deletes_pods_of_vanished_kernels_only(cluster, real_spec, server_kubeconfig, pods_left) -> None:
    km = AsyncKernelManager(kernel_name=real_spec())
    await km.start_kernel()
    client = KubeClient(server_kubeconfig)
    try:
        assert await reap_orphans(client, {km.kernel_id}, namespace=NAMESPACE, min_age=0) == []
        assert await aget(cluster, "pod", pod_name(km), NAMESPACE) is not None
        removed = await reap_orphans(client, set(), namespace=NAMESPACE, min_age=0)
        assert [(r["kind"], r["kernel_id"]) for r in removed] == [("Pod", km.kernel_id)]
        await until("the provisioner notices its pod is gone", lambda: is_dead(km), timeout=60)
    finally:
        await client.close()
        await km.shutdown_kernel(now=True)
    await until("pod deleted", lambda: aget_none(cluster, "pod", pod_name(km)))


async def is_dead(km: AsyncKernelManager) -> bool:
    return not await km.is_alive()


def kill_kernel_container(cluster: Cluster, pod: dict[str, Any]) -> None:
    """SIGKILL the kernel container's process on the node, through the cluster's containerd."""
    statuses = pod["status"]["containerStatuses"]
    container_id = next(s["containerID"] for s in statuses if s["name"] == "kernel").split("://", 1)[1]
    cluster.ctr("tasks", "kill", "-s", "SIGKILL", container_id)


async def test_namespace_per_kernel_container_killed_restart_shutdown(
    cluster: Cluster, real_spec, per_kernel_kubeconfig: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERNEL_USERNAME", "alice")
    km = AsyncKernelManager(kernel_name=real_spec(shared_namespace=False, kubeconfig=per_kernel_kubeconfig))
    await km.start_kernel()
    namespace = f"alice-{km.kernel_id}"
    try:
        role = await aget(cluster, "role", "kernel", namespace)
        binding = await aget(cluster, "rolebinding", "kernel", namespace)
        assert role is not None and binding is not None
        assert all("*" not in rule["verbs"] and "*" not in rule["resources"] for rule in role["rules"])
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}]
        pod = await aget(cluster, "pod", pod_name(km), namespace)
        assert pod is not None and pod["spec"]["automountServiceAccountToken"] is True
        # The kernel's token works, and its Role lets it list pods in its own namespace only.
        content, out = await run_code(km, KERNEL_API_CHECK)
        assert out.split() == ["200", "403"], (content, out)

        # The kernel's container is killed on the node: the provisioner notices, a restart replaces the pod.
        kill_kernel_container(cluster, pod)
        await until("the killed container is noticed", lambda: is_dead(km), timeout=60)
        await km.restart_kernel(now=True)
        assert await aget(cluster, "namespace", namespace) is not None  # kept across the restart
        new_pod = await aget(cluster, "pod", pod_name(km), namespace)
        assert new_pod is not None and new_pod["metadata"]["uid"] != pod["metadata"]["uid"]
        _, out = await run_code(km, "print('again')")
        assert out.strip() == "again"
    finally:
        await km.shutdown_kernel(now=True)
    # The namespace controller empties and removes the kernel's namespace.
    await until("namespace deleted", lambda: aget_none(cluster, "namespace", namespace, None), timeout=120)


KERNEL_API_CHECK = """
import json, os, ssl, urllib.request, urllib.error
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
ns, token = open(sa + "/namespace").read(), open(sa + "/token").read()
ctx = ssl.create_default_context(cafile=sa + "/ca.crt")
host = "https://%s:%s" % (os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"])
for path in ("/api/v1/namespaces/%s/pods" % ns, "/api/v1/namespaces/kube-system/pods"):
    request = urllib.request.Request(host + path, headers={"Authorization": "Bearer " + token})
    try:
        print(urllib.request.urlopen(request, context=ctx, timeout=10).status)
    except urllib.error.HTTPError as exc:
        print(exc.code)
"""


async def test_missing_image_fails_fast_with_the_kubelet_reason(cluster: Cluster, real_spec, pods_left) -> None:
    km = AsyncKernelManager(kernel_name=real_spec(image_name="gp-test-kernel:not-in-the-cluster"))
    started = time.monotonic()
    with pytest.raises(ImagePullError) as raised:
        await km.start_kernel()
    assert time.monotonic() - started < 30  # launch_timeout is 120
    assert "ErrImageNeverPull" in str(raised.value) or "ErrImageNeverPull" in repr(raised.value.__dict__)
    await until("pod deleted", lambda: aget_none(cluster, "pod", pod_name(km)))


async def test_crashing_kernel_fails_fast_with_its_exit(cluster: Cluster, real_spec, pods_left) -> None:
    argv = ["python3", "-c", "import sys; print('kernel refuses', flush=True); sys.exit(3)"]
    km = AsyncKernelManager(kernel_name=real_spec("gp-k8s-real-crash", argv=argv))
    started = time.monotonic()
    with pytest.raises(LaunchError) as raised:
        await km.start_kernel()
    assert time.monotonic() - started < 30
    assert isinstance(raised.value, KernelExited), repr(raised.value)
    await until("pod deleted", lambda: aget_none(cluster, "pod", pod_name(km)))


async def test_unschedulable_requests_fail_with_the_scheduler_reason(
    cluster: Cluster, real_spec, pods_left, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERNEL_MEMORY", "64Ti")  # more than the node has
    km = AsyncKernelManager(kernel_name=real_spec(unschedulable_grace=3))
    started = time.monotonic()
    with pytest.raises(Unschedulable) as raised:
        await km.start_kernel()
    assert time.monotonic() - started < 30
    assert "Insufficient memory" in str(raised.value) or "Insufficient memory" in repr(raised.value.__dict__)
    await until("pod deleted", lambda: aget_none(cluster, "pod", pod_name(km)))
