"""API requests the server side makes, counted in the real kube-apiserver's audit log: per launch, per idle kernel,
per reattach, per shutdown (docs/kubernetes.md, "How a launch works")."""

from __future__ import annotations

import asyncio
import time

import pytest
from jupyter_client.manager import AsyncKernelManager

from ....support.kernels import reattach_in_new_process, run_code
from .conftest import NAMESPACE, Cluster
from .test_k8s_real_lifecycle import until

pytestmark = pytest.mark.integration
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"
SECRETS = f"/api/v1/namespaces/{NAMESPACE}/secrets"
IDLE_WINDOW = 10.0  # seconds of idle kernels, polled as the restarter does


async def test_requests_per_launch_idle_kernel_reattach_and_shutdown(
    cluster: Cluster, real_spec, pods_left, tmp_path
) -> None:
    name = real_spec()
    first, second = AsyncKernelManager(kernel_name=name), AsyncKernelManager(kernel_name=name)
    mark = cluster.audit_mark()
    await first.start_kernel()
    try:
        # The first launch in a namespace: the shared watch's list and watch, then the Pod and its Secret.
        await until("the shared watch is open", lambda: f"WATCH {PODS}" in cluster.requests_since(mark), 30)
        assert sorted(cluster.requests_since(mark)) == sorted(
            [f"LIST {PODS}", f"WATCH {PODS}", f"CREATE {PODS}", f"CREATE {SECRETS}"]
        )
        # Any further launch: the Pod and its Secret, nothing else.
        mark = cluster.audit_mark()
        await second.start_kernel()
        assert cluster.requests_since(mark) == [f"CREATE {PODS}", f"CREATE {SECRETS}"]

        # Idle kernels, polled as the restarter polls them, and running code: no request at all.
        mark = cluster.audit_mark()
        await run_code(first, "print(1)")
        deadline = time.monotonic() + IDLE_WINDOW
        while time.monotonic() < deadline:
            assert await first.is_alive() and await second.is_alive()
            await asyncio.sleep(0.5)
        assert cluster.requests_since(mark) == []

        # Another process reattaching (a restarted server): its own list and watch, nothing per kernel.
        mark = cluster.audit_mark()
        await reattach_in_new_process(first, tmp_path)
        assert sorted(cluster.requests_since(mark)) == sorted([f"LIST {PODS}", f"WATCH {PODS}"])

        mark = cluster.audit_mark()
    finally:
        await asyncio.gather(first.shutdown_kernel(now=True), second.shutdown_kernel(now=True))
    # Shutdown: one DELETE per pod (the Secrets go with them, deleted by the garbage collector, not by us).
    deletes = sorted(f"DELETE {PODS}/kernel-{km.kernel_id}" for km in (first, second))
    assert sorted(cluster.requests_since(mark)) == deletes
