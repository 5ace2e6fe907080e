"""Spark client mode on an SSH host against the real YARN: `jupyter-ssh-spec install --spark --spark-master yarn`
writes a kernel that is the Spark driver on the host (real sshd) with executors in YARN containers; its session is
created on first use (lazy), a job runs on the cluster, and shutting the kernel down ends the YARN application."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from jupyter_client.manager import AsyncKernelManager

from ...support.kernels import run_code
from ..ssh.conftest import ssh_keys, sshd  # noqa: F401  (fixtures: the SSH host is this machine's real sshd)
from .conftest import RealYarn
from .test_real_yarn import FINAL, wait_for_app

pytestmark = pytest.mark.integration

pyspark = pytest.importorskip("pyspark", reason="pyspark is not installed (scripts/test.sh installs it where Java is)")


async def test_ssh_kernel_is_a_yarn_client_mode_driver(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    jupyter_path: Path,
    real_yarn: RealYarn,
    sshd,  # noqa: F811
    ssh_keys,  # noqa: F811
) -> None:
    spark_home = Path(pyspark.__file__).parent
    opts = " ".join([
        "--num-executors 1 --driver-memory 512m --executor-memory 512m",
        f"--conf spark.yarn.jars=local:{spark_home}/jars/*",  # on this (the only) node already: no upload
        "--conf spark.ui.enabled=false --conf spark.ui.showConsoleProgress=false",
        # The driver on the SSH host and the executors bind loopback (the network rule of these tests).
        "--conf spark.driver.host=127.0.0.1 --conf spark.driver.bindAddress=127.0.0.1",
        "--conf spark.executorEnv.SPARK_LOCAL_IP=127.0.0.1 --conf spark.yarn.appMasterEnv.SPARK_LOCAL_IP=127.0.0.1",
    ])  # fmt: skip
    prefix = tmp_path / "prefix"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "jupyter-ssh-spec"), "install", "--kernel-name", "ssh-yarn-client",
         "--prefix", str(prefix), "--remote-hosts", sshd.address, "--python", sys.executable,
         "--known-hosts", str(ssh_keys.known_hosts), "--client-key", str(ssh_keys.client_key),
         "--spark", "--spark-master", "yarn", "--spark-home", str(spark_home), "--extra-spark-opts", opts,
         "--launch-timeout", "60"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # Where the cluster's client configuration is on the host: the operator adds it to the spec's env.
    spec_file = prefix / "share" / "jupyter" / "kernels" / "ssh-yarn-client" / "kernel.json"
    spec = json.loads(spec_file.read_text())
    spec["env"]["HADOOP_CONF_DIR"] = str(real_yarn.conf_dir)
    spec_file.write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))

    km = AsyncKernelManager(kernel_name="ssh-yarn-client")
    await km.start_kernel()
    try:
        content, out = await run_code(km, "print(type(spark).__name__)", timeout=60)
        assert (content["status"], out.strip()) == ("ok", "_GpLazySpark"), content  # answered before any session
        code = (
            "n = spark.range(1000).count()\n"
            "print(n, sc.master, sc.getConf().get('spark.submit.deployMode'), sc.applicationId)"
        )
        content, out = await run_code(km, code, timeout=240)
        assert content["status"] == "ok", content
        n, master, mode, app_id = out.split()[-4:]
        assert (n, master, mode) == ("1000", "yarn", "client"), out
    finally:
        await km.shutdown_kernel(now=True)
    assert (await wait_for_app(real_yarn, app_id, FINAL, timeout=90))["state"] in FINAL
