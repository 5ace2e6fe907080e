"""Warm pools over real OpenSSH: the agent and kernel of each pooled launch run on the SSH host (loopback here)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway_provisioners.provisioners import pooling
from tests.support import pools

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
async def drained() -> AsyncIterator[None]:
    yield
    await pooling.drain_pools()


async def test_claimed_kernel_over_ssh(ssh_spec, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "work"
    folder.mkdir()
    name = ssh_spec("gp-ssh-pool", pool_size=2)
    await pools.claim_scenario(name, pools.processes_of, working_dir=str(folder))


async def test_dead_pooled_kernel_over_ssh(ssh_spec) -> None:  # type: ignore[no-untyped-def]
    await pools.dead_kernel_scenario(ssh_spec("gp-ssh-pool", pool_size=2), pools.processes_of)


async def test_cold_with_reason_over_ssh(ssh_spec, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    await pools.cold_with_reason_scenario(ssh_spec("gp-ssh-pool", pool_size=1), caplog)


async def test_drain_over_ssh(ssh_spec) -> None:  # type: ignore[no-untyped-def]
    await pools.drain_scenario(ssh_spec("gp-ssh-pool", pool_size=3, pool_refill_concurrency=3), pools.processes_of)
