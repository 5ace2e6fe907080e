"""Kernels on the real Kubernetes cluster and the real YARN through a real jupyter server with persistence: create,
execute, ``kill -9`` of the server, start it again, the same kernel answers with its state, delete.

The clusters are this machine's shared ones (scripts/k8s-cluster.sh, scripts/yarn-cluster.sh), found as the other
real-cluster tests find them; without them these tests skip, saying so, except where the test command started them
(GP_K8S_REAL_CLUSTER=1, CI=true): there a missing cluster fails them.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from gateway_provisioners.core.kernel import REATTACH_TIMEOUT

from ..kubernetes.real.conftest import (  # noqa: F401 (fixtures)
    NAMESPACE,
    Cluster,
    cluster,
    kernel_image,
    real_spec,
    server_kubeconfig,
)
from ..yarn.conftest import RealYarn, real_yarn, write_real_yarn_spec  # noqa: F401 (fixtures)
from .conftest import WATCHDOG_SECONDS, JupyterServer, execute
from .test_progress_errors_metrics import metric

pytestmark = pytest.mark.integration

STARTUP = 120.0  # a pod's or an application's start on a shared, busy machine: generous, a bound not an expectation
YARN_FINAL = ("FINISHED", "FAILED", "KILLED")


@pytest.fixture(params=["kubernetes", "yarn"])
def cluster_spec(request: pytest.FixtureRequest, jupyter_path: Path) -> str:
    """A kernel spec on the real cluster (the parameter is the backend's name); watchdog as the other server tests."""
    if request.param == "kubernetes":
        # Not the pods_left fixture: other checkouts' tests start kernel pods in the same namespace meanwhile. Each
        # test here checks its own kernel's pod instead, and removes it if a failure left it.
        write = request.getfixturevalue("real_spec")
        return str(write("gp-k8s-server", agent_watchdog=WATCHDOG_SECONDS, launch_timeout=STARTUP))
    yarn: RealYarn = request.getfixturevalue("real_yarn")
    write_real_yarn_spec(jupyter_path, "gp-yarn-server", yarn, agent_watchdog=WATCHDOG_SECONDS, launch_timeout=STARTUP)
    return "gp-yarn-server"


async def platform_gone(request: pytest.FixtureRequest, backend: str, handle: dict[str, Any]) -> bool:
    """Whether the kernel's pod no longer exists / its YARN application has ended (waiting up to a minute)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if backend == "kubernetes":
            k8s: Cluster = request.getfixturevalue("cluster")
            if await asyncio.to_thread(k8s.get, "pod", handle["pod"], handle["namespace"]) is None:
                return True
        else:
            yarn: RealYarn = request.getfixturevalue("real_yarn")
            url = f"{yarn.endpoint}/ws/v1/cluster/apps/{handle['app_id']}"
            reply = await asyncio.to_thread(requests.get, url, timeout=10)
            if reply.json()["app"]["state"] in YARN_FINAL:
                return True
        await asyncio.sleep(0.5)
    return False


async def test_cluster_kernel_survives_kill_9_of_the_server(
    make_server: Any, cluster_spec: str, request: pytest.FixtureRequest
) -> None:
    backend = request.node.callspec.params["cluster_spec"]
    server: JupyterServer = await make_server()
    kernel = await server.request("POST", "/api/kernels", {"name": cluster_spec})
    kernel_id = kernel["id"]
    try:
        assert (await execute(server, kernel_id, "x = 42", timeout=60))[0] == "ok"
        saved = server.records()[kernel_id]["provisioner_info"]["gateway_provisioners"]
        assert saved["backend"] == backend
        handle = saved["handle"]

        server.kill()
        await server.start()
        await server.wait_listed(kernel_id, timeout=60)
        status, out = await execute(server, kernel_id, "print(x)", timeout=60)
        assert (status, out.strip()) == ("ok", "42"), server.log_tail()
        metrics = await server.request("GET", "/metrics")
        assert metric(metrics, "gateway_provisioners_kernels_reattached_total", backend=backend) == 1

        await server.request("DELETE", f"/api/kernels/{kernel_id}")
        assert kernel_id not in await server.kernel_ids()
        assert server.records() == {}, "a deleted kernel's record must be gone"
        assert await platform_gone(request, backend, handle), f"the kernel's {backend} resource outlived its delete"
    finally:
        await remove_leftover(request, backend, kernel_id)


async def remove_leftover(request: pytest.FixtureRequest, backend: str, kernel_id: str) -> None:
    """After a failed test: delete this test's kernel pod (the YARN application ends by the agent's watchdog)."""
    if backend == "kubernetes":
        k8s: Cluster = request.getfixturevalue("cluster")
        await asyncio.to_thread(
            k8s.kubectl, "delete", "pod", f"kernel-{kernel_id}", "-n", NAMESPACE, "--ignore-not-found", "--wait=false",
            check=False,
        )  # fmt: skip


async def end_on_platform(request: pytest.FixtureRequest, backend: str, handle: dict[str, Any]) -> None:
    """End the kernel from outside, as an operator or the platform would: delete its pod, kill its application."""
    if backend == "kubernetes":
        k8s: Cluster = request.getfixturevalue("cluster")
        await asyncio.to_thread(
            k8s.kubectl, "delete", "pod", handle["pod"], "-n", handle["namespace"], "--grace-period=0", "--wait=true"
        )
    else:
        yarn: RealYarn = request.getfixturevalue("real_yarn")
        url = f"{yarn.endpoint}/ws/v1/cluster/apps/{handle['app_id']}/state?user.name=gp-tester"
        reply = await asyncio.to_thread(requests.put, url, json={"state": "KILLED"}, timeout=30)
        assert reply.status_code in (200, 202), reply.text
    assert await platform_gone(request, backend, handle)


async def test_cluster_kernel_ended_while_the_server_was_down_is_forgotten_at_once(
    make_server: Any, cluster_spec: str, request: pytest.FixtureRequest
) -> None:
    backend = request.node.callspec.params["cluster_spec"]
    server: JupyterServer = await make_server()
    kernel = await server.request("POST", "/api/kernels", {"name": cluster_spec})
    kernel_id = kernel["id"]
    handle = server.records()[kernel_id]["provisioner_info"]["gateway_provisioners"]["handle"]
    server.kill()
    try:
        await end_on_platform(request, backend, handle)
    finally:
        await remove_leftover(request, backend, kernel_id)

    await server.start()
    answering = time.monotonic()
    while server.records():
        assert time.monotonic() - answering < 60, f"records left: {list(server.records())}\n{server.log_tail()}"
        await asyncio.sleep(0.1)
    took = time.monotonic() - answering
    # The platform's word (no such pod; the application KILLED) ends it: well within the reattach deadline.
    assert took < REATTACH_TIMEOUT / 2, f"a gone kernel took {took:.1f} s to be forgotten\n{server.log_tail()}"
    assert kernel_id not in await server.kernel_ids()
    assert f"stored kernel {kernel_id} [{backend}] is gone" in server.log_path.read_text()
