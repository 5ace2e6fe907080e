"""YARN on a real ResourceManager: launch to kernel_info, and RM requests per idle kernel-minute.

    sh scripts/yarn-cluster.sh up
    python benchmarks/yarn_real.py [--rest 1,4] [--spark 1] [--window 20]

Needs the test YARN of scripts/yarn-cluster.sh (its RM's request log counts the requests) and pyspark.

- REST: kernels (agent + ipykernel under the Java AM) through YarnBackend/RemoteKernel, N at once, timed from the
  submission to the kernel's kernel_info reply.
- Spark: the spec of ``jupyter-yarn-spec install --spark`` (spark-submit, cluster mode, the kernel wraps the driver's
  SparkContext), timed the same way. The floor: the same driver submitted with plain spark-submit (ipykernel with the
  same SparkContext line as the application, on a connection file made beforehand), timed from spark-submit's start
  to its kernel_info reply.
- Idle cost: N running REST kernels followed by this library's shared poller (measured at a 1 s interval and scaled
  to the default 15 s), against the older package's pattern (one GET /ws/v1/cluster/apps/{id}/state per kernel per
  3-s restarter poll), both counted in the RM's request log.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyspark  # noqa: E402
from jupyter_client.asynchronous import AsyncKernelClient  # noqa: E402
from jupyter_client.connect import write_connection_file  # noqa: E402

from gateway_provisioners.adapters.yarn import ResourceManagerClient, YarnBackend, YarnShared  # noqa: E402
from gateway_provisioners.core.kernel import RemoteKernel  # noqa: E402
from gateway_provisioners.core.launch import ConnectionMode, LaunchSpec  # noqa: E402
from gateway_provisioners.listener import ResponseListener, shared_broker  # noqa: E402
from gateway_provisioners_cli.yarn_spec import SPARK_SESSION  # noqa: E402

SPARK_HOME = Path(pyspark.__file__).parent
SPARK_OPTS = [
    "--num-executors", "1", "--driver-memory", "512m", "--executor-memory", "512m",
    "--conf", f"spark.yarn.jars=local:{SPARK_HOME}/jars/*", "--conf", "spark.ui.enabled=false",
    "--conf", "spark.yarn.appMasterEnv.SPARK_LOCAL_IP=127.0.0.1",
    "--conf", "spark.executorEnv.SPARK_LOCAL_IP=127.0.0.1",
]  # fmt: skip
IDLE_INTERVAL = 15.0
OLD_POLL_SECONDS = 3.0  # jupyter_client KernelRestarter.time_to_dead default


def cluster() -> dict[str, str]:
    out = subprocess.run(["sh", str(ROOT / "scripts" / "yarn-cluster.sh"), "env"], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit("no real YARN: run sh scripts/yarn-cluster.sh up")
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def served(log: Path) -> list[str]:
    return [line.split('"')[1] for line in log.read_text().splitlines() if line.count('"') >= 2]


async def kernel_info(info: dict[str, Any], timeout: float = 300) -> None:
    client = AsyncKernelClient()
    client.load_connection_info(info)
    client.start_channels()
    try:
        # One request: ZeroMQ queues it until the kernel's shell socket is there (the floor's kernel starts later).
        msg_id = client.kernel_info()
        while (await client.get_shell_msg(timeout=timeout))["parent_header"].get("msg_id") != msg_id:
            pass
    finally:
        client.stop_channels()


async def launches(env: dict[str, str], n: int, spark: bool) -> list[float]:
    listener = ResponseListener(shared_broker(), ip="127.0.0.1", port=0)
    await listener.start()
    shared = YarnShared.get((env["GP_YARN_ENDPOINT"],), service_user="bench", interval=15, startup_interval=0.5)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    if spark:
        backend = YarnBackend(shared, python=sys.executable, submit_command=[str(SPARK_HOME / "bin" / "spark-submit")],
                              extra_submit_options=SPARK_OPTS)  # fmt: skip
        argv.append(SPARK_SESSION)
    else:
        backend = YarnBackend(shared, python=sys.executable)
    kernels = [RemoteKernel(backend, str(uuid.uuid4()), broker=listener.broker) for _ in range(n)]

    async def one(kernel: RemoteKernel) -> float:
        spec = LaunchSpec(kernel.kernel_id, argv, username="bench", mode=ConnectionMode.CALLBACK,
                          response_address=listener.address, launch_timeout=300,
                          env={"PATH": os.environ["PATH"]})  # fmt: skip
        started = time.perf_counter()
        info = await kernel.start(spec)
        await kernel_info(info)
        return time.perf_counter() - started

    try:
        return list(await asyncio.gather(*(one(k) for k in kernels)))
    finally:
        await asyncio.gather(*(k.shutdown(grace=0) for k in kernels), return_exceptions=True)
        await YarnShared.close_all()
        listener.close()


async def floor(env: dict[str, str]) -> float:
    """Plain spark-submit of the same driver: ipykernel as the application, on a connection file made here."""
    folder = Path(tempfile.mkdtemp(prefix="gp-bench-floor-"))
    connection, info = write_connection_file(str(folder / "kernel.json"), ip="127.0.0.1")
    main = folder / "kernel_main.py"
    main.write_text("from ipykernel.kernelapp import IPKernelApp\nIPKernelApp.launch_instance()\n")
    argv = [
        str(SPARK_HOME / "bin" / "spark-submit"), "--master", "yarn", "--deploy-mode", "cluster",
        "--conf", "spark.yarn.submit.waitAppCompletion=false", "--conf", "spark.yarn.maxAppAttempts=1",
        "--conf", f"spark.yarn.appMasterEnv.PYSPARK_PYTHON={sys.executable}", *SPARK_OPTS,
        "--conf", "spark.yarn.tags=gp-bench-floor", "--files", connection, str(main), "-f", "kernel.json",
        SPARK_SESSION,
    ]  # fmt: skip
    submit_env = {**os.environ, "HADOOP_CONF_DIR": env["HADOOP_CONF_DIR"], "SPARK_HOME": str(SPARK_HOME)}
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(*argv, env=submit_env, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL)  # fmt: skip
    try:
        await kernel_info(info)
        return time.perf_counter() - started
    finally:
        await proc.wait()
        client = ResourceManagerClient([env["GP_YARN_ENDPOINT"]], service_user="bench")
        for app in await client.applications(["gp-bench-floor"]):
            if app.get("state") not in ("FINISHED", "FAILED", "KILLED"):
                await client.kill(str(app["id"]), None)
        client.close()


async def idle(env: dict[str, str], kernels: int, window: float) -> dict[str, float]:
    log = Path(env["GP_YARN_RM_REQUEST_LOG"])
    interval = 1.0
    listener = ResponseListener(shared_broker(), ip="127.0.0.1", port=0)
    await listener.start()
    shared = YarnShared.get((env["GP_YARN_ENDPOINT"],), service_user="bench", interval=interval, startup_interval=0.5)
    backend = YarnBackend(shared, python=sys.executable)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    running = [RemoteKernel(backend, str(uuid.uuid4()), broker=listener.broker) for _ in range(kernels)]
    await asyncio.gather(*(k.start(LaunchSpec(k.kernel_id, argv, username="bench", mode=ConnectionMode.CALLBACK,
                                              response_address=listener.address, launch_timeout=300,
                                              env={"PATH": os.environ["PATH"]})) for k in running))  # fmt: skip
    app_ids = [str(k.handle.data["app_id"]) for k in running if k.handle]
    try:
        before = len(served(log))
        await asyncio.sleep(window)  # the measurement window
        batched = len(served(log)) - before
        # The older package's pattern, replayed with the real client against the same RM.
        client = ResourceManagerClient([env["GP_YARN_ENDPOINT"]], service_user="bench")

        async def old_kernel(app_id: str, stop: float) -> None:
            while time.monotonic() < stop:
                await client.call(lambda rm: rm.cluster_application_state(app_id))
                await asyncio.sleep(OLD_POLL_SECONDS)

        await client.call(lambda rm: rm.cluster_information())  # the client's own RM probe, outside the window
        before = len(served(log))
        stop = time.monotonic() + window
        await asyncio.gather(*(old_kernel(a, stop) for a in app_ids))
        # only the replayed requests: the shared poller still runs beside them
        old = sum(1 for r in served(log)[before:] if r.startswith("GET /ws/v1/cluster/apps/application_"))
        client.close()
    finally:
        await asyncio.gather(*(k.shutdown(grace=0) for k in running), return_exceptions=True)
        await YarnShared.close_all()
        listener.close()
    scale = interval / IDLE_INTERVAL
    return {"batched_raw": batched, "old_raw": old,
            "batched": batched * 60 / window * scale / kernels, "old": old * 60 / window / kernels}  # fmt: skip


def summary(times: list[float]) -> str:
    return f"median {statistics.median(times):.1f} s, max {max(times):.1f} s ({', '.join(f'{t:.1f}' for t in times)})"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rest", default="1,4", help="REST launches at once, comma-separated")
    parser.add_argument("--spark", default="1", help="Spark launches at once, comma-separated (0: none)")
    parser.add_argument("--floor", type=int, default=1, help="plain spark-submit floor runs")
    parser.add_argument("--idle-kernels", type=int, default=4)
    parser.add_argument("--window", type=float, default=20.0)
    args = parser.parse_args()
    env = cluster()
    os.environ["HADOOP_CONF_DIR"] = env["HADOOP_CONF_DIR"]  # spark-submit finds the RM there
    os.environ["SPARK_HOME"] = str(SPARK_HOME)
    for n in (int(c) for c in args.rest.split(",") if int(c)):
        print(f"REST launch to kernel_info, {n} at once: {summary(await launches(env, n, spark=False))}", flush=True)
    for n in (int(c) for c in args.spark.split(",") if int(c)):
        print(f"Spark launch to kernel_info, {n} at once: {summary(await launches(env, n, spark=True))}", flush=True)
    if args.floor:
        times = [await floor(env) for _ in range(args.floor)]
        print(f"floor, plain spark-submit to kernel_info: {summary(times)}", flush=True)
    result = await idle(env, args.idle_kernels, args.window)
    print(f"idle, {args.idle_kernels} REST kernels, window {args.window:g} s (counted in the RM's request log):")
    print(f"  batched poller: {result['batched_raw']:.0f} requests at a 1 s interval → {result['batched']:.3f} per "
          f"idle kernel-minute at the default {IDLE_INTERVAL:g} s")  # fmt: skip
    print(f"  older pattern : {result['old_raw']:.0f} requests → {result['old']:.2f} per idle kernel-minute "
          f"(ratio {result['old'] / max(result['batched'], 1e-9):.0f}x)")  # fmt: skip
    print(f"  (shlex of the Spark options: {shlex.join(SPARK_OPTS)})")


if __name__ == "__main__":
    asyncio.run(main())
