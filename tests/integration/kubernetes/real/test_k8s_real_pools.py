"""Warm pools on the real Kubernetes cluster: pooled pods, claimed with the launch's values, drained to nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway_provisioners.provisioners import pooling

from ....support import pools
from .conftest import NAMESPACE, Cluster

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
async def drained() -> AsyncIterator[None]:
    yield
    await pooling.drain_pools()  # before the test's hub closes (its fixture is set up first, so torn down last)


def pods(cluster: Cluster) -> Any:
    return lambda launch_id: [p for p in [cluster.get("pod", f"kernel-{launch_id}", NAMESPACE)] if p]


async def test_claimed_pod(cluster: Cluster, real_spec, pods_left) -> None:  # type: ignore[no-untyped-def]
    await pools.claim_scenario(real_spec("gp-k8s-pool", pool_size=2), pods(cluster), working_dir="/tmp", timeout=300)


async def test_dead_pooled_pod_is_replaced(cluster: Cluster, real_spec, pods_left) -> None:  # type: ignore[no-untyped-def]
    await pools.dead_kernel_scenario(real_spec("gp-k8s-pool", pool_size=2), pods(cluster), timeout=300)


async def test_drain_leaves_no_pod(cluster: Cluster, real_spec, pods_left) -> None:  # type: ignore[no-untyped-def]
    name = real_spec("gp-k8s-pool", pool_size=3, pool_refill_concurrency=3)
    await pools.drain_scenario(name, pods(cluster), timeout=300)
