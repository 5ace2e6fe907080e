"""Warm pools on the real Kubernetes cluster: pooled pods, claimed with the launch's values, drained to nothing.

Each kernel gets a namespace of its own (``shared_namespace`` off, the per-kernel RBAC manifest): the shared
``kernels`` namespace is also used by other test runs, whose leftover checks remove pods they did not start.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway_provisioners.provisioners import pooling

from ....support import pools
from .conftest import Cluster

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
async def drained() -> AsyncIterator[None]:
    yield
    await pooling.drain_pools()  # before the test's hub closes (its fixture is set up first, so torn down last)


USER = "gp-tester"  # KERNEL_USERNAME of the jupyter_path fixture: namespaces are "<user>-<launch id>"


def left_of(cluster: Cluster) -> Any:
    """A launch's pod, or its namespace while it is not yet being deleted."""

    def left(launch_id: str) -> list[Any]:
        namespace = f"{USER}-{launch_id}"
        found = [cluster.get("pod", f"kernel-{launch_id}", namespace)]
        ns = cluster.get("namespace", namespace)
        found.append(ns if ns and (ns.get("status") or {}).get("phase") != "Terminating" else None)
        return [item for item in found if item]

    return left


@pytest.fixture
def pool_spec(real_spec, per_kernel_kubeconfig: str) -> Any:  # type: ignore[no-untyped-def]
    return lambda **config: real_spec("gp-k8s-pool", shared_namespace=False, kubeconfig=per_kernel_kubeconfig, **config)


async def test_claimed_pod(cluster: Cluster, pool_spec) -> None:  # type: ignore[no-untyped-def]
    await pools.claim_scenario(pool_spec(pool_size=2), left_of(cluster), working_dir="/tmp", timeout=300)


async def test_dead_pooled_pod_is_replaced(cluster: Cluster, pool_spec) -> None:  # type: ignore[no-untyped-def]
    await pools.dead_kernel_scenario(pool_spec(pool_size=2), left_of(cluster), timeout=300)


async def test_drain_leaves_no_pod(cluster: Cluster, pool_spec) -> None:  # type: ignore[no-untyped-def]
    await pools.drain_scenario(pool_spec(pool_size=3, pool_refill_concurrency=3), left_of(cluster), timeout=300)
