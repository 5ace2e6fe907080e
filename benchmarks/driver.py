"""Measure one kernel spec in this process and print the numbers as JSON (used by ssh_startup.py).

Run under the Python whose jupyter_client and provisioner are being measured:
  python driver.py SPEC [--runs 10] [--gone-runs 2] [--concurrency 16]
The environment (JUPYTER_PATH, KERNEL_USERNAME, ...) comes from the caller. GP_BENCH_PRELOAD=/path/to/file.py, if set,
imports that file before anything is measured (a patch a competitor needs, e.g. the older package's host-network fix).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sys
import time

from jupyter_client.manager import AsyncKernelManager

from _measure import StallProbe, gone_after, kernel_pid, ready, rss_mib


async def start(spec: str) -> tuple[AsyncKernelManager, float]:
    km = AsyncKernelManager(kernel_name=spec)
    t = time.monotonic()
    await km.start_kernel(env=dict(os.environ))
    await ready(km)
    return km, time.monotonic() - t


async def measure(spec: str, runs: int, gone_runs: int, concurrency: int) -> dict[str, object]:
    results: dict[str, list[float]] = {"startup": [], "restart": [], "shutdown": [], "gone": [], "launch_stall": []}
    await (await start(spec))[0].shutdown_kernel()  # warm-up: imports, first connection; not measured
    for index in range(runs):
        probe = StallProbe().start()
        km, startup = await start(spec)
        results["launch_stall"].append(await probe.stop())
        results["startup"].append(startup)
        t = time.monotonic()
        await km.restart_kernel()
        await ready(km)
        results["restart"].append(time.monotonic() - t)
        pid = await kernel_pid(km)
        t = time.monotonic()
        await km.shutdown_kernel()
        results["shutdown"].append(time.monotonic() - t)
        if index < gone_runs:
            results["gone"].append(await asyncio.get_running_loop().run_in_executor(None, gone_after, pid, t))
    # Concurrent starts: all at once, in one event loop, as a busy server would.
    probe = StallProbe().start()
    t = time.monotonic()
    outcomes = await asyncio.gather(*(start(spec) for _ in range(concurrency)), return_exceptions=True)
    wall = time.monotonic() - t
    stall = await probe.stop()
    managers = [o[0] for o in outcomes if not isinstance(o, BaseException)]
    rss = rss_mib()
    await asyncio.gather(*(km.shutdown_kernel() for km in managers), return_exceptions=True)
    failures = [repr(o)[:200] for o in outcomes if isinstance(o, BaseException)]
    return {
        **results,
        "concurrent": {
            "count": concurrency,
            "ok": len(managers),
            "all_ready_s": wall,
            "stall_s": stall,
            "rss_mib_with_kernels": rss,
            "failures": failures,
        },
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("spec")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--gone-runs", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    preload = os.environ.get("GP_BENCH_PRELOAD")
    if preload:
        loader = importlib.util.spec_from_file_location("gp_bench_preload", preload)
        if loader is None or loader.loader is None:
            sys.exit(f"GP_BENCH_PRELOAD={preload}: not an importable .py file; give the path of a Python file")
        loader.loader.exec_module(importlib.util.module_from_spec(loader))
    numbers = asyncio.run(measure(args.spec, args.runs, args.gone_runs, args.concurrency))
    json.dump(numbers, sys.stdout)
