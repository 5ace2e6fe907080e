"""A kernel spec written by the older jupyter-ssh-spec (0.5.0), converted by jupyter-gp-migrate, runs a notebook
cell with `jupyter execute` against a real sshd; unconverted, it is refused at launch naming jupyter-gp-migrate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import AS_ROOT
from tests.support.older_package import older_spec
from tests.support.sshd import SSHKeys, SSHServer

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def notebook(path: Path) -> Path:
    cell = {"cell_type": "code", "metadata": {}, "source": "print('answer', 6 * 7)", "outputs": [],
            "execution_count": None}  # fmt: skip
    path.write_text(json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


def test_older_ssh_spec_converted_runs_a_notebook(tmp_path: Path, sshd: SSHServer, ssh_keys: SSHKeys) -> None:
    kernels = older_spec(tmp_path / "prefix", "jupyter-ssh-spec", "--kernel-name", "old_ssh",
                         "--remote-hosts", sshd.host)  # fmt: skip
    # What the older package read from the server's environment, its operator sets here too (same names where kept).
    env = {
        **os.environ,
        "JUPYTER_PATH": str(kernels.parent),
        "KERNEL_USERNAME": "gp-tester",
        "GP_SSH_PORT": str(sshd.port),
        "GP_SSH_KNOWN_HOSTS": str(ssh_keys.known_hosts),
        "GP_SSH_CLIENT_KEYS": str(ssh_keys.client_key),
        "GP_REMOTE_PYTHON": sys.executable,  # replaces the spec's bare "python" on the host
    }
    if AS_ROOT:  # the SSH user is this process's user: as an operator would, allow root kernels explicitly
        env["GP_ALLOW_ROOT_KERNELS"] = "true"
    nb = notebook(tmp_path / "nb.ipynb")
    execute = [str(BIN / "jupyter"), "execute", "--kernel_name=old_ssh", "--inplace", str(nb)]

    unconverted = subprocess.run(execute, capture_output=True, text=True, timeout=120, env=env)
    assert unconverted.returncode != 0
    assert "convert it with 'jupyter-gp-migrate" in unconverted.stderr
    assert "runs the older launcher launch_ipykernel.py" in unconverted.stderr

    converted = subprocess.run([str(BIN / "jupyter-gp-migrate"), str(kernels / "old_ssh")], capture_output=True,
                               text=True, timeout=60)  # fmt: skip
    assert converted.returncode == 0, converted.stderr
    run = subprocess.run(execute, capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    outputs = json.loads(nb.read_text())["cells"][0]["outputs"]
    assert "".join(outputs[0]["text"]) == "answer 42\n"
