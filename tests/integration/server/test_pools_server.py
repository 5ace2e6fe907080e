"""Warm pools in a real ``jupyter server``: warmed at start, claimed through the REST API with the notebook's folder,
drained at stop, never stored, and ended by their agents' watchdog when the server is killed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import psutil
import pytest

from ...conftest import pid_gone, write_kernel_spec
from .conftest import JupyterServer, execute

pytestmark = pytest.mark.integration


def pooled_spec(jupyter_path: Path, watchdog: float, size: int = 2) -> str:
    write_kernel_spec(jupyter_path, "gp-pooled", config={"pool_size": size, "agent_watchdog": watchdog})
    return "gp-pooled"


def agents(server: JupyterServer) -> dict[str, int]:
    """The server's agents by the id they were launched under (pooled or not): launch id -> pid."""
    assert server.proc is not None
    found = {}
    for proc in psutil.Process(server.proc.pid).children():
        try:
            if "gp_agent" in " ".join(proc.cmdline()):
                found[proc.environ().get("KERNEL_ID", "?")] = proc.pid
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


async def wait_full(server: JupyterServer, times: int = 1, timeout: float = 60) -> None:
    """Wait for the pool's "2 of 2 kernels ready" line to have been logged ``times`` times."""
    deadline = time.monotonic() + timeout
    while server.log_path.read_text(errors="replace").count("2 of 2 kernels ready") < times:
        if time.monotonic() > deadline:
            raise AssertionError(f"the pool was not full after {timeout} s:\n{server.log_tail()}")
        await asyncio.sleep(0.1)  # polling another process's log, bounded by the deadline


async def test_pool_warms_at_start_serves_a_notebook_and_drains_at_stop(make_server, jupyter_path: Path) -> None:
    spec = pooled_spec(jupyter_path, watchdog=120)
    server: JupyterServer = await make_server()
    await wait_full(server)  # warmed with the server, before any request
    pooled = agents(server)

    kernel = await server.request("POST", "/api/kernels", {"name": spec, "path": "sub dir/notebook.ipynb"})
    status, out = await execute(server, kernel["id"], "import os; print(os.getcwd(), os.environ['KERNEL_ID'])")
    assert status == "ok"
    cwd, kernel_id = out.strip().rsplit(" ", 1)
    assert (cwd, kernel_id) == (str(server.root / "notebooks" / "sub dir"), kernel["id"])
    assert "claimed from the pool" in server.log_tail(200), server.log_tail()
    claimed = server.records()[kernel["id"]]["provisioner_info"]["gateway_provisioners"]["launch_id"]
    assert claimed in pooled, "the kernel was not one of the pooled ones"
    assert list(server.records()) == [kernel["id"]], "only claimed kernels are stored, never pooled ones"

    await wait_full(server, 2)  # refilled behind the claim
    everything = agents(server)
    assert server.terminate() == 0
    for launch_id, pid in everything.items():
        if launch_id != claimed:
            assert pid_gone(pid, 10), f"pooled agent {launch_id} outlived the server's stop"
    assert not pid_gone(everything[claimed], 0.5), "the claimed kernel is kept for the next server, as any other"

    await server.start()  # reattaches the claimed kernel only, and warms a new pool
    await server.wait_listed(kernel["id"])
    assert await server.kernel_ids() == [kernel["id"]]
    await server.request("DELETE", f"/api/kernels/{kernel['id']}")
    assert pid_gone(everything[claimed], 10)
    await wait_full(server, 3)  # the second server's pool
    fresh = agents(server)
    assert not set(fresh) & set(everything), "a pooled kernel of the old server was reused"
    assert server.terminate() == 0
    for pid in fresh.values():
        assert pid_gone(pid, 10)


async def test_killed_server_leaves_pooled_kernels_to_the_watchdog(make_server, jupyter_path: Path) -> None:
    grace = 3
    pooled_spec(jupyter_path, watchdog=grace)
    server: JupyterServer = await make_server()
    await wait_full(server)
    pooled = agents(server)
    server.kill()
    for launch_id, pid in pooled.items():
        assert pid_gone(pid, grace + 10), f"pooled agent {launch_id} outlived its killed server's watchdog"
    await server.start()
    assert server.records() == {} and await server.kernel_ids() == [], "pooled kernels were stored or reattached"
    await wait_full(server, 2)
    fresh = agents(server)
    assert server.terminate() == 0
    for pid in fresh.values():
        assert pid_gone(pid, 10)
