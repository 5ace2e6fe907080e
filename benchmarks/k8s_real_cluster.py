"""kubernetes-provisioner on the real test cluster: start-up to kernel_info against a bare-pod floor, 1/8/16 concurrent,
and API requests per launch and per idle kernel-minute counted in the apiserver's audit log.

Run (root; the cluster up and the kernel image built, e.g. after the real-cluster tests):
    sh scripts/k8s-cluster.sh up
    python benchmarks/k8s_real_cluster.py [--concurrency 1 8 16] [--rounds 3] [--idle 60]

Three contenders, each round in the order floor, ours, older pattern, then reversed:
- floor: a bare pod running ipykernel from the same image (the same user and security context, its connection file
  in an environment variable), created by this script, which follows it with one watch until it has an IP, then waits
  for kernel_info. Nothing a provisioner must do (agent, Secret, handshake) is in it.
- ours: AsyncKernelManager + kubernetes-provisioner, server side bound to deploy/kubernetes/rbac-shared-namespace.yaml.
- older pattern (replayed): the older package's KubernetesProvisioner's request pattern with the same bare pod: create
  it, list by label every 0.5 s until it runs, then one list per kernel per poll (every 3 s) while idle. Not the old
  package itself (it needs its own launcher image and pod templates); its requests are what the table compares.
Requests are those of the server's ServiceAccount (the floor's are the script's own and are not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import zmq  # noqa: E402
import zmq.asyncio  # noqa: E402
from jupyter_client.manager import AsyncKernelManager  # noqa: E402
from jupyter_client.session import Session  # noqa: E402
from tests.conftest import write_kernel_spec  # noqa: E402
from tests.integration.kubernetes.real.conftest import (  # noqa: E402
    KERNEL_ARGV,
    KERNEL_IMAGE,
    NAMESPACE,
    SCRIPT,
    SHARED_RBAC,
    Cluster,
)

from gateway_provisioners.adapters.kubernetes import close_hubs  # noqa: E402
from gateway_provisioners.adapters.kubernetes.client import KubeClient  # noqa: E402

POLL_EVERY = 3.0  # jupyter_client's KernelRestarter.time_to_dead
PORTS = {"shell_port": 50001, "iopub_port": 50002, "stdin_port": 50003, "control_port": 50004, "hb_port": 50005}
BENCH_LABEL = "gp-bench"


def bare_pod(name: str, key: str) -> dict[str, Any]:
    connection = {**PORTS, "ip": "0.0.0.0", "key": key, "transport": "tcp", "signature_scheme": "hmac-sha256"}
    script = 'printf "%s" "$CONNECTION" > /tmp/kernel.json && exec python3 -m ipykernel_launcher -f /tmp/kernel.json'
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {BENCH_LABEL: name}},
        "spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": False, "enableServiceLinks": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 100, "fsGroup": 100},
            "containers": [{
                "name": "kernel", "image": KERNEL_IMAGE, "imagePullPolicy": "Never",
                "command": ["sh", "-c", script], "env": [{"name": "CONNECTION", "value": json.dumps(connection)}],
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }  # fmt: skip


async def kernel_info(ip: str, key: str, timeout: float = 120) -> None:
    """Until the bare kernel answers kernel_info on its shell port. (A client's wait_for_ready would give up at the
    first missed heartbeat while ipykernel is still starting: nothing tells the floor when its ports are bound.)"""
    context = zmq.asyncio.Context()
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(f"tcp://{ip}:{PORTS['shell_port']}")  # queued until the kernel binds
    try:
        session = Session(key=key.encode(), signature_scheme="hmac-sha256")
        session.send(sock, "kernel_info_request", {})
        if not await sock.poll(timeout * 1000):
            raise TimeoutError(f"no kernel_info reply from {ip} within {timeout} s")
    finally:
        sock.close()
        context.term()


async def floor(client: KubeClient, n: int) -> dict[str, Any]:
    """n bare pods, followed by one watch of the benchmark's label; seconds until each answers kernel_info."""
    names = [f"bench-floor-{uuid.uuid4().hex[:8]}" for _ in range(n)]
    key = uuid.uuid4().hex
    _, version = await client.list_pods(NAMESPACE, BENCH_LABEL)
    ips: dict[str, asyncio.Future[str]] = {name: asyncio.get_running_loop().create_future() for name in names}

    async def follow() -> None:
        async for _kind, pod in client.watch_pods(NAMESPACE, BENCH_LABEL, version, 300):
            name, ip = pod["metadata"]["name"], (pod.get("status") or {}).get("podIP")
            if name in ips and ip and not ips[name].done():
                ips[name].set_result(ip)
            if all(f.done() for f in ips.values()):
                return

    watcher = asyncio.ensure_future(follow())
    latencies: list[float] = []

    async def one(name: str) -> None:
        t0 = time.monotonic()
        await client.create_pod(NAMESPACE, bare_pod(name, key))
        await kernel_info(await ips[name], key)
        latencies.append(time.monotonic() - t0)

    started = time.monotonic()
    try:
        await asyncio.gather(*(one(name) for name in names))
    finally:
        watcher.cancel()
        await asyncio.gather(*(client.delete_pod(NAMESPACE, name, 0) for name in names))
    return {"latencies": latencies, "wall": time.monotonic() - started}


