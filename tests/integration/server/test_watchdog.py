"""The agent's watchdog and persistence agree: a kernel whose server comes back within the watchdog's time is
reattached; one whose server stays away longer ends by itself, and the next server forgets it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import psutil
import pytest

from ...conftest import pid_gone, write_kernel_spec
from .conftest import JupyterServer, execute
from .test_progress_errors_metrics import metric

pytestmark = pytest.mark.integration


def spec_with_watchdog(jupyter_path: Path, seconds: int) -> str:
    name = f"gp-watchdog-{seconds}"
    write_kernel_spec(jupyter_path, name, config={"agent_watchdog": seconds})
    return name


async def test_server_back_within_the_watchdog_reattaches(make_server, jupyter_path: Path) -> None:
    grace = 15
    spec = spec_with_watchdog(jupyter_path, grace)
    server: JupyterServer = await make_server()
    kernel = await server.request("POST", "/api/kernels", {"name": spec})
    assert (await execute(server, kernel["id"], "x = 42"))[0] == "ok"
    pid = int(server.records()[kernel["id"]]["provisioner_info"]["gateway_provisioners"]["handle"]["pid"])

    server.kill()
    gone_at = time.monotonic()
    await server.start()
    await server.wait_listed(kernel["id"])
    back_after = time.monotonic() - gone_at
    assert back_after < grace, f"the server took {back_after:.1f} s to come back: longer than the watchdog"
    assert (await execute(server, kernel["id"], "print(x)"))[1].strip() == "42"
    # The new server's connection resets the watchdog: the kernel lives on past the grace counted from the kill.
    assert not pid_gone(pid, max(0.0, grace + 2 - (time.monotonic() - gone_at)))
    assert (await execute(server, kernel["id"], "print(x + 1)"))[1].strip() == "43"
    await server.request("DELETE", f"/api/kernels/{kernel['id']}")


async def test_server_away_longer_than_the_watchdog_finds_the_kernel_gone(make_server, jupyter_path: Path) -> None:
    grace = 3
    spec = spec_with_watchdog(jupyter_path, grace)
    server: JupyterServer = await make_server()
    kernel = await server.request("POST", "/api/kernels", {"name": spec})
    handle = server.records()[kernel["id"]]["provisioner_info"]["gateway_provisioners"]["handle"]

    server.kill()
    gone_at = time.monotonic()
    assert pid_gone(int(handle["pid"]), grace + 10), "the watchdog did not end the agent"
    ended_after = time.monotonic() - gone_at
    assert ended_after >= grace - 0.5, f"the agent ended {ended_after:.1f} s after its server: before the watchdog"
    assert not psutil.pid_exists(int(handle["kernel_pgid"])) or pid_gone(int(handle["kernel_pgid"]), 5)

    await server.start()
    deadline = time.monotonic() + 30
    while kernel["id"] in server.records():
        assert time.monotonic() < deadline, server.log_tail()
        await asyncio.sleep(0.1)  # polling the store until the start-up reattach has run, bounded by the deadline
    assert kernel["id"] not in await server.kernel_ids()
    metrics = await server.request("GET", "/metrics")
    assert metric(metrics, "gateway_provisioners_kernels_orphaned_total", backend="local") == 1
