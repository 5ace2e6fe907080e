"""Specs of the older shape: refused at launch with one line naming jupyter-gp-migrate; Enterprise Gateway's specs
convert like the older package's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from jupyter_client.manager import AsyncKernelManager

from gateway_provisioners.core.errors import ConfigurationError
from gateway_provisioners.provisioners.legacy import legacy_shape
from gateway_provisioners_cli import migrate
from gateway_provisioners_cli.spark import session_argv
from tests.conftest import IPYKERNEL_ARGV, write_kernel_spec

OLDER_ARGV = ["python", "/specs/k/scripts/launch_ipykernel.py", "--kernel-id", "{kernel_id}", "--port-range",
              "{port_range}", "--response-address", "{response_address}", "--public-key", "{public_key}"]  # fmt: skip
# Enterprise Gateway's python_distributed spec, in the shape its docs show.
EG_SPEC = {
    "display_name": "Python on remote hosts (EG)",
    "language": "python",
    "metadata": {
        "process_proxy": {
            "class_name": "enterprise_gateway.services.processproxies.distributed.DistributedProcessProxy",
            "config": {"remote_hosts": "host1,host2", "authorized_users": "alice,bob"},
        },
        "debugger": True,
    },
    "env": {},
    "argv": ["python", "/usr/local/share/jupyter/kernels/python_distributed/scripts/launch_ipykernel.py",
             "--RemoteProcessProxy.kernel-id", "{kernel_id}", "--RemoteProcessProxy.response-address",
             "{response_address}", "--RemoteProcessProxy.public-key", "{public_key}",
             "--RemoteProcessProxy.port-range", "{port_range}",
             "--RemoteProcessProxy.spark-context-initialization-mode", "none"],
}  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (OLDER_ARGV, "runs the older launcher launch_ipykernel.py"),
        (["/k/bin/run.sh", "--kernel-id", "{kernel_id}"], "passes {kernel_id}"),
        (["Rscript", "x.R", "--response-address", "{response_address}"], "passes {response_address}"),
        (["python", "-m", "x", "--RemoteProcessProxy.kernel-id=1"], "passes --RemoteProcessProxy.kernel-id"),
        (IPYKERNEL_ARGV, None),
        (["/opt/run.sh", "-f", "{connection_file}"], None),
    ],
)
def test_legacy_shape(argv: list[str], reason: str | None) -> None:
    found = legacy_shape(argv)
    assert (found is None) if reason is None else (reason in str(found))


@pytest.mark.parametrize(
    ("provisioner", "config"),
    [
        ("local-agent-provisioner", {}),
        ("distributed-provisioner", {"remote_hosts": ["h1"]}),
        # A setting only the older package had: the reason given is still the spec's shape, with the converter.
        ("kubernetes-provisioner", {"image_name": "reg/k:1", "executor_image_name": "reg/k:1"}),
        # The older package's spark-operator specs name a provisioner that exists again: same one line.
        ("spark-operator-provisioner", {"image_name": "reg/k:1", "executor_image_name": "reg/k:1"}),
    ],
)
async def test_older_spec_is_refused_at_launch_naming_the_converter(
    jupyter_path: Path, provisioner: str, config: dict
) -> None:
    folder = write_kernel_spec(jupyter_path, "older", argv=OLDER_ARGV, provisioner=provisioner, config=config)
    km = AsyncKernelManager(kernel_name="older")
    with pytest.raises(ConfigurationError) as raised:
        await km.start_kernel()
    message = str(raised.value)
    assert "\n" not in message
    assert f"convert it with 'jupyter-gp-migrate {folder}'" in message
    assert "runs the older launcher launch_ipykernel.py" in message
    assert not km.has_kernel  # nothing was started


def test_enterprise_gateway_spec_converts(tmp_path: Path) -> None:
    folder = tmp_path / "python_distributed"
    (folder / "scripts").mkdir(parents=True)
    (folder / "kernel.json").write_text(json.dumps(EG_SPEC))
    result = CliRunner().invoke(migrate.main, [str(folder)])
    assert result.exit_code == 0, result.output
    spec = json.loads((folder / "kernel.json").read_text())
    assert spec["argv"] == ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    assert "process_proxy" not in spec["metadata"] and spec["metadata"]["debugger"] is True
    assert spec["metadata"]["kernel_provisioner"] == {
        "provisioner_name": "distributed-provisioner",
        "config": {"remote_hosts": ["host1", "host2"], "authorized_users": ["alice", "bob"]},
    }
    assert json.loads((folder / "pre-migrate" / "kernel.json").read_text()) == EG_SPEC


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"class_name": "enterprise_gateway.services.processproxies.conductor.ConductorClusterProcessProxy"},
         "IBM Spectrum Conductor is not supported"),
        ({"config": {"remote_hosts": "h1", "some_unknown": 1}}, "setting 'some_unknown' is unknown"),
    ],
)  # fmt: skip
def test_unconvertible_enterprise_gateway_specs_are_refused_untouched(
    tmp_path: Path, change: dict, reason: str
) -> None:
    spec = json.loads(json.dumps(EG_SPEC))
    spec["metadata"]["process_proxy"].update(change)
    folder = tmp_path / "eg"
    folder.mkdir()
    text = json.dumps(spec)
    (folder / "kernel.json").write_text(text)
    result = CliRunner().invoke(migrate.main, [str(folder)])
    assert result.exit_code == 1
    assert reason in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert (folder / "kernel.json").read_text() == text and not (folder / "pre-migrate").exists()


def test_a_dask_session_the_older_launcher_made_on_ssh_hosts_is_refused(tmp_path: Path) -> None:
    spec = json.loads(json.dumps(EG_SPEC))
    spec["argv"][-1] = "none"
    spec["argv"] += ["--RemoteProcessProxy.cluster-type", "dask"]
    folder = tmp_path / "eg"
    folder.mkdir()
    (folder / "kernel.json").write_text(json.dumps(spec))
    result = CliRunner().invoke(migrate.main, [str(folder)])
    assert result.exit_code == 1 and "not yet: Dask kernels on distributed-provisioner" in result.stderr


@pytest.mark.parametrize("mode", ["lazy", "eager"])
def test_a_spark_session_the_older_launcher_made_on_ssh_hosts_becomes_client_mode(tmp_path: Path, mode: str) -> None:
    spec = json.loads(json.dumps(EG_SPEC))
    spec["argv"][-1] = mode  # the launcher's default cluster type is spark: a Spark session, the kernel the driver
    spec["env"] = {"SPARK_HOME": "/opt/spark", "SPARK_OPTS": "--master yarn --deploy-mode client --conf a=b"}
    folder = tmp_path / "eg"
    folder.mkdir()
    (folder / "kernel.json").write_text(json.dumps(spec))
    result = CliRunner().invoke(migrate.main, [str(folder)])
    assert result.exit_code == 0, result.output
    new = json.loads((folder / "kernel.json").read_text())
    assert new["argv"][-1] == session_argv(mode)[0]
    assert new["env"]["PYSPARK_SUBMIT_ARGS"] == "--master yarn --conf a=b pyspark-shell"
    assert "SPARK_OPTS" not in new["env"] and new["env"]["SPARK_HOME"] == "/opt/spark"


# An Enterprise Gateway-style pod template (its quoting filter, its app label) with two operator additions.
EG_TEMPLATE = """\
apiVersion: v1
kind: Pod
metadata:
  name: {{ kernel_pod_name | yaml_safe }}
  namespace: {{ kernel_namespace | yaml_safe }}
  labels:
    kernel_id: {{ kernel_id | yaml_safe }}
    app: enterprise-gateway
    component: kernel
    team: data