async def ours(cluster: Cluster, n: int, idle: float) -> dict[str, Any]:
    managers = [AsyncKernelManager(kernel_name="bench-k8s-real") for _ in range(n)]
    latencies: list[float] = []

    async def one(km: AsyncKernelManager) -> None:
        t0 = time.monotonic()
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=120)
        finally:
            kc.stop_channels()
        latencies.append(time.monotonic() - t0)

    mark = cluster.audit_mark()
    started = time.monotonic()
    try:
        await asyncio.gather(*(one(km) for km in managers))
        wall = time.monotonic() - started
        await wait_for_watch(cluster, mark)
        launch_requests = len(cluster.requests_since(mark))
        mark = cluster.audit_mark()
        deadline = time.monotonic() + idle
        while time.monotonic() < deadline:  # the restarter's polls
            assert all(await asyncio.gather(*(km.is_alive() for km in managers)))
            await asyncio.sleep(POLL_EVERY)
        idle_requests = len(cluster.requests_since(mark))
    finally:
        await asyncio.gather(*(km.shutdown_kernel(now=True) for km in managers))
        await close_hubs()  # the next round starts like a fresh server
    return {"latencies": latencies, "wall": wall, "per_launch": launch_requests / n,
            "idle_per_kernel_minute": idle_requests / n / (idle / 60)}  # fmt: skip


async def wait_for_watch(cluster: Cluster, mark: int) -> None:
    deadline = time.monotonic() + 10
    while not any(r.startswith("WATCH") for r in cluster.requests_since(mark)) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def older_pattern(cluster: Cluster, client: KubeClient, n: int, idle: float) -> dict[str, Any]:
    """The older package's requests with the server's credentials: create, list by label every 0.5 s, list per poll."""
    names = [f"bench-old-{uuid.uuid4().hex[:8]}" for _ in range(n)]
    key = uuid.uuid4().hex
    latencies: list[float] = []
    mark = cluster.audit_mark()

    async def one(name: str) -> None:
        t0 = time.monotonic()
        await client.create_pod(NAMESPACE, bare_pod(name, key))
        while True:
            pods, _ = await client.list_pods(NAMESPACE, f"{BENCH_LABEL}={name}")
            status = (pods[0].get("status") or {}) if pods else {}
            if status.get("phase") == "Running" and status.get("podIP"):
                break
            await asyncio.sleep(0.5)
        await kernel_info(status["podIP"], key)
        latencies.append(time.monotonic() - t0)

    started = time.monotonic()
    try:
        await asyncio.gather(*(one(name) for name in names))
        wall = time.monotonic() - started
        launch_requests = len(cluster.requests_since(mark))
        mark = cluster.audit_mark()
        deadline = time.monotonic() + idle
        while time.monotonic() < deadline:  # one list per kernel per poll
            await asyncio.gather(*(client.list_pods(NAMESPACE, f"{BENCH_LABEL}={name}") for name in names))
            await asyncio.sleep(POLL_EVERY)
        idle_requests = len(cluster.requests_since(mark))
    finally:
        await asyncio.gather(*(client.delete_pod(NAMESPACE, name, 0) for name in names))
    return {"latencies": latencies, "wall": wall, "per_launch": launch_requests / n,
            "idle_per_kernel_minute": idle_requests / n / (idle / 60)}  # fmt: skip


