"""Warm pools, side by side in one run: a pooled kernel, a cold kernel of the same backend, a cold local kernel.

Run (as root for SSH, which starts its own sshd on loopback; Docker needs the test image):

    python benchmarks/pools.py [--backends local,ssh,docker] [--runs 20] [--size 16] [--bursts 3]

For each backend, in one process and event loop (this process plays the server):

* **pooled**: ``await km.start_kernel()`` until the first ``kernel_info`` reply, for a kernel spec with
  ``pool_size`` = ``--size``, the pool full before each claim (the steady state a user meets);
* **cold, same backend**: the same kernel spec with no pool;
* **cold local**: jupyter_client's own ``LocalProvisioner`` kernel (the baseline the issue names);
* **16 concurrent claims** against a full pool of 16, ``--bursts`` times: each claim's time to kernel_info;
* **server memory per pooled kernel**: this process's RSS with a full pool minus before the pool, over the size;
* the longest event-loop stall while the pool filled.

The three single-launch kinds alternate within each round, so that they share the machine's load. Seconds; medians
and 95th percentiles (nearest rank). The target of the issue is a pooled kernel ready in ≤ 0.1 s median, ≤ 0.2 s p95.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import getpass
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jupyter_client.manager import AsyncKernelManager

from _measure import StallProbe, rss_mib

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # for tests.support.sshd

ARGV = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
CONTAINER_ARGV = ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"]


def write_spec(root: Path, name: str, provisioner: str, config: dict[str, Any], argv: list[str] = ARGV) -> None:
    folder = root / "kernels" / name
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"argv": argv, "display_name": name, "language": "python", "interrupt_mode": "signal",
            "metadata": {"kernel_provisioner": {"provisioner_name": provisioner, "config": config}}}  # fmt: skip
    (folder / "kernel.json").write_text(json.dumps(spec))


@contextlib.contextmanager
def backend(name: str, root: Path, args: argparse.Namespace) -> Iterator[tuple[str, dict[str, Any], list[str]]]:
    """(provisioner, config, argv) of ``name``, with whatever it needs running meanwhile."""
    if name == "local":
        yield "local-agent-provisioner", {}, ARGV
    elif name == "ssh":
        from tests.support.sshd import SSHKeys, run_sshd

        keys = SSHKeys(root / "ssh-keys")
        with run_sshd(root / "sshd", keys) as server:
            config = {
                "remote_hosts": [server.address],
                "known_hosts": str(keys.known_hosts),
                "client_keys": [str(keys.client_key)],
                "remote_user": getpass.getuser(),
                "remote_python": sys.executable,
            }
            yield "distributed-provisioner", config, ARGV
    elif name in ("docker", "swarm"):
        import docker

        client = docker.from_env()
        owner = f"gp-bench-{uuid.uuid4().hex[:8]}"
        network = client.networks.create(f"{owner}-net", driver="bridge", scope="swarm" if name == "swarm" else None)
        try:
            provisioner = "docker-swarm-provisioner" if name == "swarm" else "docker-provisioner"
            yield provisioner, {"image_name": args.image, "network": network.name, "image_pull_policy": "never",
                                "owner": owner}, CONTAINER_ARGV  # fmt: skip
        finally:
            for container in client.containers.list(all=True, filters={"label": f"org.jupyter.gp.owner={owner}"}):
                container.remove(force=True)
            with contextlib.suppress(Exception):
                network.remove()
    elif name == "k8s":
        yield "kubernetes-provisioner", k8s_config(root), CONTAINER_ARGV
    elif name == "yarn":
        from tests.integration.yarn.conftest import yarn_config

        endpoint = cluster_env("yarn-cluster.sh")["GP_YARN_ENDPOINT"]
        yield "yarn-provisioner", yarn_config(endpoint, application_master="java", launch_timeout=300), ARGV
    else:
        raise SystemExit(f"unknown backend {name!r}: local, ssh, docker, swarm, k8s or yarn")


def cluster_env(script: str) -> dict[str, str]:
    """The env lines of one of the shared real clusters' scripts (the cluster must be up)."""
    out = subprocess.run(["bash", str(HERE.parent / "scripts" / script), "env"], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{script}: no cluster is up ({out.stderr.strip()[-200:]})")
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def k8s_config(root: Path) -> dict[str, Any]:
    """kubernetes-provisioner on the real cluster, a namespace per kernel (the shared one is other runs' too), with
    the per-kernel RBAC manifest bound to a ServiceAccount of its own, as the real-cluster tests do."""
    from tests.integration.kubernetes.real.conftest import KERNEL_IMAGE, PER_KERNEL_RBAC, Cluster
    from tests.support.images import build_kernel_image

    cluster = Cluster(cluster_env("k8s-cluster.sh"))
    build_kernel_image(KERNEL_IMAGE, lambda reason: (_ for _ in ()).throw(SystemExit(reason)))
    cluster.script("load-image", KERNEL_IMAGE, timeout=300)
    manifest = root / PER_KERNEL_RBAC.name
    manifest.write_text(
        PER_KERNEL_RBAC.read_text()
        .replace("name: jupyter-server,", "name: jupyter-server-nspk,")
        .replace(
            "metadata: {name: gateway-provisioners}\nroleRef", "metadata: {name: gateway-provisioners-nspk}\nroleRef"
        )
    )
    kubeconfig = cluster.script("server-kubeconfig", str(manifest)).strip().splitlines()[-1]
    return {"kubeconfig": kubeconfig, "shared_namespace": False, "image_name": KERNEL_IMAGE,
            "image_pull_policy": "Never", "launch_timeout": 300}  # fmt: skip


async def kernel_info(km: AsyncKernelManager, timeout: float = 60) -> None:
    """Until the kernel's first kernel_info reply on a new client. (jupyter_client's ``wait_for_ready`` also waits
    0.2 s for IOPub to fall silent after that reply: a fixed cost of the client, not of the kernel's start.)"""
    kc = km.client()
    kc.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=False)
    try:
        msg_id = kc.kernel_info()
        deadline = time.monotonic() + timeout
        while (await kc.get_shell_msg(timeout=max(0.01, deadline - time.monotonic())))["parent_header"].get(
            "msg_id"
        ) != msg_id:
            pass
    finally:
        kc.stop_channels()


