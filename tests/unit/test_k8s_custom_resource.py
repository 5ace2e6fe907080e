"""Custom-resource kernels without a cluster: the SparkApplication the shipped template makes, the checks of the
provisioners' settings and of the CLI, and how a resource's status becomes a failed launch."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("jinja2", reason="the k8s extra (jinja2) is not installed")
pytest.importorskip("yaml", reason="the k8s extra (pyyaml) is not installed")

from click.testing import CliRunner

from gateway_provisioners.adapters.kubernetes import PodSettings
from gateway_provisioners.adapters.kubernetes.custom_resource import (
    CustomResourceBackend,
    ResourceKind,
    ResourceSettings,
    field_at,
)
from gateway_provisioners.adapters.kubernetes.hub import KubeHub
from gateway_provisioners.core.errors import ConfigurationError
from gateway_provisioners.provisioners.custom_resource import CustomResourceProvisioner, SparkOperatorProvisioner
from gateway_provisioners_cli import k8s_spec

from .test_k8s_template import HOSTILE, spec

KERNEL_ID = "4d2c7f0e-1111-2222-3333-444455556666"


def spark_backend(**config: Any) -> CustomResourceBackend:
    provisioner = SparkOperatorProvisioner(kernel_id=KERNEL_ID, **config)
    return CustomResourceBackend(KubeHub(client=None), provisioner.pod_settings(), provisioner.resource_settings())  # type: ignore[arg-type]


def test_the_spark_application_makes_the_kernel_pod_as_driver() -> None:
    backend = spark_backend(
        image_name="kernel:1", executor_image_name="exec:1", namespace="kernels",
        service_account_name="spark-kernel", spark_conf={"spark.executor.memory": "512m"},
    )  # fmt: skip
    plan, app, pod_name = backend.plan_resource(spec())
    assert (app["apiVersion"], app["kind"]) == ("sparkoperator.k8s.io/v1beta2", "SparkApplication")
    assert app["metadata"]["name"] == pod_name == f"kernel-{KERNEL_ID}"
    assert app["metadata"]["namespace"] == plan.namespace == "kernels"
    s = app["spec"]
    assert (s["type"], s["mode"], s["image"], s["executor"]["image"]) == ("Python", "cluster", "kernel:1", "exec:1")
    assert s["sparkConf"] == {"spark.executor.memory": "512m"}
    # The driver pod is the kernel's: its name and labels are what the shared pod watch follows.
    driver = s["driver"]
    assert driver["podName"] == pod_name
    assert driver["labels"]["kernel_id"] == KERNEL_ID
    assert driver["labels"]["app.kubernetes.io/managed-by"] == "gateway-provisioners"
    assert driver["serviceAccount"] == "spark-kernel"
    # The agent is the main application; its parameters and token come from the launch Secret, never the spec.
    assert s["mainApplicationFile"] == "local:///usr/local/share/gateway-provisioners/gp_agent.py"
    assert s["arguments"][:2] == ["--params", "/var/run/secrets/gateway-provisioners/params.json"]
    assert plan.params["kernel_id"] == KERNEL_ID and "token" not in plan.params
    assert "key" not in json.dumps(s["arguments"])
    template = driver["template"]["spec"]
    volumes = {v["name"]: v for v in template["volumes"]}
    assert volumes["gp-launch"]["secret"]["secretName"] == plan.secret_name
    container = template["containers"][0]
    assert container["command"] == ["/usr/local/bin/gp-spark-driver"]
    assert {m["name"] for m in container["volumeMounts"]} == {"gp-launch"}
    # Non-root, no privilege, for the driver and the executors; executors get no API token.
    for pod_spec in (template, s["executor"]["template"]["spec"]):
        assert pod_spec["securityContext"]["runAsNonRoot"] is True
        assert pod_spec["securityContext"]["runAsUser"] == 1000
        assert pod_spec["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert pod_spec["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False
    assert s["executor"]["template"]["spec"]["automountServiceAccountToken"] is False


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_stay_values_in_the_resource(value: str) -> None:
    launch = spec(KERNEL_EXTRA=value)
    launch.username = launch.kernel_name = value
    plan, app, _ = spark_backend().plan_resource(launch)
    _, reference, _ = spark_backend().plan_resource(spec(KERNEL_EXTRA="plain"))
    assert set(app["spec"]) == set(reference["spec"])
    assert set(app["spec"]["driver"]) == set(reference["spec"]["driver"])
    assert plan.params["env"]["KERNEL_EXTRA"] == value


def test_a_template_of_another_kind_is_refused(tmp_path: Any) -> None:
    template = tmp_path / "cr.yaml.j2"
    template.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: {{ resource_name }}}\n")
    provisioner = CustomResourceProvisioner(
        kernel_id=KERNEL_ID, resource_group="example.org", resource_version="v1", resource_plural="kernels",
        resource_kind="Kernel", resource_template=str(template),
    )  # fmt: skip
    backend = CustomResourceBackend(KubeHub(client=None), PodSettings(), provisioner.resource_settings())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"must render apiVersion: example\.org/v1 and kind: Kernel"):
        backend.plan_resource(spec())


def test_the_generic_provisioner_says_what_it_lacks() -> None:
    with pytest.raises(ConfigurationError, match=r"needs resource_group, resource_version.*resource_template"):
        CustomResourceProvisioner(kernel_id=KERNEL_ID).resource_settings()


def test_a_per_kernel_namespace_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="shared namespace"):
        spark_backend(shared_namespace=False).plan_resource(spec())


def test_field_at_follows_a_dotted_path() -> None:
    obj = {"status": {"applicationState": {"state": "FAILED", "errorMessage": "boom"}}}
    assert field_at(obj, "status.applicationState.state") == "FAILED"
    assert field_at(obj, "status.driverInfo.podName") is None
    assert field_at(obj, "") is None
    assert field_at({"status": "x"}, "status.applicationState") is None


def test_the_cli_writes_a_spark_operator_spec() -> None:
    result = CliRunner().invoke(k8s_spec.main, [
        "install", "--dry-run", "--spark", "--crd", "--image-name", "kernel:1", "--executor-image-name", "exec:1",
        "--spark-init-mode", "eager", "--extra-spark-opts", "--conf spark.executor.memory=512m --conf=spark.x=1",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    kernel = json.loads(result.stdout)
    provisioner = kernel["metadata"]["kernel_provisioner"]
    assert provisioner["provisioner_name"] == "spark-operator-provisioner"
    config = provisioner["config"]
    assert config["executor_image_name"] == "exec:1"
    assert config["spark_conf"] == {"spark.executor.memory": "512m", "spark.x": "1"}
    assert config["service_account_name"] == "spark-kernel"
    assert kernel["env"] == {"GP_SPARK_INIT_MODE": "eager"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--crd"], "--crd needs --spark"),
        (["--spark", "--crd", "--executor-image-name", "e", "--extra-spark-opts", "--jars x.jar"],
         "only '--conf key=value'"),
        (["--spark", "--crd", "--executor-image-name", "e", "--namespace-per-kernel"], "shared namespace"),
    ],
)  # fmt: skip
def test_the_cli_refuses_what_a_spark_application_cannot_hold(args: list[str], message: str) -> None:
    result = CliRunner().invoke(k8s_spec.main, ["install", "--dry-run", "--image-name", "kernel:1", *args])
    assert result.exit_code != 0
    assert message in result.output


def test_resource_kind_paths() -> None:
    kind = ResourceKind("sparkoperator.k8s.io", "v1beta2", "sparkapplications", "SparkApplication")
    assert kind.api_version == "sparkoperator.k8s.io/v1beta2"
    assert kind.path == ("sparkoperator.k8s.io", "v1beta2", "sparkapplications")
    assert ResourceSettings(kind, "").failed_states == ()


def test_reap_takes_resources_as_plural_group_version() -> None:
    assert k8s_spec._resource("sparkapplications.sparkoperator.k8s.io/v1beta2") == (
        "sparkoperator.k8s.io", "v1beta2", "sparkapplications"
    )  # fmt: skip
    result = CliRunner().invoke(k8s_spec.main, ["reap", "--keep", "x", "--resource", "sparkapplications"])
    assert result.exit_code == 2 and "is not PLURAL.GROUP/VERSION" in result.output


def test_an_operators_message_is_summed_up_in_one_line() -> None:
    from gateway_provisioners.adapters.kubernetes.custom_resource import summary

    stderr = (
        "failed to submit spark application: failed to run spark-submit: WARNING: something\n"
        "WARN NativeCodeLoader: Unable to load native-hadoop library\n"
        'Exception in thread "main" org.apache.spark.SparkException: Driver memory must be a positive number\n'
        "\tat org.apache.spark.deploy.SparkSubmitArguments.error(SparkSubmitArguments.scala:650)\n"
    )
    assert summary(stderr) == (
        "failed to submit spark application: failed to run spark-submit: WARNING: something "
        '(Exception in thread "main" org.apache.spark.SparkException: Driver memory must be a positive number)'
    )
    assert summary("driver container failed with ExitCode: 2, Reason: Error") == (
        "driver container failed with ExitCode: 2, Reason: Error"
    )
    assert summary("") == ""


def test_callback_mode_is_refused_in_one_line() -> None:
    with pytest.raises(Exception, match="connection_mode 'callback' is not one of assigned"):
        SparkOperatorProvisioner(kernel_id=KERNEL_ID, connection_mode="callback")
