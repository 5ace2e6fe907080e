"""Kubernetes API requests per launch and per idle kernel-minute, and launch latency at 1/16/64 concurrent launches.

Run:  python benchmarks/k8s_api_requests.py [--idle 10] [--concurrency 1 16 64]

Everything runs against the in-process API emulator of the test suite (tests/integration/kubernetes), with its kubelet
starting the real agent for each pod; the kernels are the stand-in kernel of the scale test (binds its five ports),
so that 64 concurrent launches fit on a small machine. Requests are counted at the emulator.

"older pattern" replays the request pattern of the older package's KubernetesProvisioner against the same emulator and
kubelet (its code path, anchor-features.md §1.10: create the pod, then list_namespaced_pod with the kernel's label every
0.5 s until it runs, then once per poll() — every 3 s, jupyter_client's restarter interval — while idle). It is not the
old package itself (it cannot run here: it needs a reachable response address and its own pod template directory).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jupyter_client.manager import AsyncKernelManager  # noqa: E402
from tests.conftest import write_kernel_spec  # noqa: E402
from tests.integration.kubernetes.conftest import NAMESPACE, provisioner_config  # noqa: E402
from tests.integration.kubernetes.emulator import KubeEmulator  # noqa: E402
from tests.integration.kubernetes.kubelet import Kubelet  # noqa: E402
from tests.integration.kubernetes.test_k8s_watch import STANDIN  # noqa: E402

from gateway_provisioners.adapters.kubernetes import close_hubs  # noqa: E402
from gateway_provisioners.adapters.kubernetes.client import KubeClient  # noqa: E402

POLL_EVERY = 3.0  # jupyter_client's KernelRestarter.time_to_dead


async def new_provisioner(kube: KubeEmulator, n: int, idle: float) -> dict[str, float]:
    managers = [AsyncKernelManager(kernel_name="bench-k8s") for _ in range(n)]
    mark = kube.mark()
    started = time.monotonic()
    latencies: list[float] = []

    async def start(km: AsyncKernelManager) -> None:
        t0 = time.monotonic()
        await km.start_kernel()
        latencies.append(time.monotonic() - t0)

    await asyncio.gather(*(start(km) for km in managers))
    wall = time.monotonic() - started
    launch_requests = len(kube.requests_since(mark))
    mark = kube.mark()
    deadline = time.monotonic() + idle
    while time.monotonic() < deadline:  # the restarter's polls
        assert all(await asyncio.gather(*(km.is_alive() for km in managers)))
        await asyncio.sleep(POLL_EVERY)
    idle_requests = len(kube.requests_since(mark))
    await asyncio.gather(*(km.shutdown_kernel(now=True) for km in managers))
    return {
        "launch_median_s": statistics.median(latencies), "launch_max_s": max(latencies), "wall_s": wall,
        "requests_per_launch": launch_requests / n, "idle_per_kernel_minute": idle_requests / n / idle * 60,
    }  # fmt: skip


async def older_pattern(kube: KubeEmulator, kubeconfig: str, n: int, idle: float) -> dict[str, float]:
    """The older package's calls, on the same client library, emulator and kubelet (pods park once Running)."""
    client = KubeClient(kubeconfig)
    core = await client.core()
    mark = kube.mark()
    latencies: list[float] = []

    async def launch(i: int) -> None:
        t0 = time.monotonic()
        labels = {"kernel_id": f"old-{i}", "component": "kernel"}
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"old-{i}", "labels": labels},
               "spec": {"containers": [{"name": "kernel", "image": "old/kernel:run-no-agent"}]}}  # fmt: skip
        await client.create_pod(NAMESPACE, pod)
        while True:
            await asyncio.sleep(0.5)  # GP_POLL_INTERVAL
            data = await client._json(core.list_namespaced_pod, NAMESPACE, label_selector=f"kernel_id=old-{i}")
            status = (data["items"] or [{}])[0].get("status") or {}
            if status.get("phase") == "Running" and status.get("podIP"):
                break
        latencies.append(time.monotonic() - t0)

    await asyncio.gather(*(launch(i) for i in range(n)))
    launch_requests = len(kube.requests_since(mark))
    mark = kube.mark()
    deadline = time.monotonic() + idle
    while time.monotonic() < deadline:
        await asyncio.gather(*(client._json(core.list_namespaced_pod, NAMESPACE, label_selector=f"kernel_id=old-{i}")
                               for i in range(n)))  # fmt: skip
        await asyncio.sleep(POLL_EVERY)
    idle_requests = len(kube.requests_since(mark))
    for i in range(n):
        await client.delete_pod(NAMESPACE, f"old-{i}")
    await client.close()
    return {"launch_median_s": statistics.median(latencies), "requests_per_launch": launch_requests / n,
            "idle_per_kernel_minute": idle_requests / n / idle * 60}  # fmt: skip


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        async with KubeEmulator(namespaces=("default", NAMESPACE)) as kube:
            kubelet = Kubelet(kube, root)
            kubelet.distinct_ips = True  # each "pod" binds its own loopback address, as real pods have their own
            kubeconfig = kube.kubeconfig(str(root / "kubeconfig"))
            import os

            os.environ["JUPYTER_PATH"] = str(root / "jupyter")
            os.environ.setdefault("KERNEL_USERNAME", "bench")
            config = provisioner_config(kubeconfig, launch_timeout=120, kernel_bind_ip="0.0.0.0")
            write_kernel_spec(root / "jupyter", "bench-k8s", argv=STANDIN, provisioner="kubernetes-provisioner",
                              config=config)  # fmt: skip
            print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
            print(f"idle window {args.idle:g} s, polls every {POLL_EVERY:g} s; requests counted at the emulator\n")
            print("| provisioner | concurrent | launch median s | launch max s | requests/launch | "
                  "requests per idle kernel-minute |")  # fmt: skip
            print("|---|---|---|---|---|---|")
            for n in args.concurrency:
                await close_hubs()  # each round starts like a fresh server: its first launch lists and watches
                r = await new_provisioner(kube, n, args.idle)
                print(f"| kubernetes-provisioner | {n} | {r['launch_median_s']:.2f} | {r['launch_max_s']:.2f} | "
                      f"{r['requests_per_launch']:.2f} | {r['idle_per_kernel_minute']:.2f} |")  # fmt: skip
            for n in args.concurrency[:2]:
                r = await older_pattern(kube, kubeconfig, n, args.idle)
                print(f"| older pattern (replayed) | {n} | {r['launch_median_s']:.2f} | – | "
                      f"{r['requests_per_launch']:.2f} | {r['idle_per_kernel_minute']:.2f} |")  # fmt: skip
            await close_hubs()
            await kubelet.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=10.0, help="idle window in seconds")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    asyncio.run(main(parser.parse_args()))
