"""Spark kernels on the real cluster: the kernel's pod is the Spark driver (client mode, pyspark from the image), its
executors are pods that the driver creates through the API with the kernel's service account.

The kernel spec is the one ``jupyter-k8s-spec install --spark`` writes (read back from ``--dry-run``), with the tests'
kubeconfig and pull policy added; the kernel's account is bound by deploy/kubernetes/rbac-spark-kernel.yaml applied as
it is, and the server side by rbac-shared-namespace.yaml, as in every real-cluster test. The images are built by
``jupyter-spark-images build`` (cached by content) and imported into the cluster's containerd.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import AsyncKernelManager

from gateway_provisioners.core.errors import LaunchTimeout

from ....support.kernels import run_code
from ....support.spark_images import build_spark_images
from .conftest import NAMESPACE, REPO, Cluster, _unavailable

pytestmark = pytest.mark.integration

KERNEL_IMAGE = "gp-test-spark-kernel:k8s"
EXECUTOR_IMAGE = "gp-test-spark-executor:k8s"
SPARK_RBAC = REPO / "deploy" / "kubernetes" / "rbac-spark-kernel.yaml"
# Small executors: the node has two cores, shared with the kernel pod and other tests' pods.
SMALL = (
    "--conf spark.executor.instances=1 --conf spark.executor.cores=1 "
    "--conf spark.kubernetes.executor.request.cores=100m "
    "--conf spark.executor.memory=512m --conf spark.kubernetes.container.image.pullPolicy=Never "
    "--conf spark.ui.showConsoleProgress=false"
)
JOB_SECONDS = 300  # a job that would outlive every test: only an interrupt ends it


@pytest.fixture(scope="session")
def spark_images(cluster: Cluster, server_kubeconfig: str) -> str:
    """Kernel and executor images, built (cached by content) and imported into the cluster; the RBAC applied (in the
    namespace that ``server_kubeconfig`` makes sure exists)."""
    started = time.monotonic()
    build_spark_images(KERNEL_IMAGE, EXECUTOR_IMAGE, _unavailable)
    for image in (EXECUTOR_IMAGE, KERNEL_IMAGE):
        cluster.script("load-image", image, timeout=900)
    cluster.kubectl("apply", "-f", str(SPARK_RBAC))
    print(f"\nSpark images in the cluster after {time.monotonic() - started:.1f} s", file=sys.stderr)
    return KERNEL_IMAGE


@pytest.fixture
def spark_spec(jupyter_path: Path, spark_images: str, server_kubeconfig: str) -> Callable[..., str]:
    """Write the kernel spec of ``jupyter-k8s-spec install --spark`` with ``options``; returns its name."""

    def write(name: str, *options: str, **config: Any) -> str:
        cli = subprocess.run(
            [sys.executable, "-m", "gateway_provisioners_cli.k8s_spec", "install", "--dry-run", "--spark",
             "--image-name", KERNEL_IMAGE, "--namespace", NAMESPACE, *options],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        spec = json.loads(cli.stdout)
        spec["metadata"]["kernel_provisioner"]["config"].update(
            {"kubeconfig": server_kubeconfig, "image_pull_policy": "Never", **config}
        )
        folder = jupyter_path / "kernels" / name
        folder.mkdir(parents=True)
        (folder / "kernel.json").write_text(json.dumps(spec))
        return name

    return write


def failure(content: dict[str, Any], out: str = "") -> str:
    """A failed cell's error, for the assertion message."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(content.get("traceback") or []))
    return f"{content.get('ename')}: {content.get('evalue')}\n{lines[-1500:]}\noutput:\n{out[-3000:]}"


def executor_pods(cluster: Cluster, driver: str) -> list[dict[str, Any]]:
    """The executor pods whose owner is the pod named ``driver``."""
    out = cluster.kubectl("get", "pods", "-n", NAMESPACE, "-l", "spark-role=executor", "-o", "json").stdout
    return [
        pod for pod in json.loads(out)["items"]
        if any(ref.get("name") == driver for ref in pod["metadata"].get("ownerReferences") or [])
    ]  # fmt: skip


async def until(what: str, condition: Callable[[], Any], timeout: float = 90) -> Any:
    """Await ``condition()`` (run in a thread) until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(condition)
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        await asyncio.sleep(0.5)


def running_jobs(ip: str) -> list[int] | None:
    """Ids of the driver's running Spark jobs, from its UI's REST API at the pod's IP (None while it is not up)."""
    try:
        with urllib.request.urlopen(f"http://{ip}:4040/api/v1/applications", timeout=5) as response:
            apps = json.load(response)
        with urllib.request.urlopen(
            f"http://{ip}:4040/api/v1/applications/{apps[0]['id']}/jobs?status=running", timeout=5
        ) as response:
            return [job["jobId"] for job in json.load(response)]
    except (OSError, ValueError, IndexError, KeyError):
        return None


