"""Spark in kernel specs: the session code of each init mode, the client-mode environment, Toree's argv, and the image
recipes per language (no Spark runs here: tests/integration/test_languages_local.py and the SSH/Docker tests do)."""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest
from click.testing import CliRunner

from gateway_provisioners_cli import image_bootstrap, ssh_spec
from gateway_provisioners_cli.spark import SparkSpec, session_argv, toree_argv


@pytest.mark.parametrize("mode", ["lazy", "eager"])
def test_session_code_is_valid_python_with_no_placeholder(mode: str) -> None:
    (item,) = session_argv(mode)
    name, _, code = item.partition("=")
    assert name == "--IPKernelApp.exec_lines"
    compile(code, "exec_lines", "exec")
    assert "{" not in code  # the spec writer refuses placeholders; the code needs no braces
    assert ("_GpLazySpark" in code) is (mode == "lazy")
    assert code.rstrip().endswith("_gp_spark_session()") is (mode == "eager")


def test_no_session_adds_nothing() -> None:
    assert session_argv("none") == []


def test_client_mode_environment_carries_master_and_options() -> None:
    spark = SparkSpec(home="/opt/sp", master="yarn", opts="--conf spark.x='a b'", init_mode="eager")
    env = spark.python_env("/venv/bin/python")
    assert shlex.split(env["PYSPARK_SUBMIT_ARGS"]) == ["--master", "yarn", "--conf", "spark.x=a b", "pyspark-shell"]
    assert env["SPARK_HOME"] == "/opt/sp" and env["PYSPARK_PYTHON"] == "/venv/bin/python"
    assert "SPARK_HOME" not in SparkSpec().python_env("python3")  # pyspark finds its own


def test_toree_argv_options_come_before_the_class_and_mode_after() -> None:
    argv = toree_argv(SparkSpec(home="/s", master="local[2]", opts="--conf a=b", init_mode="none"), "/t.jar", "USR2")
    assert argv[:2] == ["/s/bin/spark-submit", "--name"]
    assert argv.index("--conf") < argv.index("--class") < argv.index("/t.jar") < argv.index("--profile")
    assert argv[-2:] == ["--alternate-sigint", "USR2"]
    assert argv[argv.index("--spark-context-initialization-mode") + 1] == "none"


def test_ssh_spec_spark_client_mode_writes_env_and_name() -> None:
    result = CliRunner().invoke(ssh_spec.main, ["install", "--dry-run", "--remote-hosts", "h1", "--spark",
                                                "--spark-master", "yarn", "--spark-init-mode", "NONE"])  # fmt: skip
    assert result.exit_code == 0, result.output
    spec = json.loads(result.stdout)
    assert not any("exec_lines" in part for part in spec["argv"])
    assert shlex.split(spec["env"]["PYSPARK_SUBMIT_ARGS"])[:2] == ["--master", "yarn"]
    assert spec["display_name"].startswith("Python with Spark on h1")


def test_interrupt_mode_message_is_written_for_python() -> None:
    result = CliRunner().invoke(ssh_spec.main, ["install", "--dry-run", "--remote-hosts", "h1",
                                                "--interrupt-mode", "Message"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["interrupt_mode"] == "message"


@pytest.mark.parametrize("name", list(image_bootstrap.RECIPES))
def test_every_recipe_script_is_valid_shell(name: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "install.sh"
    script.write_text(image_bootstrap.install_script(image_bootstrap.RECIPES[name]))
    assert subprocess.run(["sh", "-n", str(script)], capture_output=True).returncode == 0


def test_recipes_by_language_and_spark() -> None:
    assert image_bootstrap.recipe_for("python").name == "python"
    assert image_bootstrap.recipe_for("python", spark=True).name == "python-spark"
    assert image_bootstrap.recipe_for("scala", spark=True).name == "scala"
    with pytest.raises(Exception, match="no image recipe"):
        image_bootstrap.recipe_for("r", spark=True)
    scala = image_bootstrap.dockerfile("base:1", image_bootstrap.RECIPES["scala"], False, "h")
    assert "SPARK_HOME=/opt/spark" in scala and "install-scala.sh" in scala
    assert "SPARK_HOME" not in image_bootstrap.dockerfile("base:1", image_bootstrap.RECIPES["r"], False, "h")


def test_a_new_recipe_changes_the_inputs_hash() -> None:
    python = image_bootstrap.RECIPES["python"]
    other = image_bootstrap.Recipe("executor", python.packages, python.check, spark=True)
    assert image_bootstrap.inputs_hash("id", python, None) != image_bootstrap.inputs_hash("id", other, None)
