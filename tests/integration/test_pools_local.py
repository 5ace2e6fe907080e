"""Warm pools on the local backend: real agents and ipykernels through a real AsyncKernelManager."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway_provisioners.provisioners import pooling

from ..conftest import write_kernel_spec
from ..support import pools

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
async def drained() -> AsyncIterator[None]:
    yield
    await pooling.drain_pools()  # pools belong to the test's event loop: none may outlive it


def spec(root: Path, size: int = 2, **config: object) -> str:
    write_kernel_spec(root, "gp-pool", config={"pool_size": size, **config})
    return "gp-pool"


async def test_claimed_kernel_is_fresh_has_its_values_restarts_and_shuts_down(jupyter_path: Path, tmp_path: Path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    await pools.claim_scenario(spec(jupyter_path), pools.processes_of, working_dir=str(folder))


async def test_dead_pooled_kernel_is_replaced_never_handed_out(jupyter_path: Path) -> None:
    await pools.dead_kernel_scenario(spec(jupyter_path), pools.processes_of)


async def test_launch_the_pool_cannot_serve_starts_cold_and_says_why(
    jupyter_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await pools.cold_with_reason_scenario(spec(jupyter_path, size=1), caplog)


async def test_drain_ends_every_pooled_kernel(jupyter_path: Path) -> None:
    await pools.drain_scenario(spec(jupyter_path, size=3, pool_refill_concurrency=3), pools.processes_of)
