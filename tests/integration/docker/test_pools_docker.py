"""Warm pools on a real Docker engine and a single-node Swarm: pooled containers and services."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway_provisioners.provisioners import pooling

from ...support import pools
from .conftest import OWNER, OWNER_LABEL, Variant, make_variant

pytestmark = pytest.mark.integration

MAIN = ["docker-bridge", "swarm-host"]  # one of each provisioner, one of each connection mode


@pytest.fixture
def variant(request: pytest.FixtureRequest, jupyter_path: Path) -> Variant:
    return make_variant(request.param, request, jupyter_path)


@pytest.fixture(autouse=True)
async def drained() -> AsyncIterator[None]:
    yield
    await pooling.drain_pools()


def leftovers(variant: Variant) -> Any:
    return lambda launch_id: variant.containers(launch_id) + variant.services(launch_id)


@pytest.mark.parametrize("variant", MAIN, indirect=True)
async def test_claimed_kernel(variant: Variant) -> None:
    await pools.claim_scenario(variant.spec("gp-docker-pool", pool_size=2), leftovers(variant))


@pytest.mark.parametrize("variant", MAIN, indirect=True)
async def test_dead_pooled_kernel(variant: Variant) -> None:
    await pools.dead_kernel_scenario(variant.spec("gp-docker-pool", pool_size=2), leftovers(variant))


@pytest.mark.parametrize("variant", ["docker-bridge"], indirect=True)
async def test_working_dir_is_not_applied_late_in_containers(variant: Variant, caplog: pytest.LogCaptureFixture):
    """A container's KERNEL_WORKING_DIR is a mount chosen at launch: such a launch starts cold and says why."""
    import logging
    import os

    from jupyter_client.manager import AsyncKernelManager

    name = variant.spec("gp-docker-pool", pool_size=1, allow_working_dir=True)
    warm = await pools.warm_up(name)
    await warm.pool.wait_ready(count=1, timeout=120)
    caplog.set_level(logging.INFO)
    km = AsyncKernelManager(kernel_name=name)
    await km.start_kernel(env={**os.environ, "KERNEL_WORKING_DIR": "/tmp"})
    try:
        assert km.provisioner.kernel.launch_id == km.kernel_id
        assert any("not from the pool: the working directory" in r.getMessage() for r in caplog.records)
    finally:
        await km.shutdown_kernel(now=True)


@pytest.mark.parametrize("variant", MAIN, indirect=True)
async def test_drain(variant: Variant) -> None:
    def of_this_run() -> dict[str, Any]:  # every container and service of this test run, by its engine id
        found = variant.client.containers.list(
            all=True, ignore_removed=True, filters={"label": f"{OWNER_LABEL}={OWNER}"}
        )
        if variant.swarm:
            found += variant.client.services.list(filters={"label": f"{OWNER_LABEL}={OWNER}"})
        return {item.id: item for item in found}

    earlier = set(of_this_run())  # an earlier test's kernels may still be going: not this pool's
    name = variant.spec("gp-docker-pool", pool_size=3, pool_refill_concurrency=3)
    warm = await pools.warm_up(name)
    await warm.pool.wait_ready(count=1, timeout=120)  # one ready, others likely starting: drain must end both kinds
    await pools.drain_scenario(name, leftovers(variant))
    left = await pools.wait_gone(lambda _: [v for k, v in of_this_run().items() if k not in earlier], "")
    assert not left, f"draining left pooled containers or services: {left}"
