"""jupyter-ssh-spec: the kernel.json it writes, and its one-line errors."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway_provisioners_cli.kernelspec import unfilled
from gateway_provisioners_cli.ssh_spec import main

BASE = ["install", "--kernel-name", "ssh-py", "--remote-hosts", "h1,alice@h2:2222", "--dry-run"]
OPTION_SETS = [
    [],
    ["--language", "r"],
    ["--ssh-port", "2200", "--remote-user", "bob", "--python", "/opt/py/bin/python3"],
    ["--port-range", "40000..40100", "--launch-timeout", "90"],
    ["--authorized-users", "alice,bob", "--unauthorized-users", "root,eve"],
    ["--load-balancing-algorithm", "least-connection", "--tunnel", "--known-hosts", "/etc/ssh/kh"],
    ["--display-name", "GPU boxes", "--client-key", "/k/id_ed25519", "--client-key", "/k/id_rsa"],
    ["--curve"],
]


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


COMBINATIONS = [list(itertools.chain(*combo)) for n in (1, 2) for combo in itertools.combinations(OPTION_SETS, n)]


@pytest.mark.parametrize("options", COMBINATIONS)
def test_dry_run_writes_a_complete_kernel_json(options: list[str]) -> None:
    code, output = run(*BASE, *options)
    assert code == 0, output
    spec = json.loads(output)
    assert unfilled(spec) == []
    config = spec["metadata"]["kernel_provisioner"]["config"]
    assert spec["metadata"]["kernel_provisioner"]["provisioner_name"] == "distributed-provisioner"
    assert config["remote_hosts"] == ["h1", "alice@h2:2222"]
    assert "{connection_file}" in spec["argv"]
    assert None not in config.values()
    if "--language" in options:
        assert spec["argv"][0] == "R" and spec["language"] == "r"
    if "--python" in options and "--language" not in options:
        assert spec["argv"][0] == config["remote_python"] == "/opt/py/bin/python3"
    if "--authorized-users" in options:
        assert config["authorized_users"] == ["alice", "bob"] and config["unauthorized_users"] == ["eve", "root"]
    assert spec["metadata"].get("supported_encryption") == (["curve"] if "--curve" in options else None)


def test_repeated_remote_hosts_option() -> None:
    code, output = run("install", "--kernel-name", "k", "--remote-hosts", "a", "--remote-hosts", "b,c", "--dry-run")
    assert code == 0
    assert json.loads(output)["metadata"]["kernel_provisioner"]["config"]["remote_hosts"] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port-range", "10..20"], "port_range '10..20'"),
        (["--port-range", "abc"], "not of the form"),
        (["--remote-hosts", "host:port"], "is not a number"),
        (["--load-balancing-algorithm", "fastest"], "round-robin, least-connection or module:function"),
        (["--launch-timeout", "0"], "--launch-timeout"),
    ],
)
def test_bad_values_give_one_clear_error(args: list[str], message: str) -> None:
    code, output = run(*BASE, *args)
    assert code != 0
    assert message in output
    assert "Traceback" not in output


def test_install_and_replace(tmp_path: Path) -> None:
    args = ["install", "--kernel-name", "ssh-py", "--remote-hosts", "h1", "--prefix", str(tmp_path)]
    code, output = run(*args)
    assert code == 0, output
    written = tmp_path / "share" / "jupyter" / "kernels" / "ssh-py" / "kernel.json"
    assert json.loads(written.read_text())["metadata"]["kernel_provisioner"]["config"]["remote_hosts"] == ["h1"]
    code, output = run(*args)
    assert code != 0 and "--replace" in output
    code, output = run(*args, "--replace", "--display-name", "Renamed")
    assert code == 0 and json.loads(written.read_text())["display_name"] == "Renamed"


def test_bad_kernel_name() -> None:
    code, output = run("install", "--kernel-name", "Bad Name", "--remote-hosts", "h1", "--prefix", "/tmp/x")
    assert code != 0 and "--kernel-name" in output
