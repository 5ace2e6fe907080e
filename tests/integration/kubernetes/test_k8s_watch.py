"""The shared watch: resumed after a dropped stream and re-listed after 410 without missing a transition; one watch
for many kernels and no request at all for idle ones."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from jupyter_client.manager import AsyncKernelManager

from gateway_provisioners.adapters.kubernetes import KubeHub, KubernetesBackend, PodSettings
from gateway_provisioners.adapters.kubernetes.client import KubeClient
from gateway_provisioners.core.backend import BackendHandle, PlatformState
from gateway_provisioners.core.launch import ConnectionMode, LaunchSpec

from .conftest import NAMESPACE
from .emulator import KubeEmulator
from .kubelet import Kubelet

pytestmark = pytest.mark.integration

RUNNING = {"phase": "Running", "podIP": "10.1.2.3", "conditions": [{"type": "PodScheduled", "status": "True"}],
           "containerStatuses": [{"name": "kernel", "state": {"running": {}}}]}  # fmt: skip


async def wait_state(handle: BackendHandle, state: PlatformState, timeout: float = 10) -> None:
    async def until() -> None:
        while handle.observation.state is not state:
            await handle.wait_changed()

    await asyncio.wait_for(until(), timeout)


@pytest.fixture
async def backend(kube: KubeEmulator, kubeconfig: str):  # type: ignore[no-untyped-def]
    """A backend on its own hub; the pods stay put unless the test moves them (no kubelet here)."""
    hub = KubeHub(KubeClient(kubeconfig), watch_timeout=300)
    yield KubernetesBackend(hub, PodSettings(namespace=NAMESPACE, image="gpt/kernel:park"))
    await hub.close()


async def submit(backend: KubernetesBackend, kernel_id: str) -> BackendHandle:
    spec = LaunchSpec(kernel_id, ["python", "{connection_file}"], mode=ConnectionMode.ASSIGNED, username="bob")
    return await backend.submit(spec)


async def test_dropped_watch_resumes_from_its_version(kube: KubeEmulator, backend: KubernetesBackend) -> None:
    handle = await submit(backend, "k-drop")
    watcher = backend.hub.watchers[NAMESPACE]
    version = watcher.resource_version
    mark = kube.mark()
    kube.drop_watches()  # the stream is cut ...
    kube.patch_status(NAMESPACE, "kernel-k-drop", RUNNING)  # ... and the pod starts while nobody watches
    await wait_state(handle, PlatformState.RUNNING)
    assert handle.observation.ip == "10.1.2.3"
    assert watcher.stats["lists"] == 1 and watcher.stats["expired"] == 0
    resumed = [r for r in kube.requests_since(mark) if r.watch]
    assert len(resumed) == 1 and resumed[0].query["resourceVersion"] == version
    assert not [r for r in kube.requests_since(mark) if not r.watch]  # no re-list needed


async def test_expired_version_relists_and_sees_changes_and_deletions(
    kube: KubeEmulator, backend: KubernetesBackend
) -> None:
    running = await submit(backend, "k-run")
    doomed = await submit(backend, "k-gone")
    watcher = backend.hub.watchers[NAMESPACE]
    kube.compact()  # etcd forgot the history ...
    kube.drop_watches()  # ... and the watch must start again from an expired version
    kube.patch_status(NAMESPACE, "kernel-k-run", RUNNING)
    kube.delete_object("pods", NAMESPACE, "kernel-k-gone")  # the DELETED event is lost with the history
    await wait_state(running, PlatformState.RUNNING)
    await wait_state(doomed, PlatformState.GONE)
    assert watcher.stats["expired"] == 1 and watcher.stats["lists"] == 2
    assert kube.get("secrets", NAMESPACE, "kernel-k-gone-launch") is None  # owned by the pod, collected with it


async def test_watch_renewed_after_server_timeout_without_relisting(kube: KubeEmulator, kubeconfig: str) -> None:
    hub = KubeHub(KubeClient(kubeconfig), watch_timeout=1)
    try:
        backend = KubernetesBackend(hub, PodSettings(namespace=NAMESPACE, image="gpt/kernel:park"))
        handle = await submit(backend, "k-renew")
        watcher = hub.watchers[NAMESPACE]
        while watcher.stats["watches"] < 3:  # each watch ends after timeoutSeconds=1 and is renewed
            await asyncio.sleep(0.1)
        kube.patch_status(NAMESPACE, "kernel-k-renew", RUNNING)
        await wait_state(handle, PlatformState.RUNNING)
        assert watcher.stats["lists"] == 1
    finally:
        await hub.close()


async def test_restore_reads_the_cache(kube: KubeEmulator, backend: KubernetesBackend, kubeconfig: str) -> None:
    handle = await submit(backend, "k-restore")
    kube.patch_status(NAMESPACE, "kernel-k-restore", RUNNING)
    await wait_state(handle, PlatformState.RUNNING)
    saved = backend.serialize(handle)
    other = KubeHub(KubeClient(kubeconfig))  # "another server process"
    try:
        restored = await KubernetesBackend(other).restore(saved)
        assert restored.observation.state is PlatformState.RUNNING and restored.observation.ip == "10.1.2.3"
        gone = await KubernetesBackend(other).restore({**saved, "uid": "not-the-pods-uid"})
        assert gone.observation.state is PlatformState.GONE
    finally:
        await other.close()


STANDIN = [sys.executable, str(Path(__file__).with_name("standin_kernel.py")), "{connection_file}"]


async def test_fifty_idle_kernels_make_no_requests(kube: KubeEmulator, kubelet: Kubelet, k8s_spec) -> None:
    """50 kernels running through AsyncKernelManager; polling them all many times makes no API request.

    "Over a minute" is shown without sleeping a minute: nothing in the adapter runs on a timer for a running kernel
    (the only periodic request is the renewal of the one shared watch, every watch_timeout = 300 s by default), so the
    count over any interval is the count between two points while the kernels are polled — zero.
    """
    kubelet.distinct_ips = True  # 50 "pods" on one machine: one loopback address each, as pods have their own
    name = k8s_spec(argv=STANDIN, kernel_bind_ip="0.0.0.0")
    managers = [AsyncKernelManager(kernel_name=name) for _ in range(50)]
    try:
        for batch in range(0, 50, 10):
            await asyncio.gather(*(km.start_kernel() for km in managers[batch : batch + 10]))
        assert kube.open_watches == 1
        assert len(kube.list("pods", NAMESPACE)) == 50
        mark = kube.mark()
        for _ in range(20):  # 1000 polls, as jupyter_client's restarter would make over minutes
            assert all(await asyncio.gather(*(km.is_alive() for km in managers)))
            await asyncio.sleep(0.05)
        assert kube.requests_since(mark) == []
    finally:
        await asyncio.gather(*(km.shutdown_kernel(now=True) for km in managers if km.has_kernel))
    assert kube.list("pods", NAMESPACE) == [] and kube.list("secrets", NAMESPACE) == []
