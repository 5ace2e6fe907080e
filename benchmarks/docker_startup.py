"""Kernels in Docker containers: the floor (``docker run`` of ipykernel alone) against docker-provisioner (and Swarm).

Run:  python benchmarks/docker_startup.py --image gp-test-kernel:suite [--runs 10] [--concurrency 1,8,16] [--swarm]

The image is the one the Docker tests build (scripts/build-test-image.sh + jupyter-image-bootstrap build). Measured,
all in one process and event loop so every contender sees the same machine load:

* floor: ``docker run -d --network host`` of the image starting ``python3 -m ipykernel_launcher`` directly (no agent,
  no provisioner), from the run call until a client's ``kernel_info`` is answered; then ``docker rm -f``;
* each provisioner variant (docker on host networking = callback mode, docker on a bridge network this script creates =
  server-assigned mode, Swarm on host networking with --swarm): ``start_kernel()`` until ``kernel_info`` is answered,
  ``restart_kernel(now=True)`` until answered again, ``shutdown_kernel(now=True)``;
* concurrent starts: N kernels started at once (``asyncio.gather``), failures counted, wall time and per-kernel times;
* the longest event-loop stall (a 5 ms probe's lateness) and this process's RSS.

Nothing leaves this machine: host networking or a bridge network made here; everything made is labelled and removed.
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
import uuid
from pathlib import Path
from typing import Any

import psutil
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.connect import write_connection_file
from jupyter_client.manager import AsyncKernelManager

from _measure import StallProbe, rss_mib

RUN = uuid.uuid4().hex[:6]
OWNER = f"gp-bench-{RUN}"


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def answered(km_or_client: Any, timeout: float = 60) -> None:
    """Until a ``kernel_info`` request is answered. Without a manager, jupyter_client's wait_for_ready takes a kernel
    that is slow to start for dead (its heartbeat check), so the request is sent once and its reply awaited (ZMQ
    queues the request until the kernel listens)."""
    kc = km_or_client.client() if isinstance(km_or_client, AsyncKernelManager) else km_or_client
    kc.start_channels()
    try:
        msg_id = kc.kernel_info()
        deadline = time.monotonic() + timeout
        while True:
            reply = await kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == msg_id:
                return
    finally:
        kc.stop_channels()


# --- the floor ------------------------------------------------------------------------------------------------------


async def floor_once(client: Any, image: str, workdir: Path) -> float:
    folder = Path(tempfile.mkdtemp(dir=workdir))
    folder.chmod(0o755)
    conn_file, info = write_connection_file(str(folder / "kernel.json"), ip="127.0.0.1")
    os.chmod(conn_file, 0o644)  # the kernel runs as uid 1000 in the container
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    container = await loop.run_in_executor(
        None,
        lambda: client.containers.run(
            image, ["-m", "ipykernel_launcher", "-f", "/conn/kernel.json"], entrypoint="python3", detach=True,
            network_mode="host", user="1000:100", volumes={str(folder): {"bind": "/conn", "mode": "ro"}},
            labels={"org.jupyter.gp.owner": OWNER},
        ),
    )  # fmt: skip
    kc = AsyncKernelClient()
    kc.load_connection_info(info)
    try:
        await answered(kc)
        elapsed = time.perf_counter() - started
    finally:
        await loop.run_in_executor(None, lambda: container.remove(force=True))
    return elapsed


# --- the provisioners -----------------------------------------------------------------------------------------------


def write_spec(root: Path, name: str, provisioner: str, image: str, network: str) -> None:
    folder = root / "kernels" / name
    folder.mkdir(parents=True, exist_ok=True)
    config = {"image_name": image, "network": network, "image_pull_policy": "never", "owner": OWNER}
    spec = {
        "argv": ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": name, "language": "python", "interrupt_mode": "signal",
        "metadata": {"kernel_provisioner": {"provisioner_name": provisioner, "config": config}},
    }  # fmt: skip
    (folder / "kernel.json").write_text(json.dumps(spec))


async def lifecycle_once(spec: str) -> dict[str, float]:
    km = AsyncKernelManager(kernel_name=spec)
    started = time.perf_counter()
    await km.start_kernel()
    await answered(km)
    startup = time.perf_counter() - started
    started = time.perf_counter()
    await km.restart_kernel(now=True)
    await answered(km)
    restart = time.perf_counter() - started
    started = time.perf_counter()
    await km.shutdown_kernel(now=True)
    shutdown = time.perf_counter() - started
    return {"startup": startup, "restart": restart, "shutdown": shutdown}


async def concurrent(spec: str, n: int) -> dict[str, Any]:
    async def one() -> tuple[AsyncKernelManager, float]:
        km = AsyncKernelManager(kernel_name=spec)
        started = time.perf_counter()
        try:
            await km.start_kernel()
            await answered(km)
        except BaseException:
            if km.has_kernel:
                await km.shutdown_kernel(now=True)
            raise
        return km, time.perf_counter() - started

    started = time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    wall = time.perf_counter() - started
    ok = [r for r in results if not isinstance(r, BaseException)]
    errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    rss = rss_mib()
    await asyncio.gather(*(km.shutdown_kernel(now=True) for km, _ in ok), return_exceptions=True)
    return {"n": n, "ok": len(ok), "wall": wall, "times": [t for _, t in ok], "errors": errors[:3], "rss": rss}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    import docker

    client = docker.from_env()
    root = Path(tempfile.mkdtemp(prefix="gp-bench-"))
    os.environ["JUPYTER_PATH"] = str(root)
    os.environ.setdefault("KERNEL_USERNAME", "bench")
    network = client.networks.create(f"gp-bench-{RUN}", driver="bridge", labels={"org.jupyter.gp.owner": OWNER})
    variants = {"docker, host network (callback)": ("docker-provisioner", "host"),
                "docker, bridge network (assigned)": ("docker-provisioner", network.name)}  # fmt: skip
    made_swarm = False
    if args.swarm:
        if client.info()["Swarm"]["LocalNodeState"] == "inactive":
            client.swarm.init(advertise_addr="127.0.0.1")
            made_swarm = True
        variants["swarm, host network (callback)"] = ("docker-swarm-provisioner", "host")
    for i, (provisioner, net) in enumerate(variants.values()):
        write_spec(root, f"bench-{i}", provisioner, args.image, net)
    results: dict[str, Any] = {"floor": [], "variants": {}, "rss_start": rss_mib()}
    probe = StallProbe().start()
    try:
        await floor_once(client, args.image, root)  # warm-up: page cache, engine
        for i in range(len(variants)):
            await lifecycle_once(f"bench-{i}")
        for name in variants:
            results["variants"][name] = {"startup": [], "restart": [], "shutdown": [], "concurrent": []}
        for _ in range(args.runs):  # interleaved rounds: every contender sees the same load
            results["floor"].append(await floor_once(client, args.image, root))
            for i, name in enumerate(variants):
                for key, value in (await lifecycle_once(f"bench-{i}")).items():
                    results["variants"][name][key].append(value)
        for n in args.concurrency:
            for i, name in enumerate(variants):
                for _ in range(args.concurrent_runs):
                    results["variants"][name]["concurrent"].append(await concurrent(f"bench-{i}", n))
    finally:
        results["stall"] = await probe.stop()
        results["rss_end"] = rss_mib()
        for container in client.containers.list(
            all=True, ignore_removed=True, filters={"label": f"org.jupyter.gp.owner={OWNER}"}
        ):
            container.remove(force=True)
        if args.swarm:
            for service in client.services.list(filters={"label": f"org.jupyter.gp.owner={OWNER}"}):
                service.remove()
        network.remove()
        if made_swarm:
            client.swarm.leave(force=True)
    return results


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    floor = med(results["floor"])
    lines = [
        f"Machine: {platform.node()} {platform.machine()}, {psutil.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, runs={args.runs}, image {args.image}",
        "",
        "| contender | start-up median (s) | vs floor | restart median (s) | shutdown median (s) |",
        "|---|---|---|---|---|",
        f"| floor: `docker run` ipykernel, host network | {floor:.3f} | — | — | — |",
    ]
    for name, data in results["variants"].items():
        startup = med(data["startup"])
        lines.append(
            f"| {name} | {startup:.3f} | +{(startup - floor) * 1000:.0f} ms | {med(data['restart']):.3f} "
            f"| {med(data['shutdown']):.3f} |"
        )
    lines += ["", "| contender | concurrent | succeeded | wall (s) | per-kernel median / max (s) | RSS after (MiB) |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for name, data in results["variants"].items():
        for run in data["concurrent"]:
            times = run["times"] or [float("nan")]
            lines.append(
                f"| {name} | {run['n']} | {run['ok']}/{run['n']} | {run['wall']:.2f} | {med(times):.2f} / "
                f"{max(times):.2f} | {run['rss']:.1f} |"
            )
            lines += [f"|  | error: {err} | | | | |" for err in run["errors"]]
    lines += ["", f"Longest event-loop stall over the whole run: {results['stall'] * 1000:.1f} ms. "
              f"RSS: {results['rss_start']:.1f} MiB at start, {results['rss_end']:.1f} MiB at the end."]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default="gp-test-kernel:suite", help="kernel image with the agent")
    parser.add_argument("--runs", type=int, default=10, help="sequential rounds")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 16])
    parser.add_argument("--concurrent-runs", type=int, default=1, help="repetitions of each concurrent start")
    parser.add_argument("--swarm", action="store_true", help="also measure docker-swarm-provisioner (host network)")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    arguments = parser.parse_args()
    outcome = asyncio.run(main(arguments))
    if arguments.json:
        arguments.json.write_text(json.dumps(outcome, indent=1))
    print(report(outcome, arguments))
    sys.exit(0)