spec:
  restartPolicy: Never
  serviceAccountName: {{ kernel_service_account_name | yaml_safe }}
  containers:
  - image: {{ kernel_image | yaml_safe }}
    name: {{ kernel_pod_name | yaml_safe }}
  {% if kernel_cpus is defined %}
    resources: {requests: {cpu: "{{ kernel_cpus }}"}}
  {% endif %}
  tolerations:
  - key: gpu
    operator: Exists
"""


def test_enterprise_gateway_pod_template_additions() -> None:
    from gateway_provisioners_cli.legacy_pod_template import extra_pod_config

    assert extra_pod_config(EG_TEMPLATE) == {
        "metadata": {"labels": {"team": "data"}},
        "spec": {"tolerations": [{"key": "gpu", "operator": "Exists"}]},
    }


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        (EG_TEMPLATE + "---\napiVersion: v1\nkind: PersistentVolumeClaim\n", "not one Pod"),
        (EG_TEMPLATE.replace("team: data", "team: {{ kernel_team }}"), "per-kernel values (kernel_team)"),
        (EG_TEMPLATE.replace("name: {{ kernel_pod_name | yaml_safe }}\n  {%", "name: kernel\n  {%"),
         "no container named {{ kernel_pod_name }}"),
        ("kind: Pod\n{% if %}", "cannot be rendered"),
    ],
)  # fmt: skip
def test_pod_templates_that_are_not_mechanical_are_refused(template: str, reason: str) -> None:
    from gateway_provisioners_cli.legacy_pod_template import extra_pod_config

    with pytest.raises(migrate.Refused) as refused:
        extra_pod_config(template)
    assert reason in str(refused.value) and "\n" not in str(refused.value)


def _toree_spec(tmp_path: Path, proxy: str) -> Path:
    """An Enterprise Gateway Apache Toree spec (bin/run.sh, lib/toree-assembly jar) of the given process proxy."""
    folder = tmp_path / "toree"
    (folder / "lib").mkdir(parents=True)
    (folder / "lib" / "toree-assembly-0.5.0-incubating.jar").write_bytes(b"")
    spec = {
        "display_name": "Scala (Toree)", "language": "scala",
        "metadata": {"process_proxy": {"class_name": f"enterprise_gateway.services.processproxies.{proxy}",
                                       "config": {"remote_hosts": "h1"} if "Distributed" in proxy else {}}},
        "env": {"SPARK_HOME": "/opt/spark", "__TOREE_SPARK_OPTS__": "--master yarn --deploy-mode client",
                "__TOREE_OPTS__": "", "DEFAULT_INTERPRETER": "Scala"},
        "argv": [str(folder / "bin" / "run.sh"), "--RemoteProcessProxy.kernel-id", "{kernel_id}",
                 "--RemoteProcessProxy.response-address", "{response_address}",
                 "--RemoteProcessProxy.public-key", "{public_key}", "--RemoteProcessProxy.port-range", "{port_range}",
                 "--RemoteProcessProxy.spark-context-initialization-mode", "eager"],
    }  # fmt: skip
    (folder / "kernel.json").write_text(json.dumps(spec))
    return folder


def test_an_older_toree_spec_on_ssh_hosts_becomes_a_toree_argv(tmp_path: Path) -> None:
    folder = _toree_spec(tmp_path, "distributed.DistributedProcessProxy")
    result = CliRunner().invoke(migrate.main, [str(folder)])
    assert result.exit_code == 0, result.output
    argv = json.loads((folder / "kernel.json").read_text())["argv"]
    assert argv[0] == "/opt/spark/bin/spark-submit" and argv[argv.index("--master") + 1] == "yarn"
    jar = folder / "pre-migrate" / "lib" / "toree-assembly-0.5.0-incubating.jar"
    assert argv[argv.index("--class") + 2] == str(jar) and jar.is_file()
    assert argv[-2:] == ["--spark-context-initialization-mode", "eager"]


def test_an_older_toree_spec_in_yarn_cluster_mode_is_refused(tmp_path: Path) -> None:
    folder = _toree_spec(tmp_path, "yarn.YarnClusterProcessProxy")
    result = CliRunner().invoke(migrate.main, [str(folder)])
    assert result.exit_code == 1 and "jupyter-yarn-spec install --language scala" in result.stderr
