"""A Spark kernel for real: a spec from ``jupyter-yarn-spec install --spark`` runs ipykernel as the Spark driver in
YARN cluster mode, submitted by pyspark's own spark-submit to the real YARN (scripts/yarn-cluster.sh)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from jupyter_client.manager import AsyncKernelManager

from ...support.kernels import run_code
from .conftest import RealYarn
from .test_real_yarn import FINAL, app_of, wait_for_app

pytestmark = pytest.mark.integration

pyspark = pytest.importorskip("pyspark", reason="pyspark is not installed (scripts/test.sh installs it where Java is)")

# A Spark job that runs until cancelled (a sum over 10^13 rows: hours). A thread of the cell says when the job runs
# on the cluster: an interrupt that arrives while Spark still plans the query has no job to cancel yet.
ENDLESS_JOB = """
import threading, time
def _say_when_running():
    while not sc.statusTracker().getActiveJobsIds():
        time.sleep(0.2)
    print('job running', flush=True)
threading.Thread(target=_say_when_running, daemon=True).start()
spark.range(10**13).selectExpr('sum(id % 7)').collect()
"""


@pytest.fixture(params=["lazy", "eager"])
def spark_spec(
    request: pytest.FixtureRequest, jupyter_path: Path, real_yarn: RealYarn, monkeypatch: pytest.MonkeyPatch
) -> str:
    """``jupyter-yarn-spec install --spark --spark-init-mode lazy|eager`` into the test's JUPYTER_PATH, as a user
    would run it. Lazy: the kernel answers at once and makes its session in the background (the AM waits for it)."""
    spark_home = Path(pyspark.__file__).parent
    opts = " ".join([
        "--num-executors 1 --driver-memory 512m --executor-memory 512m",
        # pyspark's jars are on this (the only) node already: no 400 MB upload per launch.
        f"--conf spark.yarn.jars=local:{spark_home}/jars/*",
        "--conf spark.ui.enabled=false",
        # Spark's driver and executor bind loopback (the network rule of these tests).
        "--conf spark.yarn.appMasterEnv.SPARK_LOCAL_IP=127.0.0.1 --conf spark.executorEnv.SPARK_LOCAL_IP=127.0.0.1",
    ])  # fmt: skip
    subprocess.run(
        [
            shutil.which("jupyter-yarn-spec", path=str(Path(sys.executable).parent)) or "jupyter-yarn-spec",
            "install", "--spark", "--spark-home", str(spark_home), "--python-root", sys.prefix,
            "--extra-spark-opts", opts, "--kernel-name", "real_spark", "--prefix", str(jupyter_path.parent / "p"),
            "--launch-timeout", "240", "--spark-init-mode", request.param,
        ],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    installed = jupyter_path.parent / "p" / "share" / "jupyter" / "kernels" / "real_spark"
    target = jupyter_path / "kernels" / "real_spark"
    shutil.copytree(installed, target)
    config = json.loads((target / "kernel.json").read_text())["metadata"]["kernel_provisioner"]["config"]
    assert config["submit_command"] == [str(spark_home / "bin" / "spark-submit")]
    # The server's side: where YARN is (yarn-site.xml, no endpoint in the spec) and where agents call back.
    monkeypatch.setenv("HADOOP_CONF_DIR", str(real_yarn.conf_dir))
    monkeypatch.setenv("GP_RESPONSE_IP", "127.0.0.1")
    monkeypatch.setenv("GP_YARN_STARTUP_POLL_INTERVAL", "0.5")
    monkeypatch.setenv("GP_YARN_POLL_INTERVAL", "2")
    monkeypatch.setenv("SPARK_HOME", str(spark_home))
    return "real_spark"


async def test_spark_kernel_in_yarn_cluster_mode(spark_spec: str, real_yarn: RealYarn) -> None:
    km = AsyncKernelManager(kernel_name=spark_spec)
    await km.start_kernel(env={**os.environ})
    try:
        app_id = app_of(km)
        # Spark's AM registers once the driver's SparkContext exists: the kernel's exec_lines create it (lazy: in the
        # background, at once).
        app = await wait_for_app(real_yarn, app_id, ("RUNNING", *FINAL), timeout=120)
        assert app["applicationType"] == "SPARK" and app["state"] == "RUNNING", app
        assert f"gp-kernel-{km.kernel_id}" in app["applicationTags"].split(",")
        count = (
            "n = spark.range(1000).count()\n"
            "executors = [e.host() for e in sc._jsc.sc().statusTracker().getExecutorInfos()]\n"
            "print(n, sc.master, sc.getConf().get('spark.submit.deployMode'), len(executors))"
        )
        content, out = await run_code(km, count, timeout=180)
        assert content["status"] == "ok", content
        n, master, mode, executors = out.split()
        # the driver and at least one executor (the executor infos include the driver's own)
        assert (n, master, mode) == ("1000", "yarn", "cluster") and int(executors) >= 2, out

        # Interrupt a running job: Spark cancels it and the kernel stays usable.
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=60)
            msg_id = kc.execute(ENDLESS_JOB)
            while True:
                msg = await kc.get_iopub_msg(timeout=120)
                if msg["parent_header"].get("msg_id") == msg_id and "job running" in msg["content"].get("text", ""):
                    break
            await km.interrupt_kernel()
            while True:
                reply = await kc.get_shell_msg(timeout=60)
                if reply["parent_header"].get("msg_id") == msg_id:
                    break
        finally:
            kc.stop_channels()
        interrupted = reply["content"]
        traceback = "\n".join(interrupted.get("traceback", []))
        # Py4J reports the interrupted call as KeyboardInterrupt or, at times, as an empty answer; both cancel.
        assert interrupted["status"] == "error", interrupted
        assert interrupted["ename"] in ("KeyboardInterrupt", "Py4JNetworkError"), traceback
        assert "Custom TB Handler failed" not in traceback, traceback
        content, out = await run_code(
            km, "print(len(sc.statusTracker().getActiveJobsIds()), spark.range(1000).count())", timeout=120
        )
        assert content["status"] == "ok" and out.split() == ["0", "1000"], out

        # Restart in place: the same application (the driver's JVM stays), a new kernel that reaches Spark again.
        await km.restart_kernel(now=True)
        assert app_of(km) == app_id
        content, out = await run_code(km, "print(spark.range(10).count())", timeout=120)
        assert content["status"] == "ok" and out.strip() == "10", (content, out)
    finally:
        await km.shutdown_kernel(now=True)
    assert (await wait_for_app(real_yarn, app_id, FINAL))["state"] in ("KILLED", "FINISHED")
