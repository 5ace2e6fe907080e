"""R, Scala (Apache Toree) and Spark client-mode Python kernels on an SSH host (real sshd), with the kernel specs that
`jupyter-ssh-spec install` writes, driven by a real AsyncKernelManager: code runs, cells are interrupted, Spark jobs
run with the session made lazily, eagerly or not at all."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from jupyter_client.manager import AsyncKernelManager

from tests.support.kernels import run_code
from tests.support.languages import LOOPBACK_SPARK_OPTS, answers_and_is_interrupted, need_r, toree
from tests.support.sshd import SSHKeys, SSHServer

pytestmark = pytest.mark.integration

SCALA_TIMEOUT = 180


@pytest.fixture
def ssh_cli_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jupyter_path: Path, sshd: SSHServer,
                 ssh_keys: SSHKeys):  # type: ignore[no-untyped-def]  # fmt: skip
    """Install a spec with jupyter-ssh-spec (this run's sshd and keys, the given options); returns its name."""
    prefix = tmp_path / "prefix"
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))

    def install(name: str, *options: str) -> str:
        result = subprocess.run(
            [str(Path(sys.executable).parent / "jupyter-ssh-spec"), "install", "--kernel-name", name,
             "--prefix", str(prefix), "--remote-hosts", sshd.address, "--python", sys.executable,
             "--known-hosts", str(ssh_keys.known_hosts), "--client-key", str(ssh_keys.client_key), *options],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return name

    return install


async def test_r_kernel_on_ssh_host(ssh_cli_spec) -> None:  # type: ignore[no-untyped-def]
    need_r()
    km = AsyncKernelManager(kernel_name=ssh_cli_spec("ssh-r", "--language", "R", "--launch-timeout", "60"))
    await km.start_kernel()
    try:
        await answers_and_is_interrupted(km, "r", 60)
    finally:
        await km.shutdown_kernel(now=True)


async def test_python_kernel_interrupted_by_message_on_ssh_host(ssh_cli_spec) -> None:  # type: ignore[no-untyped-def]
    """interrupt_mode message: jupyter_client sends interrupt_request on the control channel, not a signal."""
    km = AsyncKernelManager(kernel_name=ssh_cli_spec("ssh-py-msg", "--interrupt-mode", "message"))
    await km.start_kernel()
    try:
        assert km.kernel_spec.interrupt_mode == "message"
        await answers_and_is_interrupted(km, "python", 30)
    finally:
        await km.shutdown_kernel(now=True)


async def test_scala_kernel_runs_a_spark_job_on_ssh_host(ssh_cli_spec) -> None:  # type: ignore[no-untyped-def]
    found = toree()
    name = ssh_cli_spec(
        "ssh-scala", "--language", "Scala", "--spark-home", found.spark_home, "--toree-jar", found.jar,
        "--spark-master", "local[1]", "--extra-spark-opts", LOOPBACK_SPARK_OPTS, "--spark-init-mode", "eager",
        "--launch-timeout", str(SCALA_TIMEOUT),
    )  # fmt: skip
    km = AsyncKernelManager(kernel_name=name)
    await km.start_kernel()
    try:
        await answers_and_is_interrupted(km, "scala", SCALA_TIMEOUT, spark=True)
    finally:
        await km.shutdown_kernel(now=True)


@pytest.mark.parametrize("init_mode", ["lazy", "eager", "none"])
async def test_spark_client_mode_python_kernel_on_ssh_host(ssh_cli_spec, init_mode: str) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    """jupyter-ssh-spec install --spark: the kernel on the host is the driver (local mode); lazy answers with
    stand-ins, eager with the session, none without one."""
    pytest.importorskip("pyspark", reason="pyspark is not installed (scripts/test.sh installs it where Java is)")
    if shutil.which("java") is None:
        pytest.skip("no Java runtime here: Spark needs one (Debian: default-jre-headless)")
    name = ssh_cli_spec(
        f"ssh-spark-{init_mode}", "--spark", "--spark-master", "local[1]", "--extra-spark-opts", LOOPBACK_SPARK_OPTS,
        "--spark-init-mode", init_mode, "--launch-timeout", "120",
    )  # fmt: skip
    km = AsyncKernelManager(kernel_name=name)
    await km.start_kernel()
    try:
        content, out = await run_code(km, "print(type(spark).__name__ if 'spark' in dir() else 'absent')", timeout=180)
        assert content["status"] == "ok", content
        assert out.split()[-1] == {"lazy": "_GpLazySpark", "eager": "SparkSession", "none": "absent"}[init_mode], out
        if init_mode != "none":
            content, out = await run_code(km, "print(spark.range(1000).count(), sc.master)", timeout=180)
            assert (content["status"], out.split()[-2:]) == ("ok", ["1000", "local[1]"]), out
    finally:
        await km.shutdown_kernel(now=True)
