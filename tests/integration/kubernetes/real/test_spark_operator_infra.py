"""The kubeflow Spark operator on the real cluster (scripts/spark-operator.sh, no webhook) with our Spark images: a
``SparkApplication`` whose driver is the Spark kernel image (its ``gp-spark-driver`` entry, named by the driver's pod
template) runs to COMPLETED, and a child process of the application's Python attaches to the driver's JVM — the path
a kernel takes when the agent is the application (driver JVM → agent → kernel).

The operator is found through ``scripts/spark-operator.sh env``; when it is not up the test skips, unless
GP_SPARK_OPERATOR=1 (scripts/test.sh sets it after ``up``): then it fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from .conftest import NAMESPACE, REPO, Cluster
from .test_k8s_real_spark import EXECUTOR_IMAGE
from .test_k8s_real_spark import spark_images as spark_images  # the fixture (explicit re-export)

pytestmark = pytest.mark.integration

OPERATOR = REPO / "scripts" / "spark-operator.sh"
SECURE_CONTAINER = {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
SECURE_POD = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 100, "seccompProfile": {"type": "RuntimeDefault"}}

# The application's main file starts a child Python that inherits PythonRunner's gateway environment.
MAIN = """
import os, subprocess, sys
print("GATEWAY", sorted(k for k in os.environ if k.startswith("PYSPARK_GATEWAY")), flush=True)
sys.exit(subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "child.py")]).returncode)
"""
CHILD = """
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
conf = spark.sparkContext.getConf()
print("CHILD", conf.get("spark.app.name"), conf.get("spark.executor.instances"), flush=True)
print("COUNT", spark.range(1000).count(), flush=True)
"""


@pytest.fixture(scope="module")
def operator() -> None:
    result = subprocess.run(["bash", str(OPERATOR), "env"], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        reason = "the Spark operator is not up (bash scripts/spark-operator.sh up)"
        if os.environ.get("GP_SPARK_OPERATOR") == "1":
            pytest.fail(f"GP_SPARK_OPERATOR=1 but {reason}")
        pytest.skip(reason)


def application(name: str, api_server: str, kernel_image: str) -> dict[str, Any]:
    """The recipe of docs/spark-operator.md."""
    return {
        "apiVersion": "sparkoperator.k8s.io/v1beta2",
        "kind": "SparkApplication",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "type": "Python", "mode": "cluster", "sparkVersion": "4.3.0",
            "mainApplicationFile": "local:///opt/gp-app/main.py",
            "imagePullPolicy": "Never", "restartPolicy": {"type": "Never"},
            "sparkConf": {"spark.ui.showConsoleProgress": "false"},
            "driver": {
                "image": kernel_image, "podName": f"{name}-driver", "kubernetesMaster": api_server,
                "serviceAccount": "spark-kernel", "cores": 1, "coreRequest": "100m", "memory": "512m",
                "labels": {"gp-test": name},
                "secrets": [{"name": name, "path": "/etc/gp-secret", "secretType": "Generic"}],
                "template": {"spec": {
                    "securityContext": {**SECURE_POD, "fsGroup": 100},
                    "containers": [{
                        "name": "spark-kubernetes-driver", "command": ["/usr/local/bin/gp-spark-driver"],
                        "securityContext": SECURE_CONTAINER,
                        "volumeMounts": [{"name": "app", "mountPath": "/opt/gp-app", "readOnly": True}],
                    }],
                    "volumes": [{"name": "app", "configMap": {"name": name}}],
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


def test_a_spark_application_runs_the_kernel_image_as_its_driver(
    cluster: Cluster, operator: None, spark_images: str, tmp_path: Path
) -> None:
    name = f"gp-infra-{uuid.uuid4().hex[:8]}"
    service = json.loads(cluster.kubectl("get", "service", "kubernetes", "-n", "default", "-o", "json").stdout)
    api_server = f"https://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"
    (tmp_path / "main.py").write_text(MAIN)
    (tmp_path / "child.py").write_text(CHILD)
    manifest = tmp_path / "app.json"
    manifest.write_text(json.dumps(application(name, api_server, spark_images)))
    cluster.kubectl("create", "configmap", name, "-n", NAMESPACE,
                    f"--from-file={tmp_path / 'main.py'}", f"--from-file={tmp_path / 'child.py'}")  # fmt: skip
    cluster.kubectl("create", "secret", "generic", name, "-n", NAMESPACE, "--from-literal=token=x")
    states: list[str] = []
    executors: set[str] = set()

    def finished() -> bool:
        app = cluster.get("sparkapplication", name, NAMESPACE) or {}
        status = app.get("status") or {}
        state = (status.get("applicationState") or {}).get("state", "")
        if not states or states[-1] != state:
            states.append(state)
        executors.update(status.get("executorState") or {})
        return state in ("COMPLETED", "FAILED", "SUBMISSION_FAILED")

    try:
        cluster.kubectl("apply", "-f", str(manifest))
        cluster.wait_until(f"{name} finished", finished, timeout=300)
        log = cluster.kubectl("logs", f"{name}-driver", "-n", NAMESPACE).stdout
        assert states[-1] == "COMPLETED", (states, log[-3000:])
        assert "RUNNING" in states, states
        assert "GATEWAY ['PYSPARK_GATEWAY_PORT', 'PYSPARK_GATEWAY_SECRET']" in log
        # The child attached to the driver's JVM: the application's name and executor count are its configuration.
        assert f"CHILD {name} 1" in log and "COUNT 1000" in log, log[-3000:]
        assert len(executors) == 1, executors
        driver = cluster.get("pod", f"{name}-driver", NAMESPACE)
        assert driver is not None
        container = driver["spec"]["containers"][0]
        assert container["command"] == ["/usr/local/bin/gp-spark-driver"] and container["args"][0] == "driver"
        assert driver["metadata"]["labels"]["gp-test"] == name
        assert driver["spec"]["securityContext"]["runAsUser"] == 1000
        assert "/etc/gp-secret" in [m["mountPath"] for m in container["volumeMounts"]]
        # Finished executors are deleted by the driver.
        selector = f"spark-role=executor,spark-app-name={name}"
        cluster.wait_until(
            "executor pods gone",
            lambda: not cluster.kubectl("get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "name").stdout.strip(),
        )
    finally:
        # Without the webhook the driver pod is not owned by the application: it is deleted by name.
        cluster.kubectl("delete", "sparkapplication", name, "-n", NAMESPACE, "--ignore-not-found", check=False)
        cluster.kubectl("delete", "pod", f"{name}-driver", "-n", NAMESPACE, "--ignore-not-found", "--wait=false",
                        check=False)  # fmt: skip
        cluster.kubectl("delete", "configmap,secret", name, "-n", NAMESPACE, "--ignore-not-found", check=False)
