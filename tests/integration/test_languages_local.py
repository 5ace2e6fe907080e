"""R (IRkernel), Scala (Apache Toree) and Python Spark kernels, started for real through the agent on this machine
(local-agent-provisioner) with the argv the spec commands write, driven by a real AsyncKernelManager."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import psutil
import pytest
from jupyter_client.manager import AsyncKernelManager

from gateway_provisioners_cli.kernelspec import kernel_argv
from gateway_provisioners_cli.spark import SparkSpec

from ..conftest import write_kernel_spec
from ..support.kernels import run_code
from ..support.languages import CELLS, LOOPBACK_SPARK_OPTS, answers_and_is_interrupted, need_r, toree

pytestmark = pytest.mark.integration

SCALA_SESSION_EXISTS = "println(org.apache.spark.sql.SparkSession.getDefaultSession.isDefined)"
SCALA_TIMEOUT = 180  # Toree starts a JVM, Spark and a Scala compiler: generous on a loaded 2-core machine


def _spec(root: Path, language: str, init_mode: str = "lazy", interrupt_mode: str = "signal") -> tuple[str, float]:
    """Write a local-agent-provisioner spec for ``language``; returns its name and a timeout for its kernel."""
    env: dict[str, str] = {}
    timeout = 60.0
    if language == "r":
        need_r()
        argv = kernel_argv("r")
    elif language == "scala":
        found = toree()
        spark = found.spark(init_mode)
        argv = kernel_argv("scala", spark=spark, toree_jar=found.jar)
        env = {"SPARK_HOME": found.spark_home, "SPARK_LOCAL_IP": "127.0.0.1"}
        timeout = SCALA_TIMEOUT
    else:
        pytest.importorskip("ipykernel")
        argv = kernel_argv("python", sys.executable)
    name = f"gp-{language}-{init_mode}-{interrupt_mode}"
    write_kernel_spec(
        root, name, argv=argv, env=env, language=language, interrupt_mode=interrupt_mode,
        config={"launch_timeout": timeout},
    )  # fmt: skip
    return name, timeout


# Toree's SIGINT handler cancels the cell's Spark jobs through the SparkContext; in lazy mode, before Spark was used,
# that creates the context on the JVM's signal thread, which fails (no context class loader) and leaves the cell
# running: an eager Scala kernel (or a lazy one after its first Spark use) is interruptible. docs/languages.md says so.
@pytest.mark.parametrize(
    ("language", "interrupt_mode", "init_mode"),
    [
        ("python", "message", "lazy"),
        ("python", "signal", "lazy"),
        ("r", "signal", "lazy"),
        ("scala", "signal", "eager"),
    ],
)
async def test_language_executes_and_is_interrupted(
    jupyter_path: Path, language: str, interrupt_mode: str, init_mode: str
) -> None:
    """Real code runs; a long-running cell is interrupted (SIGINT through the agent, or an interrupt_request for a
    kernel spec of interrupt_mode message) and the kernel runs the next cell."""
    name, timeout = _spec(jupyter_path, language, init_mode, interrupt_mode)
    km = AsyncKernelManager(kernel_name=name)
    await km.start_kernel()
    try:
        await answers_and_is_interrupted(km, language, timeout)
        assert await km.is_alive()
    finally:
        await km.shutdown_kernel(now=True)


@pytest.mark.parametrize("init_mode", ["lazy", "eager", "none"])
async def test_scala_spark_job_in_each_init_mode(jupyter_path: Path, init_mode: str) -> None:
    """Toree is the Spark driver: its session exists when the kernel first answers only in eager mode, and
    spark.range(1000).count() runs in local mode. Toree 0.5 makes the session on first use in 'none' mode too."""
    name, timeout = _spec(jupyter_path, "scala", init_mode)
    km = AsyncKernelManager(kernel_name=name)
    await km.start_kernel()
    try:
        content, out = await run_code(km, SCALA_SESSION_EXISTS, timeout=timeout)
        assert (content["status"], out) == ("ok", f"{str(init_mode == 'eager').lower()}\n"), content
        content, out = await run_code(km, CELLS["scala"].spark, timeout=timeout)
        assert (content["status"], out) == ("ok", "1000\n"), content
    finally:
        await km.shutdown_kernel(now=True)


def _jvm_children(km: AsyncKernelManager) -> list[str]:
    """Java processes the kernel started (pyspark's gateway JVM)."""
    kernel = psutil.Process(int(km.provisioner.kernel.handle.data["kernel_pgid"]))  # the kernel leads its group
    return [" ".join(p.cmdline()[:1]) for p in kernel.children(recursive=True) if "java" in p.name()]


@pytest.mark.parametrize("init_mode", ["lazy", "eager", "none"])
async def test_python_spark_session_in_each_init_mode(jupyter_path: Path, init_mode: str) -> None:
    """lazy: the kernel answers with stand-ins and no JVM, the session comes on first use; eager: the session is there
    when the kernel first answers; none: no session, pyspark importable."""
    pytest.importorskip("pyspark", reason="pyspark is not installed (scripts/test.sh installs it where Java is)")
    if shutil.which("java") is None:
        pytest.skip("no Java runtime here: Spark needs one (Debian: default-jre-headless)")
    spark = SparkSpec(master="local[1]", opts=LOOPBACK_SPARK_OPTS, init_mode=init_mode)
    write_kernel_spec(
        jupyter_path, f"gp-pyspark-{init_mode}", argv=kernel_argv("python", sys.executable, spark=spark),
        env={**spark.python_env(sys.executable), "SPARK_LOCAL_IP": "127.0.0.1"}, config={"launch_timeout": 120},
    )  # fmt: skip
    km = AsyncKernelManager(kernel_name=f"gp-pyspark-{init_mode}")
    await km.start_kernel()
    try:
        content, out = await run_code(km, "print(type(spark).__name__ if 'spark' in dir() else 'absent')", timeout=180)
        assert content["status"] == "ok", content
        assert out.strip() == {"lazy": "_GpLazySpark", "eager": "SparkSession", "none": "absent"}[init_mode]
        jvms = _jvm_children(km)
        assert bool(jvms) is (init_mode == "eager"), jvms
        if init_mode == "none":
            return
        content, out = await run_code(km, "print(spark.range(1000).count(), sc.master)", timeout=180)
        # The JVM's own start-up lines come first on the kernel's output (ipykernel captures its children's output).
        assert (content["status"], out.split()[-2:]) == ("ok", ["1000", "local[1]"]), out
        content, out = await run_code(km, "print(type(spark).__name__, type(sc).__name__)", timeout=60)
        assert out.split() == ["SparkSession", "SparkContext"]  # the stand-ins were replaced
    finally:
        await km.shutdown_kernel(now=True)
