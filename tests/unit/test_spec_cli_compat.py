"""Every jupyter-*-spec command takes the older package's habits: repeated list flags accumulate, languages in any
case, its flags that still make sense, and a one-line error naming the replacement for those that do not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from gateway_provisioners_cli import docker_spec, k8s_spec, ssh_spec, yarn_spec
from gateway_provisioners_cli.spark import session_argv

# Each CLI with the options it needs to write a spec at all.
CLIS: dict[str, tuple[click.Group, list[str]]] = {
    "ssh": (ssh_spec.main, ["--remote-hosts", "h1"]),
    "k8s": (k8s_spec.main, ["--image-name", "img:1"]),
    "docker": (docker_spec.main, ["--image-name", "img:1"]),
    "yarn": (yarn_spec.main, []),
}


def invoke(cli: str, *args: str) -> click.testing.Result:
    group, needed = CLIS[cli]
    return CliRunner().invoke(group, ["install", "--dry-run", *needed, *args])


def written(cli: str, *args: str) -> dict:
    result = invoke(cli, *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def config_of(spec: dict) -> dict:
    return spec["metadata"]["kernel_provisioner"]["config"]


@pytest.mark.parametrize("cli", CLIS)
def test_repeated_unauthorized_users_deny_every_one(cli: str) -> None:
    # Before: click kept the last value, so this wrote ["bob"] and root could start kernels again.
    spec = written(cli, "--unauthorized-users", "root", "--unauthorized-users", "bob")
    assert config_of(spec)["unauthorized_users"] == ["bob", "root"]


@pytest.mark.parametrize("cli", CLIS)
def test_list_flags_mix_repetition_and_comma_lists(cli: str) -> None:
    spec = written(
        cli, "--authorized-users", "alice,bob", "--authorized-users", "carol",
        "--unauthorized-users", "root, eve", "--unauthorized-users", "mallory",
    )  # fmt: skip
    assert config_of(spec)["authorized_users"] == ["alice", "bob", "carol"]
    assert config_of(spec)["unauthorized_users"] == ["eve", "mallory", "root"]


@pytest.mark.parametrize("cli", CLIS)
def test_root_stays_denied_by_default_and_dropping_it_is_said(cli: str) -> None:
    assert config_of(written(cli))["unauthorized_users"] == ["root"]
    result = invoke(cli, "--unauthorized-users", "bob")
    assert result.exit_code == 0
    assert config_of(json.loads(result.stdout))["unauthorized_users"] == ["bob"]
    assert "root may start this kernel" in result.stderr


@pytest.mark.parametrize("cli", CLIS)
@pytest.mark.parametrize(("given", "language"), [("Python", "python"), ("PYTHON", "python"), ("R", "r"), ("r", "r")])
def test_language_in_any_case(cli: str, given: str, language: str) -> None:
    spec = written(cli, "--language", given)
    assert spec["language"] == language
    assert spec["argv"][0] == ("R" if language == "r" else spec["argv"][0])
    assert ("ipykernel_launcher" in spec["argv"]) is (language == "python")


@pytest.mark.parametrize("cli", CLIS)
def test_scala_runs_apache_toree_under_spark_submit(cli: str) -> None:
    extra = ["--spark-home", "/opt/sp"] if cli == "ssh" else []
    spec = written(cli, "--language", "Scala", *extra)
    argv = spec["argv"]
    assert spec["language"] == "scala" and spec["interrupt_mode"] == "signal"
    assert argv[0].endswith("spark-submit") and argv[argv.index("--class") + 1] == "org.apache.toree.Main"
    assert argv[argv.index("--profile") + 1] == "{connection_file}"
    assert argv[argv.index("--spark-context-initialization-mode") + 1] == "lazy"
    assert argv[argv.index("--master") + 1] == "local[*]"


@pytest.mark.parametrize(
    ("cli", "default_name"),
    [("ssh", "ssh_python"), ("k8s", "k8s_python"), ("docker", "docker_python"), ("yarn", "yarn_python")],
)
def test_kernel_name_defaults_to_the_older_clis_name(cli: str, default_name: str, tmp_path: Path) -> None:
    group, needed = CLIS[cli]
    result = CliRunner().invoke(group, ["install", "--prefix", str(tmp_path), *needed, "--language", "python"])
    assert result.exit_code == 0, result.output
    spec = json.loads((tmp_path / "share" / "jupyter" / "kernels" / default_name / "kernel.json").read_text())
    assert spec["language"] == "python"


@pytest.mark.parametrize("cli", CLIS)
def test_ipykernel_subclass_name_is_honoured(cli: str) -> None:
    spec = written(cli, "--ipykernel-subclass-name", "mypkg.kernels.MyKernel")
    assert spec["argv"][-1] == "--IPKernelApp.kernel_class=mypkg.kernels.MyKernel"
    default = written(cli, "--ipykernel-subclass-name", "ipykernel.ipkernel.IPythonKernel")
    assert not any("kernel_class" in part for part in default["argv"])
    assert "not 'module.Class'" in invoke(cli, "--ipykernel-subclass-name", "not a class").output
    refused = invoke(cli, "--language", "r", "--ipykernel-subclass-name", "mypkg.K")
    assert refused.exit_code == 2 and "for Python kernels" in refused.output


RETIRED = [
    (["--debug"], "--debug is gone: these commands do not log"),
    (["--log-level", "DEBUG"], "--log-level is gone: these commands do not log"),
    (["--show-config"], "--show-config is gone: --dry-run prints"),
    (["--show-config-json"], "--show-config-json is gone: --dry-run prints"),
    (["--generate-config"], "--generate-config is gone: settings belong to the server's Jupyter config"),
    (["--config", "x.py"], "--config is gone: settings belong to the server's Jupyter config"),
]


@pytest.mark.parametrize("cli", CLIS)
@pytest.mark.parametrize(("args", "message"), RETIRED)
def test_retired_app_options_say_what_replaces_them(cli: str, args: list[str], message: str) -> None:
    result = invoke(cli, *args)
    assert result.exit_code == 2
    assert message in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("Error")]) == 1


NOT_YET = [
    ("ssh", ["--spark-master", "yarn"], "--spark-master need --spark (or --language scala)"),
    ("ssh", ["--spark-init-mode", "lazy"], "--spark-init-mode need --spark"),
    ("ssh", ["--spark", "--extra-spark-opts", "--conf 'a"], "cannot split"),
    ("ssh", ["--language", "scala"], "--language scala needs --spark-home"),
    ("ssh", ["--spark", "--language", "r", "--spark-init-mode", "lazy"], "a SparkR session at start is not offered"),
    ("docker", ["--language", "r", "--interrupt-mode", "message"], "does not answer interrupt_request"),
    ("docker", ["--language", "scala", "--interrupt-mode", "message"], "does not answer interrupt_request"),
    ("k8s", ["--executor-image-name", "x:1"], "--executor-image-name needs --spark"),
    ("k8s", ["--spark"], "--spark needs --executor-image-name"),
    ("k8s", ["--spark-init-mode", "eager"], "--spark-init-mode needs --spark"),
    ("k8s", ["--spark", "--executor-image-name", "x:1", "--language", "r"], "--spark: not yet for 'r' kernels"),
    ("k8s", ["--spark-home", "/opt/spark"], "--spark-home is gone: Spark comes from the kernel image's pyspark"),
    ("k8s", ["--crd"], "--crd needs --spark"),
    ("k8s", ["--tensorflow"], "--tensorflow is gone: it never changed the kernel spec"),
    ("yarn", ["--spark", "--language", "r", "--spark-init-mode", "eager"], "a SparkR session at start is not offered"),
    ("yarn", ["--spark", "--language", "scala"], "leave out --spark / --dask"),
    ("yarn", ["--spark-init-mode", "lazy"], "--spark-init-mode lazy needs --spark"),
    ("yarn", ["--extra-dask-opts", "--worker-count 2"], "--extra-dask-opts needs --dask"),
]


@pytest.mark.parametrize(("cli", "args", "message"), NOT_YET)
def test_older_flags_not_honoured_yet_fail_in_one_line(cli: str, args: list[str], message: str) -> None:
    result = invoke(cli, *args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_yarn_spark_init_mode_and_extra_dask_opts_are_honoured() -> None:
    assert written("yarn", "--spark", "--spark-init-mode", "Eager")["argv"][-1] == yarn_spec.SPARK_SESSION
    lazy = written("yarn", "--spark", "--spark-init-mode", "lazy")["argv"][-1]
    # cluster mode: the AM waits for the driver's SparkContext, so a lazy kernel makes it in the background at once
    assert lazy == session_argv("lazy", background=True)[0] and lazy != yarn_spec.SPARK_SESSION
    assert yarn_spec.SPARK_SESSION not in written("yarn", "--spark", "--spark-init-mode", "none")["argv"]
    assert written("yarn", "--spark-init-mode", "none")["argv"][-1] == "{connection_file}"
    dask = config_of(written("yarn", "--dask", "--extra-dask-opts", "--worker-count 2 --deploy-mode remote"))
    assert dask["submit_command"] == ["dask-yarn", "submit"]
    assert dask["spark_opts"] == "--worker-count 2 --deploy-mode remote"


def test_installed_command_accumulates_as_a_subprocess(tmp_path: Path) -> None:
    """The console script (not only the click object) writes both users; the spec loads in jupyter_client."""
    command = Path(sys.executable).parent / "jupyter-ssh-spec"
    run = subprocess.run(
        [str(command), "install", "--prefix", str(tmp_path), "--remote-hosts", "h1", "--language", "Python",
         "--unauthorized-users", "root", "--unauthorized-users", "bob"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    from jupyter_client.kernelspec import KernelSpecManager

    manager = KernelSpecManager(kernel_dirs=[str(tmp_path / "share" / "jupyter" / "kernels")])
    spec = manager.get_kernel_spec("ssh_python")
    assert spec.metadata["kernel_provisioner"]["config"]["unauthorized_users"] == ["bob", "root"]


@pytest.mark.parametrize("cli", CLIS)
def test_version_option_as_in_the_older_clis(cli: str) -> None:
    from importlib.metadata import version

    result = CliRunner().invoke(CLIS[cli][0], ["--version"])
    assert result.exit_code == 0 and version("gateway_provisioners") in result.output
