"""Spark kernels on the real test cluster: time to a ready Spark session, lazy and eager, against plain spark-submit;
and the same through the kubeflow Spark operator, against a plain SparkApplication of the same driver.

Run (root; the cluster up, e.g. after the real-cluster Spark tests built and loaded the images):
    sh scripts/k8s-cluster.sh up
    bash scripts/spark-operator.sh up        # optional: the operator's contenders run only when it is up
    python benchmarks/k8s_spark.py [--rounds 3]

Contenders, each round in one order, then reversed; each measured from its start until ``spark.range(1000).count()``
has returned on one executor pod (a session is ready when it has run a job):
- spark-submit: a bare pod of the same kernel image and service account running ``spark-submit`` (client mode, in the
  pod) of a driver that makes the session and counts — with the very arguments the Spark kernel computes
  (launchers/gp_spark_kernel.py), and no agent, kernel or Jupyter. Timed from the pod's creation to the time the
  driver prints after the count (one clock: pods run on this host).
- lazy / eager: AsyncKernelManager with the spec of ``jupyter-k8s-spec install --spark --spark-init-mode MODE``, timed
  from ``start_kernel()``; "answers" is when the kernel replies to kernel_info, "session" when the first cell
  ``spark.range(1000).count()`` has returned.
- application: a plain SparkApplication (the recipe of docs/spark-operator.md) whose main file is the same driver,
  mounted from a config map: timed from the application's creation to the time the driver prints after the count.
- operator lazy / operator eager: the spec of ``jupyter-k8s-spec install --spark --crd`` (spark-operator-provisioner),
  timed like lazy / eager.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jupyter_client.manager import AsyncKernelManager  # noqa: E402
from tests.integration.kubernetes.real.conftest import NAMESPACE, REPO, SCRIPT, SHARED_RBAC, Cluster  # noqa: E402
from tests.integration.kubernetes.real.test_k8s_real_spark import (  # noqa: E402
    EXECUTOR_IMAGE,
    KERNEL_IMAGE,
    SMALL,
    SPARK_RBAC,
)
from tests.support.spark_images import build_spark_images  # noqa: E402

from gateway_provisioners.adapters.kubernetes import close_hubs  # noqa: E402
from gateway_provisioners.agent import spark_kernel_path  # noqa: E402

DRIVER = (
    "import time\nfrom pyspark.sql import SparkSession\ns = SparkSession.builder.getOrCreate()\n"
    "n = s.range(1000).count()\nprint('COUNTED', n, time.time(), flush=True)\ns.stop()\n"
)
# In the pod: the Spark kernel's own argument computation, then exec spark-submit of DRIVER with them.
SUBMIT = (
    "import os, shlex\nns = {'__name__': 'gp_spark_kernel'}\nexec(os.environ['GP_SPARK_KERNEL'], ns)\n"
    "ns['prepare'](os.environ)\nargs = shlex.split(os.environ['PYSPARK_SUBMIT_ARGS'])[:-1]\n"
    "open('/tmp/driver.py', 'w').write(os.environ['DRIVER'])\nimport pyspark\n"
    "submit = os.path.join(os.path.dirname(pyspark.__file__), 'bin', 'spark-submit')\n"
    "os.execv(submit, [submit, *args, '/tmp/driver.py'])\n"
)


OPERATOR = REPO / "scripts" / "spark-operator.sh"
OPERATOR_RBAC = REPO / "deploy" / "kubernetes" / "rbac-spark-operator.yaml"
SECURE_CONTAINER = {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
SECURE_POD = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 100, "seccompProfile": {"type": "RuntimeDefault"}}
APP_CONF = {"spark.ui.showConsoleProgress": "false", "spark.kubernetes.container.image.pullPolicy": "Never"}


def application(name: str, api_server: str, config_map: str) -> dict[str, Any]:
    """The SparkApplication recipe of docs/spark-operator.md, its main file DRIVER from ``config_map``."""
    return {
        "apiVersion": "sparkoperator.k8s.io/v1beta2", "kind": "SparkApplication",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "type": "Python", "mode": "cluster", "sparkVersion": "4.3.0",
            "mainApplicationFile": "local:///opt/gp-app/driver.py",
            "imagePullPolicy": "Never", "restartPolicy": {"type": "Never"}, "sparkConf": APP_CONF,
            "driver": {
                "image": KERNEL_IMAGE, "podName": f"{name}-driver", "kubernetesMaster": api_server,
                "serviceAccount": "spark-kernel", "cores": 1, "coreRequest": "100m", "memory": "512m",
                "template": {"spec": {
                    "securityContext": {**SECURE_POD, "fsGroup": 100},
                    "containers": [{
                        "name": "spark-kubernetes-driver", "command": ["/usr/local/bin/gp-spark-driver"],
                        "securityContext": SECURE_CONTAINER,
                        "volumeMounts": [{"name": "app", "mountPath": "/opt/gp-app", "readOnly": True}],
                    }],
                    "volumes": [{"name": "app", "configMap": {"name": config_map}}],
                }},
            },
            "executor": {
                "image": EXECUTOR_IMAGE, "instances": 1, "cores": 1, "coreRequest": "100m", "memory": "512m",
                "template": {"spec": {
                    "automountServiceAccountToken": False, "securityContext": SECURE_POD,
                    "containers": [{"name": "spark-kubernetes-executor", "securityContext": SECURE_CONTAINER}],
                }},
            },
        },
    }  # fmt: skip


def submit_pod(name: str) -> dict[str, Any]:
    env = {"GP_SPARK_KERNEL": spark_kernel_path().read_text(), "DRIVER": DRIVER, "KERNEL_ID": name,
           "GP_SPARK_EXECUTOR_IMAGE": EXECUTOR_IMAGE, "SPARK_OPTS": SMALL}  # fmt: skip
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"gp-bench": "spark-submit"}},
        "spec": {
            "restartPolicy": "Never", "serviceAccountName": "spark-kernel", "enableServiceLinks": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 100, "fsGroup": 100},
            "containers": [{
                "name": "driver", "image": KERNEL_IMAGE, "imagePullPolicy": "Never",
                "command": ["python3", "-c", SUBMIT], "env": [{"name": k, "value": v} for k, v in env.items()],
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }  # fmt: skip


async def create(cluster: Cluster, manifest: dict[str, Any]) -> float:
    """Create ``manifest``; returns the wall-clock time just before (the driver's print is on the same clock)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
        json.dump(manifest, file)
        file.flush()
        started = time.time()
        await asyncio.to_thread(cluster.kubectl, "create", "-f", file.name)
    return started


async def counted_after(cluster: Cluster, pod_name: str, started: float, what: str) -> dict[str, float]:
    """Wait for the driver pod ``pod_name`` to end; the seconds from ``started`` to its print after the count."""
    deadline, phase = time.monotonic() + 300, None
    while time.monotonic() < deadline:
        pod = await asyncio.to_thread(cluster.get, "pod", pod_name, NAMESPACE)
        phase = (pod or {}).get("status", {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            break
        await asyncio.sleep(0.5)
    logs = (await asyncio.to_thread(cluster.kubectl, "logs", "-n", NAMESPACE, pod_name, check=False)).stdout
    counted = [line.split() for line in logs.splitlines() if line.startswith("COUNTED ")]
    if not counted or counted[-1][1] != "1000":
        raise RuntimeError(f"{what} ended {phase} without its count:\n{logs[-2000:]}")
    return {"session": float(counted[-1][2]) - started}


async def spark_submit(cluster: Cluster) -> dict[str, float]:
    name = f"gp-bench-submit-{uuid.uuid4().hex[:8]}"
    started = await create(cluster, submit_pod(name))
    try:
        return await counted_after(cluster, name, started, f"spark-submit pod {name}")
    finally:
        await asyncio.to_thread(cluster.kubectl, "delete", "pod", name, "-n", NAMESPACE, "--wait=false", check=False)


async def spark_application(cluster: Cluster, api_server: str, config_map: str) -> dict[str, float]:
    name = f"gp-bench-app-{uuid.uuid4().hex[:8]}"
    started = await create(cluster, application(name, api_server, config_map))
    try:
        return await counted_after(cluster, f"{name}-driver", started, f"SparkApplication {name}")
    finally:
        # Without the operator's webhook the driver pod is not owned by its application: both are deleted.
        await asyncio.to_thread(cluster.kubectl, "delete", "sparkapplication", name, "-n", NAMESPACE, "--wait=false",
                                check=False)  # fmt: skip
        await asyncio.to_thread(cluster.kubectl, "delete", "pod", f"{name}-driver", "-n", NAMESPACE, "--wait=false",
                                check=False)  # fmt: skip


async def kernel(mode: str, kernel_name: str) -> dict[str, float]:
    km = AsyncKernelManager(kernel_name=kernel_name)
    started = time.monotonic()
    await km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=300)
        answers = time.monotonic() - started
        out: list[str] = []
        reply = await kc.execute_interactive(
            "print(spark.range(1000).count())", timeout=300,
            output_hook=lambda m: out.append(m["content"].get("text", "")) if m["msg_type"] == "stream" else None,
        )  # fmt: skip
        session = time.monotonic() - started
        if reply["content"]["status"] != "ok" or "1000" not in "".join(out).split():
            raise RuntimeError(f"{mode}: the first count failed: {reply['content'].get('evalue')}")
        return {"answers": answers, "session": session}
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)
        await close_hubs()


def write_spec(root: Path, mode: str, server_kubeconfig: str, api_server: str = "") -> str:
    """The spec of ``jupyter-k8s-spec install --spark`` in ``mode``; with ``api_server``, of ``--spark --crd``."""
    crd = ["--crd"] if api_server else []
    opts = SMALL
    if api_server:  # the application's own options: --crd takes --conf only
        opts = " ".join(f"--conf {k}={v}" for k, v in APP_CONF.items()) + (
            " --conf spark.executor.instances=1 --conf spark.executor.cores=1 --conf spark.executor.memory=512m "
            "--conf spark.kubernetes.executor.request.cores=100m --conf spark.driver.memory=512m "
            f"--conf spark.kubernetes.driver.request.cores=100m --conf spark.kubernetes.driver.master={api_server}"
        )
    cli = subprocess.run(
        [sys.executable, "-m", "gateway_provisioners_cli.k8s_spec", "install", "--dry-run", "--spark", *crd,
         "--image-name", KERNEL_IMAGE, "--namespace", NAMESPACE, "--executor-image-name", EXECUTOR_IMAGE,
         "--extra-spark-opts", opts, "--spark-init-mode", mode, "--launch-timeout", "300"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    spec = json.loads(cli.stdout)
    spec["metadata"]["kernel_provisioner"]["config"].update(kubeconfig=server_kubeconfig, image_pull_policy="Never")
    folder = root / "kernels" / f"bench-spark{'-operator' if api_server else ''}-{mode}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kernel.json").write_text(json.dumps(spec))
    return folder.name


def stats(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} | {min(values):.1f} | {max(values):.1f}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    env_lines = subprocess.run(["bash", str(SCRIPT), "env"], capture_output=True, text=True, check=True).stdout
    cluster = Cluster(dict(line.split("=", 1) for line in env_lines.splitlines() if "=" in line))

    def unavailable(reason: str) -> None:
        raise SystemExit(reason)

    build_spark_images(KERNEL_IMAGE, EXECUTOR_IMAGE, unavailable)
    for image in (EXECUTOR_IMAGE, KERNEL_IMAGE):
        cluster.script("load-image", image, timeout=900)
    if cluster.get("namespace", NAMESPACE) is None:  # a fresh cluster: the manifests are for this namespace
        cluster.kubectl("create", "namespace", NAMESPACE)
    cluster.kubectl("apply", "-f", str(SPARK_RBAC))
    server_kubeconfig = cluster.script("server-kubeconfig", str(SHARED_RBAC)).strip().splitlines()[-1]
    operator_up = subprocess.run(["bash", str(OPERATOR), "env"], capture_output=True).returncode == 0
    api_server, config_map = "", "gp-bench-driver"
    if operator_up:
        cluster.kubectl("apply", "-f", str(OPERATOR_RBAC))
        service = json.loads(cluster.kubectl("get", "service", "kubernetes", "-n", "default", "-o", "json").stdout)
        api_server = f"https://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"
        cluster.kubectl("delete", "configmap", config_map, "-n", NAMESPACE, check=False)
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "driver.py").write_text(DRIVER)
            cluster.kubectl("create", "configmap", config_map, "-n", NAMESPACE,
                            f"--from-file={Path(folder) / 'driver.py'}")  # fmt: skip
    else:
        print("the Spark operator is not up: its contenders are left out", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        import os

        os.environ["JUPYTER_PATH"] = tmp
        os.environ.setdefault("KERNEL_USERNAME", "gp-bench")
        specs = {mode: write_spec(Path(tmp), mode, server_kubeconfig) for mode in ("lazy", "eager")}
        order = ["spark-submit", "lazy", "eager"]
        if operator_up:
            for mode in ("lazy", "eager"):
                specs[f"operator {mode}"] = write_spec(Path(tmp), mode, server_kubeconfig, api_server)
            order += ["application", "operator lazy", "operator eager"]
        results: dict[str, list[dict[str, float]]] = {contender: [] for contender in order}
        for round_ in range(args.rounds):
            for contender in order if round_ % 2 == 0 else list(reversed(order)):
                if contender == "spark-submit":
                    result = await spark_submit(cluster)
                elif contender == "application":
                    result = await spark_application(cluster, api_server, config_map)
                else:
                    result = await kernel(contender, specs[contender])
                print(contender, {k: round(v, 2) for k, v in result.items()}, file=sys.stderr, flush=True)
                results[contender].append(result)
    # Each kernel against the plain run of its path: spark-submit for the kernel's own pod, the plain SparkApplication
    # for the operator's kernels.
    floors = {name: statistics.median(r["session"] for r in results[name]) for name in ("spark-submit", "application")
              if results.get(name)}  # fmt: skip
    print(f"\n{platform.node()} · {platform.python_version()} · rounds {args.rounds}\n")
    print("| contender | kernel answers: median s | session ready: median s | min s | max s | vs its plain run |")
    print("| --- | --- | --- | --- | --- | --- |")
    for contender, rows in results.items():
        answers = [r["answers"] for r in rows if "answers" in r]
        session = [r["session"] for r in rows]
        answered = f"{statistics.median(answers):.1f}" if answers else "–"
        floor = floors["application" if contender.startswith(("operator", "application")) else "spark-submit"]
        print(f"| {contender} | {answered} | {stats(session)} | {statistics.median(session) / floor:.2f}x |")


if __name__ == "__main__":
    asyncio.run(main())
