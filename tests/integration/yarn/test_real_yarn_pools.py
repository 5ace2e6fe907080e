"""Warm pools on the real YARN (scripts/yarn-cluster.sh): pooled kernels are YARN applications, claimed with the
launch's values, replaced when they die, and drained to no running application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import requests

from gateway_provisioners.provisioners import pooling

from ...support import pools
from .conftest import RealYarn, write_real_yarn_spec

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
async def drained() -> AsyncIterator[None]:
    yield
    await pooling.drain_pools()


def running_apps(cluster: RealYarn) -> Any:
    """Applications of a launch id (tagged gp-kernel-<id>) that the RM has not ended."""

    def of(launch_id: str) -> list[dict[str, Any]]:
        reply = requests.get(f"{cluster.endpoint}/ws/v1/cluster/apps",
                             params={"applicationTags": f"gp-kernel-{launch_id}"}, timeout=10)  # fmt: skip
        reply.raise_for_status()
        apps = (reply.json().get("apps") or {}).get("app") or []
        return [app for app in apps if app["state"] not in ("FINISHED", "FAILED", "KILLED")]

    return of


async def test_claimed_yarn_kernel(jupyter_path: Path, real_yarn: RealYarn, tmp_path: Path) -> None:
    write_real_yarn_spec(jupyter_path, "gp-yarn-pool", real_yarn, pool_size=2)
    folder = tmp_path / "work"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    await pools.claim_scenario("gp-yarn-pool", running_apps(real_yarn), working_dir=str(folder), timeout=300)


async def test_dead_pooled_yarn_kernel(jupyter_path: Path, real_yarn: RealYarn) -> None:
    write_real_yarn_spec(jupyter_path, "gp-yarn-pool", real_yarn, pool_size=2)
    await pools.dead_kernel_scenario("gp-yarn-pool", running_apps(real_yarn), timeout=300)


async def test_drain_yarn_pool(jupyter_path: Path, real_yarn: RealYarn) -> None:
    write_real_yarn_spec(jupyter_path, "gp-yarn-pool", real_yarn, pool_size=2, pool_refill_concurrency=2)
    await pools.drain_scenario("gp-yarn-pool", running_apps(real_yarn), timeout=300)
