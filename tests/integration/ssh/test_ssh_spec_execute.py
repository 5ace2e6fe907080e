"""A notebook runs with `jupyter execute` through a kernel spec written by jupyter-ssh-spec, against real sshd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.sshd import SSHKeys, SSHServer

from ...conftest import AS_ROOT

pytestmark = pytest.mark.integration


def test_jupyter_execute_through_a_jupyter_ssh_spec_kernel(tmp_path: Path, sshd: SSHServer, ssh_keys: SSHKeys) -> None:
    bin_dir = Path(sys.executable).parent
    prefix = tmp_path / "prefix"
    install = subprocess.run(
        [
            str(bin_dir / "jupyter-ssh-spec"), "install", "--kernel-name", "ssh-nb", "--prefix", str(prefix),
            "--remote-hosts", sshd.address, "--python", sys.executable, "--known-hosts", str(ssh_keys.known_hosts),
            "--client-key", str(ssh_keys.client_key),
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    notebook = tmp_path / "nb.ipynb"
    cell = {"cell_type": "code", "metadata": {}, "source": "import socket\nprint('answer', 6 * 7)", "outputs": [],
            "execution_count": None}  # fmt: skip
    notebook.write_text(json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    env = {**os.environ, "JUPYTER_PATH": str(prefix / "share" / "jupyter"), "KERNEL_USERNAME": "gp-tester"}
    if AS_ROOT:  # the SSH user is this process's user: as an operator would, allow root kernels explicitly
        env["GP_ALLOW_ROOT_KERNELS"] = "true"
    run = subprocess.run(
        [str(bin_dir / "jupyter"), "execute", "--kernel_name=ssh-nb", "--inplace", str(notebook)],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    outputs = json.loads(notebook.read_text())["cells"][0]["outputs"]
    assert "".join(outputs[0]["text"]) == "answer 42\n"
