"""Per-kernel namespaces with a namespaced Role; reattaching from provisioner info; the reaper."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning import KernelProvisionerFactory

from gateway_provisioners.adapters.kubernetes import close_hubs
from gateway_provisioners.adapters.kubernetes.client import KubeClient
from gateway_provisioners.adapters.kubernetes.reaper import reap_orphans

from ...support.kernels import run_code
from .conftest import NAMESPACE
from .emulator import KubeEmulator
from .kubelet import Kubelet
from .test_k8s_lifecycle import wait_for_watches

pytestmark = pytest.mark.integration


async def test_namespace_per_kernel_kept_across_restart_deleted_with_kernel(
    kube: KubeEmulator, kubelet: Kubelet, k8s_spec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERNEL_USERNAME", "alice")
    km = AsyncKernelManager(kernel_name=k8s_spec(shared_namespace=False))
    await km.start_kernel()
    namespace = f"alice-{km.kernel_id}"
    try:
        assert kube.get("namespaces", "", namespace) is not None
        role = kube.get("roles", namespace, "kernel")
        binding = kube.get("rolebindings", namespace, "kernel")
        # Exactly the verbs a kernel needs in its namespace — no wildcard, no cluster role.
        assert role["rules"][0]["verbs"] == ["get", "list", "watch", "create", "delete"]
        assert all("*" not in rule["verbs"] and "*" not in rule["resources"] for rule in role["rules"])
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "kernel"}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}]
        pod = kube.get("pods", namespace, f"kernel-{km.kernel_id}")
        assert pod["spec"]["automountServiceAccountToken"] is True  # the kernel uses its Role
        # One cluster-wide watch serves every per-kernel namespace.
        assert [r.path for r in kube.requests if r.watch] == ["/api/v1/pods"]

        # The agent dies (the pod ends): a restart makes a new pod in the same namespace.
        old_uid = pod["metadata"]["uid"]
        proc = kubelet.procs[f"{namespace}/kernel-{km.kernel_id}"]
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
        while await km.is_alive():
            await asyncio.sleep(0.05)
        await km.restart_kernel(now=True)
        assert kube.get("namespaces", "", namespace) is not None
        assert kube.get("pods", namespace, f"kernel-{km.kernel_id}")["metadata"]["uid"] != old_uid
        _, out = await run_code(km, "print('again')")
        assert "".join(out).strip() == "again"
    finally:
        await km.shutdown_kernel(now=True)
    assert kube.get("namespaces", "", namespace) is None
    assert kube.list("pods", namespace) == [] and kube.list("roles", namespace) == []


async def test_client_namespace_when_allowed(kube: KubeEmulator, kubelet: Kubelet, k8s_spec, monkeypatch) -> None:
    kube._store("namespaces", "", {"metadata": {"name": "team-a"}})
    monkeypatch.setenv("KERNEL_NAMESPACE", "team-a")
    km = AsyncKernelManager(kernel_name=k8s_spec(allow_client_namespace=True, argv=None))
    await km.start_kernel()
    try:
        assert kube.get("pods", "team-a", f"kernel-{km.kernel_id}") is not None
    finally:
        await km.shutdown_kernel(now=True)
    assert kube.get("namespaces", "", "team-a") is not None  # the client's namespace is never deleted


async def test_reattach_from_provisioner_info(kube: KubeEmulator, kubelet: Kubelet, k8s_spec) -> None:
    name = k8s_spec()
    km = AsyncKernelManager(kernel_name=name)
    await km.start_kernel()
    try:
        _, out = await run_code(km, "x = 41; print('set')")
        info = await km.provisioner.get_provisioner_info()
        assert info["gateway_provisioners"]["handle"]["uid"]
        await close_hubs()  # "the server restarts": no cache, no watch survives

        other = AsyncKernelManager(kernel_name=name, kernel_id=km.kernel_id)
        other.load_connection_info(km.get_connection_info())
        other.provisioner = KernelProvisionerFactory.instance().create_provisioner_instance(
            km.kernel_id, other.kernel_spec, parent=other
        )
        mark = kube.mark()
        await other.provisioner.load_provisioner_info(info)
        # Reattaching costs the new process's first list and watch, nothing per kernel. (The watch request is sent
        # concurrently, right after the list that the reattach waits for.)
        await wait_for_watches(kube, mark)
        assert sorted(str(r) for r in kube.requests_since(mark)) == [
            f"GET /api/v1/namespaces/{NAMESPACE}/pods",
            f"GET /api/v1/namespaces/{NAMESPACE}/pods (watch)",
        ]
        assert await other.provisioner.poll() is None
        _content, out = await run_code(other, "print(x + 1)")
        assert "".join(out).strip() == "42"
        await other.provisioner.cleanup(restart=False)
        assert kube.get("pods", NAMESPACE, f"kernel-{km.kernel_id}") is None
    finally:
        if kube.get("pods", NAMESPACE, f"kernel-{km.kernel_id}") is not None:
            await km.shutdown_kernel(now=True)


async def test_reaper_removes_pods_of_vanished_kernels(kube: KubeEmulator, kubeconfig: str) -> None:
    labels = {"app.kubernetes.io/managed-by": "gateway-provisioners", "app.kubernetes.io/component": "kernel"}
    old = "2020-01-01T00:00:00Z"
    for kernel_id in ("alive", "orphan"):
        pod = kube._store("pods", NAMESPACE, {"metadata": {"name": f"kernel-{kernel_id}",
                          "labels": {**labels, "kernel_id": kernel_id}}, "spec": {}})  # fmt: skip
        pod["metadata"]["creationTimestamp"] = old
    fresh = kube._store("pods", NAMESPACE, {"metadata": {"name": "kernel-starting",
                        "labels": {**labels, "kernel_id": "starting"}}, "spec": {}})  # fmt: skip
    assert fresh["metadata"]["creationTimestamp"] > old
    kube._store("pods", NAMESPACE, {"metadata": {"name": "someone-else", "labels": {"kernel_id": "x"}}, "spec": {}})
    ns = kube._store("namespaces", "", {"metadata": {"name": "bob-orphan2", "labels": {
        "app.kubernetes.io/managed-by": "gateway-provisioners", "app.kubernetes.io/component": "kernel-namespace",
        "kernel_id": "orphan2"}}})  # fmt: skip
    ns["metadata"]["creationTimestamp"] = old
    client = KubeClient(kubeconfig)
    try:
        dry = await reap_orphans(client, {"alive"}, dry_run=True)
        assert {(r["kind"], r["kernel_id"]) for r in dry} == {("Pod", "orphan"), ("Namespace", "orphan2")}
        assert kube.get("pods", NAMESPACE, "kernel-orphan") is not None
        removed = await reap_orphans(client, {"alive"})
        assert removed == dry
    finally:
        await client.close()
    assert kube.get("pods", NAMESPACE, "kernel-orphan") is None
    assert kube.get("namespaces", "", "bob-orphan2") is None
    for kept in ("kernel-alive", "kernel-starting", "someone-else"):
        assert kube.get("pods", NAMESPACE, kept) is not None