async def start_to_ready(spec: str) -> tuple[AsyncKernelManager, float, bool]:
    """Start a kernel of ``spec``; seconds to its first kernel_info reply; whether it came from a pool."""
    km = AsyncKernelManager(kernel_name=spec)
    started = time.monotonic()
    await km.start_kernel()
    await kernel_info(km)
    took = time.monotonic() - started
    kernel = getattr(km.provisioner, "kernel", None)
    return km, took, kernel is not None and kernel.launch_id != km.kernel_id


async def measure(name: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    from gateway_provisioners.provisioners import pooling

    with backend(name, root, args) as (provisioner, config, argv):
        write_spec(root, f"{name}-pooled", provisioner, {**config, "pool_size": args.size,
                                                         "pool_refill_concurrency": args.refill}, argv)  # fmt: skip
        write_spec(root, f"{name}-cold", provisioner, config, argv)
        write_spec(root, "local-jupyter", "local-provisioner", {})
        for spec in (f"{name}-cold", "local-jupyter"):  # warm-up: imports, page cache, image layers
            km, _, _ = await start_to_ready(spec)
            await km.shutdown_kernel(now=True)

        gc.collect()
        rss_before = rss_mib()
        probe = StallProbe().start()
        filled = time.monotonic()
        km, _, _ = await start_to_ready(f"{name}-pooled")  # the first launch starts the pool (and is cold)
        await km.shutdown_kernel(now=True)
        warm = next(w for w in pooling.pools() if w.reference.kernel_name == f"{name}-pooled")
        await warm.pool.wait_ready(timeout=600)
        filled = time.monotonic() - filled
        stall = await probe.stop()
        gc.collect()
        per_kernel_mib = (rss_mib() - rss_before) / args.size

        result: dict[str, Any] = {"pooled": [], "cold": [], "local": [], "burst": [], "misses": 0}
        kinds = [("pooled", f"{name}-pooled"), ("cold", f"{name}-cold"), ("local", "local-jupyter")]
        for round_no in range(args.runs):
            for kind, spec in kinds if round_no % 2 == 0 else list(reversed(kinds)):
                if kind == "pooled":
                    await warm.pool.wait_ready(timeout=600)
                km, took, pooled = await start_to_ready(spec)
                if kind == "pooled" and not pooled:
                    result["misses"] += 1
                result[kind].append(took)
                await km.shutdown_kernel(now=True)
            print(f"{name}: round {round_no + 1}/{args.runs}", file=sys.stderr)
        for burst in range(args.bursts):
            await warm.pool.wait_ready(timeout=600)
            outcomes = await asyncio.gather(*(start_to_ready(f"{name}-pooled") for _ in range(args.size)))
            result["burst"].extend(took for _, took, _ in outcomes)
            result["misses"] += sum(1 for _, _, pooled in outcomes if not pooled)
            await asyncio.gather(*(km.shutdown_kernel(now=True) for km, _, _ in outcomes))
            print(f"{name}: burst {burst + 1}/{args.bursts}", file=sys.stderr)
        await pooling.drain_pools()
        if name == "k8s":
            from gateway_provisioners.adapters.kubernetes import close_hubs

            await close_hubs()
        result.update(per_kernel_mib=per_kernel_mib, fill_seconds=filled, fill_stall=stall)
        return result


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def cell(values: list[float]) -> str:
    return f"**{statistics.median(values):.3f}** / {p95(values):.3f}" if values else "–"


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    rows = [
        f"Machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}; pool of "
        f"{args.size}, {args.runs} rounds (pooled, cold, cold local alternating), {args.bursts} bursts of {args.size} "
        "concurrent claims; seconds from `start_kernel()` to the first kernel_info reply, **median** / p95.",
        "",
        f"| backend | pooled, 1 claim | pooled, {args.size} concurrent claims | cold, same backend "
        f"| cold local (jupyter_client) | pooled / cold local | server memory per pooled kernel "
        f"| pool of {args.size} filled in | longest event-loop stall while filling | pool misses |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, data in results.items():
        ratio = statistics.median(data["pooled"]) / statistics.median(data["local"])
        rows.append(
            f"| {name} | {cell(data['pooled'])} | {cell(data['burst'])} | {cell(data['cold'])} | {cell(data['local'])} "
            f"| {ratio:.2f}x | {data['per_kernel_mib']:.2f} MiB | {data['fill_seconds']:.1f} s "
            f"| {1000 * data['fill_stall']:.0f} ms | {data['misses']} |"
        )
    return "\n".join(rows)


async def main(args: argparse.Namespace, root: Path) -> dict[str, dict[str, Any]]:
    results = {}
    for name in args.backends.split(","):
        results[name] = await measure(name.strip(), root, args)
        print(report({name: results[name]}, args), file=sys.stderr)  # kept if a later backend fails
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="local,ssh,docker", help="comma-separated: local, ssh, docker, swarm")
    parser.add_argument("--runs", type=int, default=20, help="rounds of one pooled, one cold and one local launch")
    parser.add_argument("--size", type=int, default=16, help="pool size, and claims per burst")
    parser.add_argument("--bursts", type=int, default=3, help="bursts of --size concurrent claims")
    parser.add_argument("--refill", type=int, default=2, help="the pool's refill concurrency")
    parser.add_argument("--image", default="gp-test-kernel:suite", help="kernel image (docker, swarm)")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gp-bench-pools-") as tmp:
        os.environ["JUPYTER_PATH"] = tmp
        os.environ.setdefault("KERNEL_USERNAME", "bench")
        if os.geteuid() == 0:  # the kernels run as this user: as root, allow it explicitly (allow_root_kernels)
            os.environ["GP_ALLOW_ROOT_KERNELS"] = "true"
        data = asyncio.run(main(args, Path(tmp)))
    if args.json:
        args.json.write_text(json.dumps(data, indent=2))
    print(report(data, args))
