"""What the API emulator can show and a real cluster cannot be made to on demand: a client-chosen namespace that
already exists, and the reaper's age limit (the emulator backdates a pod's creationTimestamp). Namespaces per kernel
and reattach are tested on the real cluster (real/)."""

from __future__ import annotations

import pytest
from jupyter_client.manager import AsyncKernelManager

from gateway_provisioners.adapters.kubernetes.client import KubeClient
from gateway_provisioners.adapters.kubernetes.reaper import reap_orphans

from .conftest import NAMESPACE
from .emulator import KubeEmulator
from .kubelet import Kubelet

pytestmark = pytest.mark.integration


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


async def test_reaper_spares_running_pooled_pods(kube: KubeEmulator, kubeconfig: str) -> None:
    """A warm pool's pods carry ids no server lists (claimed ones keep theirs): spared while they run, with their
    namespace; removed like any other once they have ended (their agent's watchdog ends them without a server)."""
    labels = {"app.kubernetes.io/managed-by": "gateway-provisioners", "app.kubernetes.io/component": "kernel",
              "gateway-provisioners/pooled": "true"}  # fmt: skip
    old = "2020-01-01T00:00:00Z"
    for kernel_id, phase in (("pooled-running", "Running"), ("pooled-ended", "Succeeded")):
        pod = kube._store("pods", NAMESPACE, {"metadata": {"name": f"kernel-{kernel_id}",
                          "labels": {**labels, "kernel_id": kernel_id}}, "spec": {}})  # fmt: skip
        pod["metadata"]["creationTimestamp"] = old
        pod["status"] = {"phase": phase}
    ns = kube._store("namespaces", "", {"metadata": {"name": "bob-pooled-running", "labels": {
        "app.kubernetes.io/managed-by": "gateway-provisioners", "app.kubernetes.io/component": "kernel-namespace",
        "kernel_id": "pooled-running"}}})  # fmt: skip
    ns["metadata"]["creationTimestamp"] = old
    client = KubeClient(kubeconfig)
    try:
        removed = await reap_orphans(client, set())
    finally:
        await client.close()
    assert {(r["kind"], r["kernel_id"]) for r in removed} == {("Pod", "pooled-ended")}
    assert kube.get("pods", NAMESPACE, "kernel-pooled-running") is not None
    assert kube.get("namespaces", "", "bob-pooled-running") is not None
