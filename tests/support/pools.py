"""The warm-pool scenarios every backend's tests run: real kernels through a real AsyncKernelManager.

A backend's test module writes a kernel spec with ``pool_size`` in its provisioner config and passes a function that
lists what still runs (or exists on the platform) for a launch id; the scenarios assert the issue's promises:
a claimed kernel has run nobody's code and has the launch's values, its key was never given out, restart and shutdown
behave as for a cold kernel, a dead pooled kernel is replaced and never handed out, a launch the pool cannot serve
starts cold and says why, and draining leaves nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

import psutil
import pytest
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning.factory import KernelProvisionerFactory

from gateway_provisioners.provisioners import pooling

from .kernels import run_code

Leftovers = Callable[[str], list[Any]]  # launch id -> what still runs or exists for it

PROBE = (
    "import os, json; print(json.dumps({'cwd': os.getcwd(), 'kernel_id': os.environ.get('KERNEL_ID'), "
    "'extra': os.environ.get('KERNEL_POOL_TEST'), 'history': len(In), "
    "'names': sorted(n for n in dir() if not n.startswith('_'))}))"
)


async def warm_up(kernel_name: str) -> pooling.WarmPool:
    """Start ``kernel_name``'s pool as the server does at start-up (a provisioner made for it, no launch)."""
    km = AsyncKernelManager(kernel_name=kernel_name)
    provisioner = KernelProvisionerFactory.instance(parent=km.parent).create_provisioner_instance(
        "warm-up", km.kernel_spec, parent=km
    )
    warm = await pooling.ensure_pool(provisioner, kernel_name)
    assert warm is not None, f"{kernel_name} has no pool_size"
    return warm


