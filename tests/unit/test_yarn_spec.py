"""jupyter-yarn-spec: every combination writes a complete kernel.json whose settings take effect."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway_provisioners.provisioners.yarn import YarnProvisioner
from gateway_provisioners_cli.kernelspec import unfilled
from gateway_provisioners_cli.yarn_spec import SPARK_SESSION, main

FLAGS = {
    "spark": ["--spark"],
    "dask": ["--dask"],
    "spark_home": ["--spark-home", "/opt/spark"],
    "extra": ["--extra-spark-opts", "--num-executors 2 --conf 'spark.x=a b'"],
    "python_root": ["--python-root", "/opt/conda"],
    "queue": ["--queue", "analytics"],
    "impersonation": ["--impersonation-enabled"],
    "alt": ["--alt-yarn-endpoint", "http://rm2:8088"],
    "kerberos": ["--yarn-endpoint-security-enabled"],
}


def dry_run(*args: str) -> dict:
    result = CliRunner().invoke(main, ["install", "--kernel-name", "k", "--dry-run", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.parametrize("language", ["python", "r"])
def test_every_combination_is_complete(language: str) -> None:
    names = list(FLAGS)
    for size in range(len(names) + 1):
        for combo in itertools.combinations(names, size):
            if ("extra" in combo and "spark" not in combo) or ("spark" in combo and "dask" in combo):
                continue
            args = ["--language", language, "--yarn-endpoint", "http://rm1:8088"]
            for name in combo:
                args += FLAGS[name]
            spec = dry_run(*args)
            assert unfilled(spec) == [], (combo, unfilled(spec))
            config = spec["metadata"]["kernel_provisioner"]["config"]
            assert spec["metadata"]["kernel_provisioner"]["provisioner_name"] == "yarn-provisioner"
            assert config["impersonation_enabled"] is ("impersonation" in combo)
            assert ("submit_command" in config) is ("spark" in combo or "dask" in combo)
            if "dask" in combo:
                assert config["submit_command"] == ["dask-yarn", "submit"]
            session = any(part.startswith("--IPKernelApp.exec_lines=") for part in spec["argv"])
            assert session is ("spark" in combo and language == "python")


def test_settings_take_effect_in_the_provisioner() -> None:
    spec = dry_run("--yarn-endpoint", "http://rm1:8088", "--alt-yarn-endpoint", "http://rm2:8088", "--spark",
                   "--spark-home", "/opt/spark", "--impersonation-enabled", "--queue", "q1")  # fmt: skip
    provisioner = YarnProvisioner(**spec["metadata"]["kernel_provisioner"]["config"])
    assert provisioner.impersonation_enabled is True
    assert provisioner.endpoints() == ("http://rm1:8088", "http://rm2:8088")
    assert provisioner.submit_command == ["/opt/spark/bin/spark-submit"] and provisioner.queue == "q1"


def test_dask_settings_take_effect_in_the_provisioner() -> None:
    spec = dry_run("--yarn-endpoint", "http://rm1:8088", "--dask", "--python-root", "/opt/conda", "--queue", "q2",
                   "--impersonation-enabled")  # fmt: skip
    provisioner = YarnProvisioner(**spec["metadata"]["kernel_provisioner"]["config"])
    assert provisioner.submit_command == ["dask-yarn", "submit"] and provisioner.queue == "q2"
    assert provisioner.remote_python == "/opt/conda/bin/python3" and provisioner.impersonation_enabled is True
    assert spec["display_name"] == "Python on Dask (cluster)" and SPARK_SESSION not in spec["argv"]


def test_spark_and_dask_exclude_each_other() -> None:
    result = CliRunner().invoke(main, ["install", "--kernel-name", "k", "--dry-run", "--spark", "--dask"])
    assert result.exit_code != 0 and "--spark and --dask exclude each other" in result.output


def test_extra_spark_opts_need_spark() -> None:
    result = CliRunner().invoke(main, ["install", "--kernel-name", "k", "--dry-run", "--extra-spark-opts", "-x"])
    assert result.exit_code != 0 and "--extra-spark-opts needs --spark" in result.output


def test_env_booleans_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GP_IMPERSONATION_ENABLED", "false")
    monkeypatch.setenv("GP_YARN_ENDPOINT_SECURITY_ENABLED", "False")
    provisioner = YarnProvisioner()
    assert provisioner.impersonation_enabled is False and provisioner.yarn_endpoint_security_enabled is False
    monkeypatch.setenv("GP_IMPERSONATION_ENABLED", "yes")
    assert YarnProvisioner().impersonation_enabled is True


def test_rest_body_runs_the_agent_under_the_java_application_master() -> None:
    import base64

    from gateway_provisioners.adapters.yarn.submit import APPLICATION_MASTER, Application, rest_body

    app = Application(kernel_id="k", name="k", tags=["t"], python="/opt/py/bin/python3", params={"token": "s"})
    body = rest_body(app, "application_1_0001", am_classpath="/etc/hadoop:/opt/hadoop/*")
    env = {e["key"]: e["value"] for e in body["am-container-spec"]["environment"]["entry"]}
    command = body["am-container-spec"]["commands"]["command"]
    assert base64.b64decode(env["GP_YARN_AM"]) == APPLICATION_MASTER.read_bytes()
    assert env["CLASSPATH"] == "/etc/hadoop:/opt/hadoop/*"  # in the environment: a command line would be globbed
    assert "{{JAVA_HOME}}/bin/java" in command and "GpYarnAm.java /opt/py/bin/python3 gp_yarn_bootstrap.py" in command
    assert "/opt/hadoop/*" not in command and "token" not in command

    plain = rest_body(app, "application_1_0001", application_master="agent")
    env = {e["key"]: e["value"] for e in plain["am-container-spec"]["environment"]["entry"]}
    assert "GP_YARN_AM" not in env and "CLASSPATH" not in env
    assert "exec /opt/py/bin/python3 gp_yarn_bootstrap.py" in plain["am-container-spec"]["commands"]["command"]


def test_endpoints_come_from_yarn_site_when_the_client_is_made(tmp_path: Path) -> None:
    from gateway_provisioners.adapters.yarn.client import endpoints_from_yarn_site

    def site(**props: str) -> dict[str, str]:
        body = "".join(f"<property><name>{k}</name><value>{v}</value></property>" for k, v in props.items())
        (tmp_path / "yarn-site.xml").write_text(f"<configuration>{body}</configuration>")
        return {"HADOOP_CONF_DIR": str(tmp_path)}

    assert endpoints_from_yarn_site(site(**{"yarn.resourcemanager.webapp.address": "rm:8088"})) == ["http://rm:8088"]
    assert endpoints_from_yarn_site(site(**{"yarn.resourcemanager.hostname": "rm"})) == ["http://rm:8088"]
    ha = {
        "yarn.resourcemanager.ha.rm-ids": "rm1,rm2",
        "yarn.resourcemanager.webapp.https.address.rm1": "a:8090",
        "yarn.resourcemanager.hostname.rm2": "b",
        "yarn.http.policy": "HTTPS_ONLY",
    }
    assert endpoints_from_yarn_site(site(**ha)) == ["https://a:8090", "https://b:8090"]
    assert endpoints_from_yarn_site({"HADOOP_CONF_DIR": str(tmp_path / "none")}) == []