async def test_spark_job_runs_on_executor_pods_owned_by_the_kernel_pod(cluster: Cluster, spark_spec, pods_left):
    km = AsyncKernelManager(
        kernel_name=spark_spec("gp-spark-lazy", "--executor-image-name", EXECUTOR_IMAGE, "--extra-spark-opts", SMALL)
    )
    await km.start_kernel()
    driver = f"kernel-{km.kernel_id}"
    try:
        # Lazy: the kernel answers before any session exists; no executor yet.
        content, out = await run_code(km, "print(repr(spark))", timeout=60)
        assert content["status"] == "ok" and "created on first use" in out, out
        assert executor_pods(cluster, driver) == []

        content, out = await run_code(km, "print(spark.range(1000).count())", timeout=240)
        assert content["status"] == "ok", failure(content, out)
        assert out.strip().splitlines()[-1] == "1000"
        pod = cluster.get("pod", driver, NAMESPACE)
        assert pod is not None and pod["spec"]["serviceAccountName"] == "spark-kernel"
        executors = executor_pods(cluster, driver)
        assert 1 <= len(executors) <= 2, [e["metadata"]["name"] for e in executors]
        for executor in executors:
            # Owned by the kernel's pod (Spark sets it from spark.kubernetes.driver.pod.name): they go with it.
            (owner,) = executor["metadata"]["ownerReferences"]
            assert (owner["kind"], owner["uid"]) == ("Pod", pod["metadata"]["uid"])
            assert executor["status"]["phase"] == "Running"
            # The executors' template: non-root, no API token.
            assert executor["spec"]["securityContext"]["runAsNonRoot"] is True
            assert executor["spec"]["automountServiceAccountToken"] is False
        first_executors = {e["metadata"]["uid"] for e in executors}  # a new session reuses the names

        # The kernel's account may do what Spark needs in its namespace, and no more.
        content, out = await run_code(km, API_PROBE, timeout=60)
        assert content["status"] == "ok", failure(content, out)
        assert json.loads(out.strip().splitlines()[-1]) == {"pods": 200, "secrets": 403, "kube-system pods": 403}

        # Restart in place keeps the driver's pod; the old session's executors go, the new session makes others.
        await km.restart_kernel(now=False)
        after = cluster.get("pod", driver, NAMESPACE)
        assert after is not None and after["metadata"]["uid"] == pod["metadata"]["uid"]
        content, out = await run_code(km, "print(spark.range(10).count())", timeout=240)
        assert content["status"] == "ok" and out.strip().splitlines()[-1] == "10", failure(content, out)
        await until(
            "the first session's executors gone",
            lambda: not first_executors & {e["metadata"]["uid"] for e in executor_pods(cluster, driver)},
        )
        assert executor_pods(cluster, driver)
    finally:
        await km.shutdown_kernel(now=True)
    await until("no executor pod left after shutdown", lambda: executor_pods(cluster, driver) == [])
    await until("the driver's pod deleted", lambda: cluster.get("pod", driver, NAMESPACE) is None)


# Reads the API with the pod's own token: 200 where the Role allows, 403 elsewhere.
API_PROBE = """
import json, os, ssl, urllib.request, urllib.error
sa = '/var/run/secrets/kubernetes.io/serviceaccount'
ctx = ssl.create_default_context(cafile=sa + '/ca.crt')
token = open(sa + '/token').read()
base = 'https://%s:%s' % (os.environ['KUBERNETES_SERVICE_HOST'], os.environ['KUBERNETES_SERVICE_PORT'])
def status(path):
    request = urllib.request.Request(base + path, headers={'Authorization': 'Bearer ' + token})
    try:
        return urllib.request.urlopen(request, context=ctx, timeout=10).status
    except urllib.error.HTTPError as exc:
        return exc.code
ns = open(sa + '/namespace').read()
print(json.dumps({'pods': status('/api/v1/namespaces/%s/pods' % ns),
                  'secrets': status('/api/v1/namespaces/%s/secrets' % ns),
                  'kube-system pods': status('/api/v1/namespaces/kube-system/pods')}))
"""


