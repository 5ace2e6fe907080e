"""YARN: ResourceManager requests per launch and per idle kernel-minute, and launch latency, against the RM emulator.

    python benchmarks/yarn_rm_requests.py [--kernels 50] [--window 6] [--concurrency 1,16]

Requests are counted at the emulator (tests/integration/yarn/rm_emulator.py) over a short window and scaled to a
minute. "batched" is this library's shared poller at its default interval (15 s; measured at a 0.5 s interval and
scaled by 0.5/15). "older pattern" replays what gateway_provisioners 0.5 does per kernel: jupyter_client's restarter
polls each kernel every 3 s and each poll is one GET /ws/v1/cluster/apps/{id}/state (20 per kernel-minute), measured
with the real yarn-api-client over the same window. Launch latency: real kernels (agent + ipykernel on this machine)
through YarnBackend/RemoteKernel with REST submission, N at once; requests per launch counted the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.yarn.rm_emulator import RMServer, RMState, make_workdir

from gateway_provisioners.adapters.yarn import ApplicationPoller, ResourceManagerClient, YarnBackend, YarnShared
from gateway_provisioners.adapters.yarn.poller import Followed
from gateway_provisioners.core.backend import BackendHandle
from gateway_provisioners.core.kernel import RemoteKernel
from gateway_provisioners.core.launch import ConnectionMode, LaunchSpec
from gateway_provisioners.listener import ResponseListener

IDLE_INTERVAL = 15.0
OLD_POLL_SECONDS = 3.0  # jupyter_client KernelRestarter.time_to_dead default


async def idle(kernels: int, window: float) -> dict[str, float]:
    state = RMState(make_workdir())
    rm = RMServer(state)
    client = ResourceManagerClient([rm.url], service_user="gp-server")
    app_ids = [state.add_running(f"k{i}", ["gateway-provisioners", f"gp-launch-b{i}"]) for i in range(kernels)]

    async def no_kill(app_id: str, user: str | None) -> None:
        return None

    interval = 0.5
    poller = ApplicationPoller(client, interval=interval, startup_interval=interval, kill=no_kill)
    handles = [BackendHandle(f"k{i}") for i in range(kernels)]
    for i, handle in enumerate(handles):
        poller.follow(Followed(handle, f"gp-launch-b{i}", int(time.time() * 1000), None))
    await asyncio.gather(*(h.wait_changed() for h in handles))
    before = state.total_requests()
    await asyncio.sleep(window)
    batched = state.total_requests() - before
    await poller.close()

    # The older pattern, with the real client and in real time: one state request per kernel per restarter poll.
    async def old_kernel(app_id: str, stop: float) -> None:
        while time.monotonic() < stop:
            await client.call(lambda rm: rm.cluster_application_state(app_id))
            await asyncio.sleep(OLD_POLL_SECONDS)

    old_window = max(window, 4 * OLD_POLL_SECONDS)
    before = state.total_requests()
    stop = time.monotonic() + old_window
    await asyncio.gather(*(old_kernel(a, stop) for a in app_ids))
    old = state.total_requests() - before
    client.close()
    rm.stop()
    shutil.rmtree(state.workdir, ignore_errors=True)
    scale = interval / IDLE_INTERVAL  # measured at a 0.5 s interval, reported at the default 15 s
    per_minute = 60 / window * scale / kernels
    old_per_minute = old * 60 / old_window / kernels
    return {"batched": batched * per_minute, "old": old_per_minute, "batched_raw": batched, "old_raw": old,
            "old_window": old_window}  # fmt: skip


async def launches(concurrency: int) -> tuple[list[float], float]:
    state = RMState(make_workdir())
    rm = RMServer(state)
    listener = ResponseListener(__import__("gateway_provisioners.listener", fromlist=["x"]).shared_broker(), port=0)
    await listener.start()
    shared = YarnShared.get((rm.url,), service_user="gp-server", interval=15, startup_interval=0.1)
    # The emulator runs AM commands as plain processes and speaks no AMRM protocol: the agent is the AM there.
    backend = YarnBackend(shared, python=sys.executable, application_master="agent")
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernels = [RemoteKernel(backend, f"bench-{concurrency}-{i}", broker=listener.broker) for i in range(concurrency)]

    async def one(kernel: RemoteKernel) -> float:
        spec = LaunchSpec(kernel.kernel_id, argv, username="bench", mode=ConnectionMode.CALLBACK,
                          response_address=listener.address, launch_timeout=120,
                          env={"PATH": os.environ["PATH"]})  # fmt: skip
        started = time.perf_counter()
        await kernel.start(spec)
        return time.perf_counter() - started

    before = state.total_requests()
    times = await asyncio.gather(*(one(k) for k in kernels))
    per_launch = (state.total_requests() - before) / concurrency
    await asyncio.gather(*(k.shutdown(grace=0) for k in kernels))
    await YarnShared.close_all()
    listener.close()
    rm.stop()
    state.shutdown()
    shutil.rmtree(state.workdir, ignore_errors=True)
    return list(times), per_launch


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", type=int, default=50)
    parser.add_argument("--window", type=float, default=6.0)
    parser.add_argument("--concurrency", default="1,16")
    args = parser.parse_args()
    result = await idle(args.kernels, args.window)
    print(f"idle, {args.kernels} kernels, window {args.window:g} s (requests counted at the emulator):")
    print(f"  batched poller: {result['batched_raw']:.0f} requests → {result['batched']:.3f} per idle kernel-minute "
          f"at the default {IDLE_INTERVAL:g} s interval")  # fmt: skip
    print(f"  older pattern : {result['old_raw']:.0f} requests in {result['old_window']:g} s → {result['old']:.2f} "
          "per idle kernel-minute "
          f"(ratio {result['old'] / max(result['batched'], 1e-9):.0f}x)")  # fmt: skip
    for n in (int(c) for c in args.concurrency.split(",")):
        times, per_launch = await launches(n)
        print(f"launch latency, {n} at once: median {statistics.median(times):.2f} s, max {max(times):.2f} s; "
              f"RM requests per launch {per_launch:.1f}")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