def processes_of(launch_id: str) -> list[psutil.Process]:
    """Processes on this machine of a launch (local and loopback-SSH kernels): agent by command line, kernel by env."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if launch_id in " ".join(proc.info["cmdline"] or []) or proc.environ().get("KERNEL_ID") == launch_id:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return [p for p in found if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def pool_of(kernel_name: str) -> pooling.WarmPool:
    found = [warm for warm in pooling.pools() if warm.reference.kernel_name == kernel_name]
    assert found, f"no pool for {kernel_name}: {pooling.pools()}"
    return found[0]


async def probe(km: AsyncKernelManager) -> dict[str, Any]:
    content, out = await run_code(km, PROBE, timeout=60)
    assert content["status"] == "ok", content
    return dict(json.loads(out.strip().splitlines()[-1]))


async def wait_gone(leftovers: Leftovers, launch_id: str, timeout: float = 30.0) -> list[Any]:
    """What is left of ``launch_id`` once it is gone or ``timeout`` passed (the platform may take a moment)."""
    deadline = time.monotonic() + timeout
    while (left := await asyncio.to_thread(leftovers, launch_id)) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return left


def _env(**values: str) -> dict[str, str]:
    import os

    return {**os.environ, **values}


async def claim_scenario(
    kernel_name: str, leftovers: Leftovers, *, working_dir: str | None = None, timeout: float = 120.0
) -> None:
    """The first launch starts the pool (cold); a second launch claims a pooled kernel with its own values."""
    cold = AsyncKernelManager(kernel_name=kernel_name)
    await cold.start_kernel()
    try:
        assert cold.provisioner.kernel.launch_id == cold.kernel_id, "the first launch cannot have found a ready kernel"
        warm = pool_of(kernel_name)
        await warm.pool.wait_ready(timeout=timeout)
        pooled_keys = {p.kernel.launch_id: p.kernel.connection_info["key"] for p in warm.pool._ready}

        env = _env(KERNEL_POOL_TEST="claimed")
        if working_dir:
            env["KERNEL_WORKING_DIR"] = working_dir
        km = AsyncKernelManager(kernel_name=kernel_name)
        await km.start_kernel(env=env)
        launch_id = km.provisioner.kernel.launch_id
        try:
            assert launch_id != km.kernel_id and launch_id in pooled_keys, "the launch did not claim a pooled kernel"
            key = km.get_connection_info()["key"].decode()
            assert key == pooled_keys[launch_id]
            others = [k for lid, k in pooled_keys.items() if lid != launch_id]
            assert key not in others and key != cold.get_connection_info()["key"].decode()
            assert launch_id not in {p.kernel.launch_id for p in warm.pool._ready}, "a claimed kernel left the pool"

            seen, fresh = await probe(km), await probe(cold)
            assert seen["kernel_id"] == km.kernel_id, "KERNEL_ID must be the claiming kernel's id"
            assert seen["extra"] == "claimed", "the launch's environment was not applied"
            assert seen["history"] == fresh["history"] and seen["names"] == fresh["names"], (
                f"the claimed kernel has run code a fresh one has not: {seen} vs {fresh}"
            )
            if working_dir:
                assert seen["cwd"] == working_dir

            await km.restart_kernel()  # in place: the restarted process gets the launch's values again
            again = await probe(km)
            assert (again["kernel_id"], again["extra"]) == (km.kernel_id, "claimed")
            if working_dir:
                assert again["cwd"] == working_dir
            assert km.provisioner.kernel.launch_id == launch_id
        finally:
            await km.shutdown_kernel(now=True)
        assert not await wait_gone(leftovers, launch_id), f"claimed kernel {launch_id} left something after shutdown"
        await warm.pool.wait_ready(timeout=timeout)  # refilled behind the claim
    finally:
        await cold.shutdown_kernel(now=True)


async def dead_kernel_scenario(kernel_name: str, leftovers: Leftovers, timeout: float = 120.0) -> None:
    """A pooled kernel that dies is replaced and never handed out."""
    warm = await warm_up(kernel_name)
    await warm.pool.wait_ready(timeout=timeout)
    victim = warm.pool._ready[0].kernel
    replaced = warm.pool.replaced
    await victim.signal(signal.SIGKILL)  # the kernel process dies; its agent reports it
    deadline = time.monotonic() + timeout
    while warm.pool.replaced == replaced and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert warm.pool.replaced > replaced, "the dead pooled kernel was not noticed"
    km = AsyncKernelManager(kernel_name=kernel_name)
    await km.start_kernel()
    try:
        assert km.provisioner.kernel.launch_id != victim.launch_id, "a dead pooled kernel was handed out"
        assert (await probe(km))["kernel_id"]
    finally:
        await km.shutdown_kernel(now=True)
    assert not await wait_gone(leftovers, victim.launch_id), "the dead pooled kernel left something behind"


async def cold_with_reason_scenario(kernel_name: str, caplog: pytest.LogCaptureFixture) -> None:
    """A launch whose user is not the pool's starts cold and the log says why."""
    warm = await warm_up(kernel_name)
    await warm.pool.wait_ready(count=1)
    caplog.set_level(logging.INFO)
    km = AsyncKernelManager(kernel_name=kernel_name)
    await km.start_kernel(env=_env(KERNEL_USERNAME="someone-else"))
    try:
        assert km.provisioner.kernel.launch_id == km.kernel_id
        assert any("not from the pool: KERNEL_USERNAME 'someone-else'" in r.getMessage() for r in caplog.records)
    finally:
        await km.shutdown_kernel(now=True)


async def drain_scenario(kernel_name: str, leftovers: Leftovers, timeout: float = 120.0) -> None:
    """Draining ends every pooled kernel, ready or starting, and leaves nothing on the platform."""
    warm = await warm_up(kernel_name)
    await warm.pool.wait_ready(count=1, timeout=timeout)
    launch_ids = [p.kernel.launch_id for p in warm.pool._ready]
    await pooling.drain_pools()
    assert warm.pool.closed and warm.pool.ready == 0 and warm.pool.starting == 0
    for launch_id in launch_ids:
        assert not await wait_gone(leftovers, launch_id), f"pooled kernel {launch_id} left something after draining"