async def test_interrupt_cancels_the_running_job_and_the_kernel_stays_usable(cluster: Cluster, spark_spec, pods_left):
    km = AsyncKernelManager(
        kernel_name=spark_spec("gp-spark-interrupt", "--executor-image-name", EXECUTOR_IMAGE,
                               "--extra-spark-opts", SMALL, "--spark-init-mode", "eager", "--launch-timeout", "240")
    )  # fmt: skip
    await km.start_kernel()
    driver = f"kernel-{km.kernel_id}"
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=120)
        ip = km.get_connection_info()["ip"]
        # Eager: the session exists before the kernel answers, with its executor.
        assert executor_pods(cluster, driver)
        msg_id = kc.execute(
            f"sc.parallelize(range(2), 2).map(lambda x: __import__('time').sleep({JOB_SECONDS}) or x).count()"
        )
        job = await until("the long job running", lambda: running_jobs(ip), 120)
        started = time.monotonic()
        await km.interrupt_kernel()
        while True:
            reply = await kc.get_shell_msg(timeout=60)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] in ("KeyboardInterrupt", "Py4JNetworkError"), reply["content"]["ename"]
        # The job is cancelled (not left running on the executors), long before it could have ended by itself.
        await until("the job cancelled", lambda: running_jobs(ip) == [], 60)
        assert time.monotonic() - started < JOB_SECONDS / 2, job
    finally:
        kc.stop_channels()
    try:
        content, out = await run_code(km, "print(spark.range(1000).count())", timeout=120)
        assert content["status"] == "ok" and out.strip().splitlines()[-1] == "1000", failure(content, out)
    finally:
        await km.shutdown_kernel(now=True)
    await until("no executor pod left after shutdown", lambda: executor_pods(cluster, driver) == [])


async def test_a_failed_launch_leaves_no_executor_pod(cluster: Cluster, spark_spec, pods_left):
    # Eager, with executors that cannot start (no such image) and a session that waits for all of them: the launch
    # times out while the driver's executor pod exists. Deleting the kernel's pod must take the executors with it.
    wait_for_all = (
        "--conf spark.scheduler.minRegisteredResourcesRatio=1 "
        "--conf spark.scheduler.maxRegisteredResourcesWaitingTime=600s"
    )
    km = AsyncKernelManager(
        kernel_name=spark_spec("gp-spark-failed", "--executor-image-name", "gp-no-such-executor:0",
                               "--extra-spark-opts", f"{SMALL} {wait_for_all}", "--spark-init-mode", "eager",
                               "--launch-timeout", "75")
    )  # fmt: skip
    km.kernel_id = str(uuid.uuid4())  # known before the launch, for the watch below
    seen: set[str] = set()
    stop = asyncio.Event()

    async def watch_executors() -> None:
        while not stop.is_set():
            pods = await asyncio.to_thread(executor_pods, cluster, f"kernel-{km.kernel_id}")
            seen.update(p["metadata"]["name"] for p in pods)
            await asyncio.sleep(0.5)

    watcher = asyncio.ensure_future(watch_executors())
    try:
        with pytest.raises(LaunchTimeout):
            await km.start_kernel()
    finally:
        stop.set()
        await watcher
    assert seen, "the driver made no executor pod before the launch ended"
    driver = f"kernel-{km.kernel_id}"
    await until("the driver's pod deleted", lambda: cluster.get("pod", driver, NAMESPACE) is None)
    await until("no executor pod left", lambda: executor_pods(cluster, driver) == [])


async def test_spark_kernel_in_a_namespace_of_its_own(
    cluster: Cluster, spark_spec, per_kernel_kubeconfig: str, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    # --namespace-per-kernel: the kernel's namespace, Role (kernel_role_rules, by default what a driver needs) and
    # account are made for it, with no manifest applied; its executors run there and go with it.
    monkeypatch.setenv("KERNEL_USERNAME", "spark-user")
    km = AsyncKernelManager(
        kernel_name=spark_spec("gp-spark-nspk", "--executor-image-name", EXECUTOR_IMAGE, "--extra-spark-opts", SMALL,
                               "--namespace-per-kernel", kubeconfig=per_kernel_kubeconfig)
    )  # fmt: skip
    await km.start_kernel()
    namespace, driver = f"spark-user-{km.kernel_id}", f"kernel-{km.kernel_id}"
    try:
        content, out = await run_code(km, "print(spark.range(1000).count())", timeout=240)
        assert content["status"] == "ok", failure(content, out)
        assert out.strip().splitlines()[-1] == "1000"
        listed = cluster.kubectl("get", "pods", "-n", namespace, "-l", "spark-role=executor", "-o", "json").stdout
        executors = json.loads(listed)["items"]
        assert executors, "no executor pod in the kernel's namespace"
        assert all(ref["name"] == driver for e in executors for ref in e["metadata"]["ownerReferences"])
    finally:
        await km.shutdown_kernel(now=True)
    await until("the kernel's namespace deleted", lambda: cluster.get("namespace", namespace) is None, 180)
