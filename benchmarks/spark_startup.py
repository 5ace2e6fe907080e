"""A Spark kernel's time to a ready session: `--spark-init-mode lazy` and `eager` against a plain `spark-submit` of the
same driver (ipykernel as the Python application spark-submit runs), locally (local-agent-provisioner) and on an SSH
host (distributed-provisioner, a real OpenSSH server on loopback), with pyspark's own Spark in local mode.

Run (as root for the SSH part, with openssh-server, Java and pyspark installed):

    python benchmarks/spark_startup.py [--runs 3] [--no-ssh]

For each run: the seconds from start_kernel() until the kernel answers kernel_info ("answers"), and until a first cell
`spark.range(10).count()` has returned ("session ready"; the plain driver's cell builds its session first, on the JVM
spark-submit started). The variants alternate within each round, so slow drift of this shared machine hits all alike.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # for tests.support.sshd
from tests.support.sshd import SSHKeys, run_sshd  # noqa: E402

from gateway_provisioners_cli.kernelspec import kernel_argv  # noqa: E402
from gateway_provisioners_cli.spark import SparkSpec  # noqa: E402

OPTS = (
    "--conf spark.ui.enabled=false --conf spark.driver.host=127.0.0.1 --conf spark.driver.bindAddress=127.0.0.1 "
    "--conf spark.ui.showConsoleProgress=false"
)
KERNEL_MAIN = "from ipykernel.kernelapp import IPKernelApp\nIPKernelApp.launch_instance()\n"
FIRST_CELL = {
    "plain": "from pyspark.sql import SparkSession\n"
    "spark = SparkSession.builder.getOrCreate()\nspark.range(10).count()",
    "lazy": "spark.range(10).count()",
    "eager": "spark.range(10).count()",
}


def specs(root: Path, work: Path, ssh: dict[str, Any] | None) -> dict[str, str]:
    """Write one kernel spec per variant; returns variant -> kernel name."""
    import pyspark

    spark_home = str(Path(pyspark.__file__).parent)
    main = work / "kernel_main.py"
    main.write_text(KERNEL_MAIN)
    provisioner = "distributed-provisioner" if ssh else "local-agent-provisioner"
    names = {}
    for variant in ("plain", "lazy", "eager"):
        env = {"SPARK_LOCAL_IP": "127.0.0.1"}
        if variant == "plain":
            argv = [f"{spark_home}/bin/spark-submit", "--master", "local[1]", *OPTS.split(), str(main),
                    "-f", "{connection_file}"]  # fmt: skip
            env.update(SPARK_HOME=spark_home, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
        else:
            spark = SparkSpec(master="local[1]", opts=OPTS, init_mode=variant)
            argv = kernel_argv("python", sys.executable, spark=spark)
            env.update(spark.python_env(sys.executable))
        name = f"bench-{'ssh' if ssh else 'local'}-{variant}"
        folder = root / "kernels" / name
        folder.mkdir(parents=True, exist_ok=True)
        config = {"launch_timeout": 180, **(ssh or {})}
        spec = {"argv": argv, "display_name": name, "language": "python", "interrupt_mode": "signal", "env": env,
                "metadata": {"kernel_provisioner": {"provisioner_name": provisioner, "config": config}}}  # fmt: skip
        (folder / "kernel.json").write_text(json.dumps(spec))
        names[variant] = name
    return names


async def measure(name: str, variant: str) -> tuple[float, float]:
    from jupyter_client.manager import AsyncKernelManager

    km = AsyncKernelManager(kernel_name=name)
    started = time.monotonic()
    await km.start_kernel()
    try:
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=300)
            answered = time.monotonic() - started
            reply = await kc.execute_interactive(FIRST_CELL[variant], timeout=300, output_hook=lambda msg: None)
            assert reply["content"]["status"] == "ok", reply["content"]
            ready = time.monotonic() - started
        finally:
            kc.stop_channels()
    finally:
        await km.shutdown_kernel(now=True)
    return answered, ready


def line(values: list[float]) -> str:
    return f"{min(values):.2f} / **{statistics.median(values):.2f}** / {max(values):.2f}"


async def run(runs: int, with_ssh: bool) -> str:
    os.environ.setdefault("KERNEL_USERNAME", "gp-bench")
    if os.geteuid() == 0:
        os.environ["GP_ALLOW_ROOT_KERNELS"] = "true"
    rows = [
        f"Machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"Spark local[1]. {runs} runs each; seconds from start_kernel(), min / **median** / max.",
        "",
        "| host | driver | kernel answers (kernel_info) | first `spark.range(10).count()` returned |",
        "| --- | --- | --- | --- |",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root = work / "jupyter"
        os.environ["JUPYTER_PATH"] = str(root)
        hosts: list[tuple[str, dict[str, Any] | None]] = [("local", None)]
        stack = None
        if with_ssh:
            keys = SSHKeys(work / "keys")
            stack = run_sshd(work / "sshd", keys)
            server = stack.__enter__()
            hosts.append(("SSH (loopback sshd)", {
                "remote_hosts": [server.address], "known_hosts": str(keys.known_hosts),
                "client_keys": [str(keys.client_key)], "remote_user": getpass.getuser(),
                "remote_python": sys.executable,
            }))  # fmt: skip
        try:
            for label, ssh in hosts:
                names = specs(root, work, ssh)
                results: dict[str, list[tuple[float, float]]] = {v: [] for v in names}
                await measure(names["lazy"], "lazy")  # warm the page cache (JVM, jars) before measuring
                for index in range(runs):
                    order = list(names) if index % 2 == 0 else list(reversed(names))
                    for variant in order:
                        results[variant].append(await measure(names[variant], variant))
                for variant, label2 in (
                    ("plain", "plain `spark-submit` (ipykernel as its app)"),
                    ("lazy", "`--spark-init-mode lazy`"),
                    ("eager", "`--spark-init-mode eager`"),
                ):
                    answered = [a for a, _ in results[variant]]
                    ready = [r for _, r in results[variant]]
                    rows.append(f"| {label} | {label2} | {line(answered)} | {line(ready)} |")
        finally:
            if stack is not None:
                stack.__exit__(None, None, None)
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-ssh", action="store_true", help="only the local kernels")
    args = parser.parse_args()
    print(asyncio.run(run(args.runs, not args.no_ssh)))


if __name__ == "__main__":
    main()