async def pods_gone(admin: KubeClient) -> None:
    """Wait until the previous round's pods are gone, so that rounds do not overlap on the node."""
    while (await admin.list_pods(NAMESPACE, "app.kubernetes.io/component=kernel"))[0] or (
        await admin.list_pods(NAMESPACE, BENCH_LABEL)
    )[0]:
        await asyncio.sleep(0.5)


async def main(args: argparse.Namespace) -> None:
    result = subprocess.run(["bash", str(SCRIPT), "env"], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit("no cluster: run `sh scripts/k8s-cluster.sh up` (root) first")
    cluster = Cluster(dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line))
    cluster.script("load-image", KERNEL_IMAGE, timeout=300)
    if cluster.get("namespace", NAMESPACE) is None:
        cluster.kubectl("create", "namespace", NAMESPACE)
    server = cluster.script("server-kubeconfig", str(SHARED_RBAC)).strip().splitlines()[-1]
    jupyter = Path(tempfile.mkdtemp(prefix="gp-bench-k8s-"))
    write_kernel_spec(jupyter, "bench-k8s-real", argv=KERNEL_ARGV, provisioner="kubernetes-provisioner", config={
        "kubeconfig": server, "namespace": NAMESPACE, "image_name": KERNEL_IMAGE, "image_pull_policy": "Never",
        "launch_timeout": 180})  # fmt: skip
    os.environ["JUPYTER_PATH"] = str(jupyter)
    os.environ.setdefault("KERNEL_USERNAME", "bench")
    admin, server_client = KubeClient(cluster.env["KUBECONFIG"]), KubeClient(server)
    rows: list[tuple[str, int, dict[str, Any]]] = []
    try:
        for n in args.concurrency:
            results: dict[str, list[dict[str, Any]]] = {"floor": [], "ours": [], "older": []}
            for r in range(args.rounds):
                order = ["floor", "ours", "older"] if r % 2 == 0 else ["older", "ours", "floor"]
                for who in order:
                    await pods_gone(admin)
                    if who == "floor":
                        results[who].append(await floor(admin, n))
                    elif who == "ours":
                        results[who].append(await ours(cluster, n, args.idle))
                    else:
                        results[who].append(await older_pattern(cluster, server_client, n, args.idle))
                    print(f"n={n} round {r + 1} {who}: wall {results[who][-1]['wall']:.2f} s", file=sys.stderr)
            for who, runs in results.items():
                rows.append((who, n, merge(runs)))
        await pods_gone(admin)
    finally:
        await admin.close()
        await server_client.close()
    print_table(rows, args)


def merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [x for run in runs for x in run["latencies"]]
    merged: dict[str, Any] = {"median": statistics.median(latencies), "max": max(latencies),
                              "wall": statistics.median(run["wall"] for run in runs)}  # fmt: skip
    for key in ("per_launch", "idle_per_kernel_minute"):
        if key in runs[0]:
            merged[key] = statistics.median(run[key] for run in runs)
    return merged


def print_table(rows: list[tuple[str, int, dict[str, Any]]], args: argparse.Namespace) -> None:
    names = {"floor": "bare pod + watch (floor)", "ours": "kubernetes-provisioner",
             "older": "older pattern (replayed)"}  # fmt: skip
    floors = {n: m["median"] for who, n, m in rows if who == "floor"}
    print(f"\n{platform.node()}, Python {platform.python_version()}, rounds {args.rounds}, idle window {args.idle} s\n")
    print(
        "| contender | concurrent | start-up median s | vs floor | slowest s | all ready s | requests/launch "
        "| requests per idle kernel-minute |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for who, n, m in rows:
        per_launch = f"{m['per_launch']:.2f}" if "per_launch" in m else "–"
        idle = f"{m['idle_per_kernel_minute']:.2f}" if "idle_per_kernel_minute" in m else "–"
        print(f"| {names[who]} | {n} | {m['median']:.2f} | {m['median'] / floors[n]:.2f}x | {m['max']:.2f} "
              f"| {m['wall']:.2f} | {per_launch} | {idle} |")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle kernels per round")
    asyncio.run(main(parser.parse_args()))
