"""A kernel spec written by the older jupyter-docker-spec (0.5.0), converted by jupyter-gp-migrate, runs a notebook
cell with `jupyter execute` in a real container (the suite's kernel image), and leaves no container behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.older_package import older_spec

from .conftest import KERNEL_LABEL, OWNER, OWNER_LABEL

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def test_older_docker_spec_converted_runs_a_notebook(
    tmp_path: Path, docker_client: Any, kernel_image: str, bridge_network: str
) -> None:
    kernels = older_spec(tmp_path / "prefix", "jupyter-docker-spec", "--kernel-name", "old_docker",
                         "--image-name", kernel_image)  # fmt: skip
    converted = subprocess.run([str(BIN / "jupyter-gp-migrate"), str(kernels / "old_docker")], capture_output=True,
                               text=True, timeout=60)  # fmt: skip
    assert converted.returncode == 0, converted.stderr
    config = json.loads((kernels / "old_docker" / "kernel.json").read_text())["metadata"]["kernel_provisioner"]
    assert config == {"provisioner_name": "docker-provisioner",
                      "config": {"image_name": kernel_image, "launch_timeout": 30}}  # fmt: skip
    cell = {"cell_type": "code", "metadata": {}, "source": "import os\nprint('answer', 6 * 7, os.getuid())",
            "outputs": [], "execution_count": None}  # fmt: skip
    nb = tmp_path / "nb.ipynb"
    nb.write_text(json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    env = {
        **os.environ,
        "JUPYTER_PATH": str(kernels.parent),
        "KERNEL_USERNAME": "gp-tester",
        "GP_DOCKER_NETWORK": bridge_network,
        "GP_DOCKER_PULL_POLICY": "never",
        "GP_DOCKER_OWNER": OWNER,  # this run's label: the suite's safety net removes only what it owns
    }
    run = subprocess.run(
        [str(BIN / "jupyter"), "execute", "--kernel_name=old_docker", "--inplace", str(nb)],
        capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    outputs = json.loads(nb.read_text())["cells"][0]["outputs"]
    assert "".join(outputs[0]["text"]) == "answer 42 1000\n"  # the older default uid, not root
    left = docker_client.containers.list(all=True, filters={"label": [f"{OWNER_LABEL}={OWNER}", KERNEL_LABEL]})
    assert left == []
