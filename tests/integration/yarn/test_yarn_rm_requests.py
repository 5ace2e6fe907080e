"""The shared poller's cost on the ResourceManager, counted at the emulator: one query per interval, whatever the
number of kernels. The window is short (CI has no minute to spare); the per-minute figure is derived from it."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway_provisioners.adapters.yarn import ApplicationPoller, ResourceManagerClient
from gateway_provisioners.adapters.yarn.poller import Followed
from gateway_provisioners.core.backend import BackendHandle, PlatformState

from .rm_emulator import RMServer, RMState

pytestmark = pytest.mark.integration

APPS = ("GET", "/ws/v1/cluster/apps")


async def idle_queries(rm: RMServer, state: RMState, kernels: int, interval: float, window: float) -> tuple[int, int]:
    """Follow ``kernels`` running applications; returns (RM requests of any kind, list queries) during ``window``."""
    client = ResourceManagerClient([rm.url], service_user="gp-server")

    async def no_kill(app_id: str, user: str | None) -> None:
        raise AssertionError("nothing should be killed")

    poller = ApplicationPoller(client, interval=interval, startup_interval=interval, kill=no_kill)
    handles = []
    for i in range(kernels):
        tag = f"gp-launch-idle{i:03d}"
        state.add_running(f"kernel-{i}", ["gateway-provisioners", f"gp-kernel-k{i}", tag])
        handle = BackendHandle(f"k{i}")
        handles.append(handle)
        poller.follow(Followed(handle, tag, int(time.time() * 1000), None))
    try:
        # Every handle is fed from the one query (and none by a request of its own).
        await asyncio.wait_for(asyncio.gather(*(h.wait_changed() for h in handles)), 10)
        assert all(h.observation.state is PlatformState.STARTING and h.observation.ip for h in handles)
        total_before, before = state.total_requests(), state.requests[APPS]
        await asyncio.sleep(window)  # the measurement window itself, not a wait for something to happen
        return state.total_requests() - total_before, state.requests[APPS] - before
    finally:
        await poller.close()
        client.close()


async def test_one_query_per_interval_for_50_idle_kernels(rm: RMServer, rm_state: RMState) -> None:
    interval, window = 0.2, 3.0
    total_50, lists_50 = await idle_queries(rm, rm_state, 50, interval, window)
    expected = window / interval
    assert total_50 == lists_50, "idle kernels cost list queries only: no per-kernel requests"
    assert expected - 2 <= lists_50 <= expected + 1, (lists_50, expected)
    per_kernel_minute_at_default = (60 / 15.0) / 50  # the default GP_YARN_POLL_INTERVAL is 15 s
    print(
        f"\n50 idle kernels, poll interval {interval} s, window {window} s: {lists_50} RM requests "
        f"→ {lists_50 / window * 60 / 50:.2f} per idle kernel-minute at this interval; "
        f"{per_kernel_minute_at_default:.2f} at the default 15 s"
    )


async def test_cost_does_not_grow_with_the_number_of_kernels(rm: RMServer, rm_state: RMState) -> None:
    _, one = await idle_queries(rm, rm_state, 1, 0.2, 2.0)
    _, fifty = await idle_queries(rm, rm_state, 50, 0.2, 2.0)
    assert abs(fifty - one) <= 2, (one, fifty)
