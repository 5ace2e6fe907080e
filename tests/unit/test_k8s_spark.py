"""Spark kernels on Kubernetes without a cluster: the spec ``jupyter-k8s-spec install --spark`` writes, the driver's
spark-submit arguments (launchers/gp_spark_kernel.py), and the executor image's entry script against a stand-in
``java`` that prints what it was given (the real thing runs in tests/integration/kubernetes/real/)."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway_provisioners.agent import spark_kernel_path
from gateway_provisioners_cli import k8s_spec
from gateway_provisioners_cli.spark_images import DRIVER_ENTRY_TEXT, EXECUTOR_ENTRY_TEXT

spec_module = importlib.util.spec_from_file_location("gp_spark_kernel", spark_kernel_path())
assert spec_module is not None and spec_module.loader is not None
spark_kernel = importlib.util.module_from_spec(spec_module)
spec_module.loader.exec_module(spark_kernel)


def written(*args: str) -> dict:
    result = CliRunner().invoke(k8s_spec.main, ["install", "--dry-run", "--image-name", "k:1", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_spark_spec_runs_the_driver_kernel_with_its_settings_in_env() -> None:
    spec = written("--spark", "--executor-image-name", "e:1", "--spark-init-mode", "Eager",
                   "--extra-spark-opts", "--conf spark.executor.instances=2")  # fmt: skip
    assert spec["argv"][:2] == ["python3", "-c"]
    assert spec["argv"][2] == spark_kernel_path().read_text()  # the whole kernel, no file needed in the image
    assert spec["argv"][3:] == ["-f", "{connection_file}"]
    assert spec["env"] == {"GP_SPARK_INIT_MODE": "eager", "GP_SPARK_EXECUTOR_IMAGE": "e:1",
                           "SPARK_OPTS": "--conf spark.executor.instances=2"}  # fmt: skip
    config = spec["metadata"]["kernel_provisioner"]["config"]
    assert config["service_account_name"] == "spark-kernel" and config["mount_service_account_token"] is True
    assert written("--spark", "--executor-image-name", "e:1")["env"]["GP_SPARK_INIT_MODE"] == "lazy"


def test_spark_spec_in_per_kernel_namespaces_uses_the_kernel_role() -> None:
    spec = written("--spark", "--executor-image-name", "e:1", "--namespace-per-kernel")
    config = spec["metadata"]["kernel_provisioner"]["config"]
    assert "service_account_name" not in config and "mount_service_account_token" not in config
    subclass = written("--spark", "--executor-image-name", "e:1", "--ipykernel-subclass-name", "my.Kernel")
    assert subclass["argv"][-1] == "--IPKernelApp.kernel_class=my.Kernel"


def test_bad_extra_spark_opts_and_service_account_are_one_line_errors() -> None:
    args = ["install", "--dry-run", "--image-name", "k:1", "--spark", "--executor-image-name", "e:1"]
    bad = CliRunner().invoke(k8s_spec.main, [*args, "--extra-spark-opts", "'unclosed"])
    assert bad.exit_code == 2 and "cannot split" in bad.output
    bad = CliRunner().invoke(k8s_spec.main, ["install", "--dry-run", "--image-name", "k:1", "--service-account", "A!"])
    assert bad.exit_code == 2 and "is not a service account name" in bad.output


POD_ENV = {
    "KUBERNETES_SERVICE_HOST": "10.232.0.1",
    "KUBERNETES_SERVICE_PORT": "443",
    "KERNEL_ID": "abc",
    "GP_SPARK_EXECUTOR_IMAGE": "e:1",
    "SPARK_OPTS": "--conf spark.executor.instances=2 --conf spark.app.name=x",
}


def confs(args: list[str]) -> dict[str, str]:
    return dict(args[i + 1].split("=", 1) for i, arg in enumerate(args) if arg == "--conf")


def test_driver_in_a_pod_is_a_k8s_client_mode_driver_owning_its_executors() -> None:
    args = spark_kernel.submit_args(POD_ENV, ("kernel-abc", "kernels", "10.231.0.7"), "/tmp/t.yaml")
    assert args[:2] == ["--master", "k8s://https://10.232.0.1:443"]
    conf = confs(args)
    assert conf["spark.kubernetes.driver.pod.name"] == "kernel-abc"  # Spark sets the executors' ownerReferences
    assert conf["spark.kubernetes.namespace"] == "kernels"
    assert conf["spark.driver.host"] == "10.231.0.7"
    assert conf["spark.kubernetes.container.image"] == "e:1"
    assert conf["spark.kubernetes.executor.podTemplateFile"] == "/tmp/t.yaml"
    # The operator's options come last and win (spark-submit keeps the last --conf of a key).
    assert args[-4:] == shlex.split(POD_ENV["SPARK_OPTS"])


def test_another_master_gets_no_kubernetes_settings() -> None:
    args = spark_kernel.submit_args({**POD_ENV, "GP_SPARK_MASTER": "spark://m:7077"}, ("p", "n", "1.2.3.4"))
    assert args[:2] == ["--master", "spark://m:7077"]
    assert not [key for key in confs(args) if key.startswith("spark.kubernetes.")]


def test_executor_template_keeps_the_secure_defaults() -> None:
    pod = spark_kernel.executor_pod_template(1000, 100)
    assert pod["spec"]["automountServiceAccountToken"] is False
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 1000
    assert pod["spec"]["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_unknown_init_mode_stops_the_kernel_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GP_SPARK_INIT_MODE", "sometimes")
    with pytest.raises(SystemExit, match="is not one of lazy, eager, none"):
        spark_kernel.main([])


def test_executor_entry_script_starts_the_backend_as_spark_asks(tmp_path: Path) -> None:
    entry = tmp_path / "entry"
    entry.write_text(EXECUTOR_ENTRY_TEXT)
    java = tmp_path / "bin" / "java"
    java.parent.mkdir()
    java.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    java.chmod(0o755)
    (tmp_path / "spark" / "jars").mkdir(parents=True)
    env = {
        "PATH": f"{java.parent}:/usr/bin:/bin", "SPARK_HOME": str(tmp_path / "spark"),
        "SPARK_JAVA_OPT_0": "-Dspark.driver.port=7078", "SPARK_JAVA_OPT_1": "-Dx=a b",
        "SPARK_EXECUTOR_MEMORY": "512m", "SPARK_DRIVER_URL": "spark://CoarseGrainedScheduler@10.0.0.1:7078",
        "SPARK_EXECUTOR_ID": "1", "SPARK_EXECUTOR_CORES": "1", "SPARK_APPLICATION_ID": "spark-app",
        "SPARK_EXECUTOR_POD_IP": "10.0.0.2", "SPARK_RESOURCE_PROFILE_ID": "0", "SPARK_EXECUTOR_POD_NAME": "e-1",
    }  # fmt: skip
    run = subprocess.run(["bash", str(entry), "executor"], env=env, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    args = run.stdout.splitlines()
    assert args[:4] == ["-Dspark.driver.port=7078", "-Dx=a b", "-Xms512m", "-Xmx512m"]
    assert args[4:6] == ["-cp", f"{tmp_path}/spark/jars/*"]
    assert args[6] == "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend"
    pairs = dict(zip(args[7::2], args[8::2], strict=True))
    assert pairs == {"--driver-url": env["SPARK_DRIVER_URL"], "--executor-id": "1", "--cores": "1",
                     "--app-id": "spark-app", "--hostname": "10.0.0.2", "--resourceProfileId": "0",
                     "--podName": "e-1"}  # fmt: skip
    other = subprocess.run(["bash", str(entry), "echo", "hi"], env=env, capture_output=True, text=True, timeout=30)
    assert other.stdout == "hi\n"  # any other command runs as given
    assert os.access(entry, os.R_OK)


def test_driver_entry_script_runs_a_client_mode_submit_bound_to_the_pod(tmp_path: Path) -> None:
    # Spark's cluster mode starts the driver container with these arguments (the SparkApplication path).
    entry = tmp_path / "entry"
    entry.write_text(DRIVER_ENTRY_TEXT)
    submit = tmp_path / "spark" / "bin" / "spark-submit"
    submit.parent.mkdir(parents=True)
    submit.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    submit.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "SPARK_HOME": str(tmp_path / "spark"), "SPARK_DRIVER_BIND_ADDRESS": "10.0.0.3"}
    given = ["--properties-file", "/opt/spark/conf/spark.properties", "--class",
             "org.apache.spark.deploy.PythonRunner", "local:///app/main.py", "a b"]  # fmt: skip
    run = subprocess.run(["bash", str(entry), "driver", *given], env=env, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "--conf", "spark.driver.bindAddress=10.0.0.3", "--conf", "spark.executorEnv.SPARK_DRIVER_POD_IP=10.0.0.3",
        "--deploy-mode", "client", *given,
    ]  # fmt: skip
    other = subprocess.run(["bash", str(entry), "echo", "hi"], env=env, capture_output=True, text=True, timeout=30)
    assert other.stdout == "hi\n"  # any other command runs as given
