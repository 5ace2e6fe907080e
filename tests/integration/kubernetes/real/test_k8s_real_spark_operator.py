"""Kernels as kubeflow Spark operator SparkApplications on the real cluster: the operator (v2.3.0, built from its Go
module by scripts/spark-operator.sh and running against the cluster with its own CRDs) submits each application with
spark-submit in cluster mode; the driver pod is the kernel's pod, running the agent as its main application, and the
kernel attaches to the driver's JVM. Its executors are pods of the application.

The kernel spec is the one ``jupyter-k8s-spec install --spark --crd`` writes (read back from ``--dry-run``); the server
side has only the rights of rbac-shared-namespace.yaml and rbac-spark-operator.yaml, the driver those of
rbac-spark-kernel.yaml, applied as they are.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import AsyncKernelManager

from gateway_provisioners.adapters.kubernetes.client import KubeClient
from gateway_provisioners.adapters.kubernetes.reaper import reap_orphans
from gateway_provisioners.core.errors import LaunchError

from ....support.kernels import kernel_pid, new_client, reattach_in_new_process, run_code
from .conftest import NAMESPACE, REPO, Cluster, _unavailable
from .test_k8s_real_spark import (  # noqa: F401 (spark_images: the fixture that builds and imports the images)
    EXECUTOR_IMAGE,
    JOB_SECONDS,
    executor_pods,
    failure,
    running_jobs,
    spark_images,
    spark_spec,
    until,
)

pytestmark = pytest.mark.integration

OPERATOR = REPO / "scripts" / "spark-operator.sh"
OPERATOR_RBAC = REPO / "deploy" / "kubernetes" / "rbac-spark-operator.yaml"
SPARK_APPLICATIONS = ("sparkoperator.k8s.io", "v1beta2", "sparkapplications")
# Small executors (the node has two cores); the images were imported into containerd, nothing is pulled.
SMALL = (
    "--conf spark.executor.cores=1 --conf spark.kubernetes.executor.request.cores=100m "
    "--conf spark.executor.memory=512m --conf spark.driver.memory=512m "
    "--conf spark.kubernetes.driver.request.cores=100m --conf spark.kubernetes.container.image.pullPolicy=Never "
    "--conf spark.ui.showConsoleProgress=false"
)


@pytest.fixture(scope="session")
def spark_operator(cluster: Cluster, spark_images: str, server_kubeconfig: str) -> str:  # noqa: F811
    """The operator is up (scripts/test.sh starts it after the cluster); the server may manage SparkApplications.
    Returns the address drivers reach the API server at: the test cluster has no DNS for kubernetes.default.svc."""
    result = subprocess.run(["bash", str(OPERATOR), "env"], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        message = "the Spark operator is not running (bash scripts/spark-operator.sh up, after the cluster)"
        if os.environ.get("GP_SPARK_OPERATOR") == "1":
            pytest.fail(f"GP_SPARK_OPERATOR=1 but {message}")
        _unavailable(message)
    cluster.kubectl("apply", "-f", str(OPERATOR_RBAC))
    service = json.loads(cluster.kubectl("get", "service", "kubernetes", "-n", "default", "-o", "json").stdout)
    return f"https://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"


@pytest.fixture
def operator_spec(spark_operator: str, spark_spec: Callable[..., str]) -> Callable[..., str]:  # noqa: F811
    """Write the kernel spec of ``jupyter-k8s-spec install --spark --crd`` with ``options``; returns its name."""

    def write(name: str, *options: str, spark_opts: str = "", **config: Any) -> str:
        spark_opts = f"--conf spark.kubernetes.driver.master={spark_operator} {spark_opts}"
        return spark_spec(name, "--crd", "--executor-image-name", EXECUTOR_IMAGE, "--extra-spark-opts", spark_opts,
                          *options, **config)  # fmt: skip

    return write


def application(cluster: Cluster, name: str) -> dict[str, Any] | None:
    return cluster.get("sparkapplication", name, NAMESPACE)


async def test_a_spark_application_kernel_runs_jobs_is_interrupted_restarts_and_leaves_nothing(
    cluster: Cluster, operator_spec, pods_left
) -> None:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    km = AsyncKernelManager(
        kernel_name=operator_spec("gp-spark-operator", "--spark-init-mode", "eager", "--launch-timeout", "300",
                                  spark_opts=SMALL)
    )  # fmt: skip
    await km.start_kernel()
    ready = time.monotonic() - started
    name = f"kernel-{km.kernel_id}"
    try:
        app = application(cluster, name)
        assert app is not None, "no SparkApplication"
        assert app["status"]["applicationState"]["state"] == "RUNNING", app["status"]
        assert app["status"]["driverInfo"]["podName"] == name
        driver = cluster.get("pod", name, NAMESPACE)
        assert driver is not None and driver["metadata"]["labels"]["kernel_id"] == km.kernel_id
        assert driver["spec"]["securityContext"]["runAsNonRoot"] is True
        assert driver["spec"]["serviceAccountName"] == "spark-kernel"
        print(f"\nSparkApplication kernel ready (eager session) in {ready:.1f} s", file=sys.stderr)

        # The session is the driver JVM's: the application's configuration (executor memory) and its executors.
        content, out = await run_code(
            km, "print(spark.range(1000).count(), sc.getConf().get('spark.executor.memory'))", timeout=240
        )
        assert content["status"] == "ok", failure(content, out)
        assert out.strip().splitlines()[-1] == "1000 512m"
        executors = executor_pods(cluster, name)
        assert executors, "no executor pod owned by the driver"
        for executor in executors:
            assert executor["spec"]["securityContext"]["runAsNonRoot"] is True
            assert executor["spec"]["automountServiceAccountToken"] is False

        # Interrupt cancels the running job; the kernel stays usable.
        kc = new_client(km)
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=60)
            msg_id = kc.execute(
                f"sc.parallelize(range(2), 2).map(lambda x: __import__('time').sleep({JOB_SECONDS}) or x).count()"
            )
            ip = km.get_connection_info()["ip"]
            await until("the long job running", lambda: running_jobs(ip), 120)
            interrupted = time.monotonic()
            await km.interrupt_kernel()
            while (reply := await kc.get_shell_msg(timeout=60))["parent_header"].get("msg_id") != msg_id:
                pass
            assert reply["content"]["status"] == "error", reply["content"]
            await until("the job cancelled", lambda: running_jobs(ip) == [], 60)
            assert time.monotonic() - interrupted < JOB_SECONDS / 2
        finally:
            kc.stop_channels()

        # Restart in place: a new kernel process in the same driver pod attaches to the same JVM and context.
        await km.restart_kernel(now=False)
        after = cluster.get("pod", name, NAMESPACE)
        assert after is not None and after["metadata"]["uid"] == driver["metadata"]["uid"]
        content, out = await run_code(km, "print(spark.range(10).count())", timeout=240)
        assert content["status"] == "ok" and out.strip().splitlines()[-1] == "10", failure(content, out)
    finally:
        await km.shutdown_kernel(now=True)
    await until("the SparkApplication deleted", lambda: application(cluster, name) is None)
    await until("the driver pod deleted", lambda: cluster.get("pod", name, NAMESPACE) is None)
    await until("no executor pod left", lambda: executor_pods(cluster, name) == [])
    await until("the launch Secret deleted (owned by the application)",
                lambda: cluster.get("secret", f"{name}-launch", NAMESPACE) is None)  # fmt: skip


async def test_a_failed_submission_fails_the_launch_at_once_with_the_operators_message(
    cluster: Cluster, operator_spec, pods_left
) -> None:  # type: ignore[no-untyped-def]
    # A driver memory Spark cannot parse: the operator's spark-submit fails, no driver pod is ever made; the launch
    # must fail with the operator's reason long before its timeout, and leave no SparkApplication.
    km = AsyncKernelManager(
        kernel_name=operator_spec("gp-spark-operator-bad", "--launch-timeout", "240",
                                  spark_opts="--conf spark.driver.memory=lots")
    )  # fmt: skip
    started = time.monotonic()
    with pytest.raises(LaunchError) as raised:
        await km.start_kernel()
    seconds = time.monotonic() - started
    print(f"\nthe launch failed in {seconds:.1f} s: {raised.value}", file=sys.stderr)
    assert "SparkApplication" in str(raised.value) and "FAILED" in str(raised.value), str(raised.value)
    assert seconds < 120, f"the failed submission was reported after {seconds:.0f} s"
    name = f"kernel-{km.kernel_id}"
    await until("the SparkApplication deleted", lambda: application(cluster, name) is None)
    assert cluster.get("pod", name, NAMESPACE) is None


async def test_a_lazy_kernel_is_reattached_then_reaped_with_its_application(
    cluster: Cluster, operator_spec, server_kubeconfig: str, pods_left, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    km = AsyncKernelManager(
        kernel_name=operator_spec("gp-spark-operator-lazy", "--launch-timeout", "300", spark_opts=SMALL)
    )
    await km.start_kernel()
    name = f"kernel-{km.kernel_id}"
    client = KubeClient(server_kubeconfig)
    try:
        # Lazy: the kernel answers before any session exists, so no executor yet.
        content, out = await run_code(km, "print(repr(spark))", timeout=60)
        assert content["status"] == "ok" and "created on first use" in out, out
        assert executor_pods(cluster, name) == []
        # A restarted server reattaches from the persisted record: the resource's name is in it.
        other_pid, handle = await reattach_in_new_process(km, tmp_path)
        assert other_pid == await kernel_pid(km)
        assert handle["state"] == "running" and handle["data"]["resource"] == name, handle
        kinds = [SPARK_APPLICATIONS]
        assert await reap_orphans(client, {km.kernel_id}, namespace=NAMESPACE, min_age=0, resources=kinds) == []
        removed = await reap_orphans(client, set(), namespace=NAMESPACE, min_age=0, resources=kinds)
        assert sorted((r["kind"], r["kernel_id"]) for r in removed) == [
            ("Pod", km.kernel_id), ("SparkApplication", km.kernel_id)
        ]  # fmt: skip
        await until("the SparkApplication deleted", lambda: application(cluster, name) is None)
        await until("the driver pod deleted", lambda: cluster.get("pod", name, NAMESPACE) is None)
        deadline = time.monotonic() + 60
        while await km.is_alive():
            assert time.monotonic() < deadline, "the provisioner still polls the reaped kernel as alive"
            await asyncio.sleep(0.5)
    finally:
        await client.close()
        await km.shutdown_kernel(now=True)
    await until("the launch Secret deleted", lambda: cluster.get("secret", f"{name}-launch", NAMESPACE) is None)
