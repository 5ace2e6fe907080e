"""A real Spark kernel through the agent: spark-submit --master local[1] runs ipykernel as its Python driver."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from pathlib import Path

import psutil
import pytest

from gateway_provisioners.adapters.local import LocalBackend
from gateway_provisioners.core.kernel import RemoteKernel
from gateway_provisioners.core.launch import LaunchSpec, build_kernel_env

from ..conftest import AS_ROOT

pytestmark = pytest.mark.integration

pyspark = pytest.importorskip("pyspark", reason="pyspark is not installed (scripts/test.sh installs it where Java is)")
if shutil.which("java") is None:
    pytest.skip("no Java runtime here: Spark needs one (Debian: default-jre-headless)", allow_module_level=True)

# The Python "application" spark-submit runs: ipykernel, on the connection file the agent wrote.
KERNEL_MAIN = "from ipykernel.kernelapp import IPKernelApp\nIPKernelApp.launch_instance()\n"


async def test_spark_kernel_counts_a_range(tmp_path: Path) -> None:
    spark_home = Path(pyspark.__file__).parent
    main = tmp_path / "kernel_main.py"
    main.write_text(KERNEL_MAIN)
    argv = [
        str(spark_home / "bin" / "spark-submit"), "--master", "local[1]",
        # Everything of Spark's on loopback, and no web UI: nothing leaves this machine.
        "--conf", "spark.ui.enabled=false", "--conf", "spark.driver.host=127.0.0.1",
        "--conf", "spark.driver.bindAddress=127.0.0.1",
        str(main), "-f", "{connection_file}",
    ]  # fmt: skip
    spark_env = {"SPARK_HOME": str(spark_home), "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
                 "PYSPARK_DRIVER_PYTHON": sys.executable}  # fmt: skip
    kernel_id = str(uuid.uuid4())
    kernel = RemoteKernel(LocalBackend(), kernel_id)
    spec = LaunchSpec(kernel_id, argv, env=build_kernel_env(os.environ, spark_env, ["PATH", "HOME", "JAVA_HOME"]),
                      kernel_ip="127.0.0.1", launch_timeout=120, allow_root=AS_ROOT)  # fmt: skip
    info = await kernel.start(spec)
    try:
        from jupyter_client.asynchronous import AsyncKernelClient

        client = AsyncKernelClient()
        client.load_connection_info(info)
        client.start_channels()
        try:
            await client.wait_for_ready(timeout=60)
            printed: list[str] = []
            reply = await client.execute_interactive(
                "from pyspark.sql import SparkSession\n"
                "spark = SparkSession.builder.getOrCreate()\n"
                "print(spark.range(10).count(), spark.sparkContext.master)",
                timeout=120,
                output_hook=lambda m: (
                    printed.append(m["content"].get("text", "")) if m["msg_type"] == "stream" else None
                ),
            )
        finally:
            client.stop_channels()
        assert reply["content"]["status"] == "ok"
        assert "".join(printed).split() == ["10", "local[1]"]
        group = kernel.handle.data["kernel_pgid"]
    finally:
        await kernel.shutdown(grace=2)
    # The JVM (spark-submit) and the Python driver were one process group; shutdown ends all of it.
    left = _alive_in_group(group)
    assert not left, left


def _alive_in_group(group: int) -> list[list[str]]:
    """The command lines of the group's processes that still run. A zombie has ended: the Python driver, a child of the
    JVM, waits as one until init reaps it once its parent is gone."""
    alive = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == group and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc.cmdline()[:3])
        except (ProcessLookupError, PermissionError, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return alive
