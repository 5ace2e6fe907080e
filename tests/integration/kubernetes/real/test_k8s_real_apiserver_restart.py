"""The real kube-apiserver killed and restarted under running kernels (scripts/k8s-cluster.sh stop/start).

Kernels talk ZMQ to their pods directly, so they keep working while the API is away; the shared watch must come back
by itself and deliver what happened meanwhile: nothing lost, no transition missed.
"""

from __future__ import annotations

import asyncio

import pytest
from jupyter_client.manager import AsyncKernelManager

from ....support.kernels import run_code
from .conftest import NAMESPACE, Cluster
from .test_k8s_real_lifecycle import aget, is_dead, kill_kernel_container, pod_name, until

pytestmark = pytest.mark.integration


def apiserver_down(cluster: Cluster) -> None:
    cluster.script("kill", "kube-apiserver")  # SIGKILL: no graceful close of the watches
    assert cluster.kubectl("get", "--raw", "/readyz", check=False, timeout=15).returncode != 0


async def apiserver_up(cluster: Cluster) -> None:
    await asyncio.to_thread(cluster.script, "start", "kube-apiserver")
    await until("kube-apiserver ready again", lambda: api_ready(cluster), timeout=90)


async def api_ready(cluster: Cluster) -> bool:
    result = await asyncio.to_thread(cluster.kubectl, "get", "--raw", "/readyz", check=False, timeout=15)
    return result.returncode == 0


async def test_kernels_survive_an_apiserver_restart_and_no_transition_is_missed(
    cluster: Cluster, real_spec, pods_left
) -> None:
    name = real_spec()
    idle, doomed = AsyncKernelManager(kernel_name=name), AsyncKernelManager(kernel_name=name)
    await asyncio.gather(idle.start_kernel(), doomed.start_kernel())
    try:
        await run_code(idle, "x = 41")
        doomed_pod = await aget(cluster, "pod", pod_name(doomed), NAMESPACE)
        assert doomed_pod is not None
        await asyncio.to_thread(apiserver_down, cluster)
        try:
            # The API is gone: kernels still run and answer; the provisioner does not declare them dead.
            assert await idle.is_alive() and await doomed.is_alive()
            _, out = await run_code(idle, "print(x + 1)")
            assert out.strip() == "42"
            # A transition while the API is away: the kubelet can only report it once the API is back.
            await asyncio.to_thread(kill_kernel_container, cluster, doomed_pod)
        finally:
            await apiserver_up(cluster)
        await until("the watch delivers the container's death after the restart", lambda: is_dead(doomed), 120)
        assert await idle.is_alive()
        _, out = await run_code(idle, "print(x + 2)")
        assert out.strip() == "43"
        # The watch follows new changes too: a pod deleted now is noticed.
        await asyncio.to_thread(cluster.kubectl, "delete", "pod", pod_name(idle), "-n", NAMESPACE, "--wait=false")
        await until("a pod deleted after the restart is noticed", lambda: is_dead(idle), 60)
    finally:
        await asyncio.gather(idle.shutdown_kernel(now=True), doomed.shutdown_kernel(now=True))


async def test_a_launch_survives_an_apiserver_restart(cluster: Cluster, real_spec, pods_left) -> None:
    km = AsyncKernelManager(kernel_name=real_spec())
    launch = asyncio.ensure_future(km.start_kernel())
    try:
        # Once the pod is created the launch waits for the watch (pod IP): take the API away right then.
        await until("pod created", lambda: pod_exists(cluster, km), timeout=60)
        await asyncio.to_thread(apiserver_down, cluster)
        await apiserver_up(cluster)
        await asyncio.wait_for(launch, 180)
        _, out = await run_code(km, "print('launched across the restart')")
        assert out.strip() == "launched across the restart"
    finally:
        if not launch.done():
            launch.cancel()
        await km.shutdown_kernel(now=True)


async def pod_exists(cluster: Cluster, km: AsyncKernelManager) -> bool:
    return bool(km.kernel_id) and await aget(cluster, "pod", pod_name(km), NAMESPACE) is not None
