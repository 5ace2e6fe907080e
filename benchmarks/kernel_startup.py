"""Kernel start-up, restart and shutdown: jupyter_client's local kernel against local-agent-provisioner, plain and
with CurveZMQ-encrypted channels, side by side.

Run:  python benchmarks/kernel_startup.py [--runs 10] [--markdown]

Each round starts one kernel of each kind, alternating the order, in the same process and event loop, so that all
see the same machine load. Measured per kernel:

* start-up: ``await km.start_kernel()`` until the first ``kernel_info`` reply (``wait_for_ready``);
* a round trip: the median of 20 ``execute`` requests of ``pass`` (request to idle status) on one client;
* restart: ``await km.restart_kernel()`` until a fresh client gets ``kernel_info``;
* shutdown: ``await km.shutdown_kernel()`` returning, and until the kernel's process is gone;
* the longest event-loop stall while all that happened (a 5 ms probe's lateness).

Medians are compared as ratios (agent / local, encrypted / plain agent): these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager

from _measure import StallProbe, gone_after, kernel_pid, ready, summary

SPECS = {
    "local (jupyter_client LocalProvisioner)": "bench-local",
    "local-agent-provisioner": "bench-agent",
    "local-agent-provisioner, CurveZMQ": "bench-agent-curve",
}


def write_specs(root: Path) -> None:
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    for name, provisioner in (("bench-local", "local-provisioner"), ("bench-agent", "local-agent-provisioner"),
                              ("bench-agent-curve", "local-agent-provisioner")):  # fmt: skip
        folder = root / "kernels" / name
        folder.mkdir(parents=True, exist_ok=True)
        metadata: dict[str, object] = {"kernel_provisioner": {"provisioner_name": provisioner}}
        if name.endswith("-curve"):
            metadata["supported_encryption"] = ["curve"]
        spec = {"argv": argv, "display_name": name, "language": "python", "interrupt_mode": "signal",
                "metadata": metadata}  # fmt: skip
        (folder / "kernel.json").write_text(json.dumps(spec))


async def round_trip(km: AsyncKernelManager, count: int = 20) -> float:
    """The median time of ``count`` trivial execute requests, each until the kernel is idle again."""
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=60)
        times = []
        for _ in range(count):
            t = time.monotonic()
            await kc.execute_interactive("pass", timeout=30)
            times.append(time.monotonic() - t)
        return statistics.median(times)
    finally:
        kc.stop_channels()


async def one_kernel(spec: str) -> dict[str, float]:
    probe = StallProbe().start()
    km = AsyncKernelManager(kernel_name=spec, transport_encryption="auto")  # encrypts only the spec declaring curve
    t = time.monotonic()
    await km.start_kernel(env={**os.environ, "KERNEL_USERNAME": "bench"})
    await ready(km)
    startup = time.monotonic() - t
    if spec.endswith("-curve") != bool(km.get_connection_info().get("curve_publickey")):
        raise RuntimeError(f"{spec}: encryption is not as the kernel spec declares")
    execute = await round_trip(km)
    t = time.monotonic()
    await km.restart_kernel()
    await ready(km)
    restart = time.monotonic() - t
    pid = await kernel_pid(km)
    t = time.monotonic()
    await km.shutdown_kernel()
    shutdown = time.monotonic() - t
    gone = await asyncio.get_running_loop().run_in_executor(None, gone_after, pid, t)
    return {"startup": startup, "execute": execute, "restart": restart, "shutdown": shutdown, "gone": gone,
            "stall": await probe.stop()}  # fmt: skip


async def main(runs: int) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {label: {} for label in SPECS}
    for spec in SPECS.values():
        await one_kernel(spec)  # warm-up: imports and disk caches, not measured
    for round_no in range(runs):
        order = list(SPECS.items()) if round_no % 2 == 0 else list(reversed(SPECS.items()))
        for label, spec in order:
            for key, value in (await one_kernel(spec)).items():
                results[label].setdefault(key, []).append(value)
        print(f"round {round_no + 1}/{runs} done", file=sys.stderr)
    return results


def report(results: dict[str, dict[str, list[float]]], runs: int) -> str:
    rows = [
        f"Machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{runs} rounds, alternating order; seconds, min / **median** / max.",
        "",
        "| kernel | start-up (to kernel_info) | execute round trip | restart (to kernel_info) | shutdown returns | "
        "kernel process gone after shutdown | longest event-loop stall |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, data in results.items():
        cells = [summary(data[k]) for k in ("startup", "execute", "restart", "shutdown", "gone", "stall")]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    local, agent, curve = (results[label] for label in SPECS)
    keys = ("startup", "execute", "restart", "shutdown")
    for name, top, bottom in (("agent / local", agent, local), ("encrypted / plain agent", curve, agent)):
        ratios = {k: statistics.median(top[k]) / statistics.median(bottom[k]) for k in keys}
        difference_ms = 1000 * (statistics.median(top["startup"]) - statistics.median(bottom["startup"]))
        rows.append("")
        rows.append(
            f"Ratio of medians, {name}: "
            + ", ".join(f"{k} **{v:.2f}x**" for k, v in ratios.items())
            + f"; start-up difference {difference_ms:+.0f} ms."
        )
    return "\n".join(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="rounds (one kernel of each kind per round)")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gp-bench-") as tmp:
        write_specs(Path(tmp))
        os.environ["JUPYTER_PATH"] = tmp
        if os.geteuid() == 0:  # the kernels run as this user: as root, allow it explicitly (allow_root_kernels)
            os.environ["GP_ALLOW_ROOT_KERNELS"] = "true"
        data = asyncio.run(main(args.runs))
    if args.json:
        args.json.write_text(json.dumps(data, indent=2))
    print(report(data, args.runs))
