"""Fixtures for the YARN tests: an RM emulator (or an HA pair), kernel specs for yarn-provisioner, the stand-ins for
spark-submit and dask-yarn."""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway_provisioners.adapters.yarn import YarnShared

from ...conftest import write_kernel_spec
from .rm_emulator import RMServer, RMState, make_workdir

HERE = Path(__file__).parent


@pytest.fixture
def rm_state() -> Iterator[RMState]:
    workdir = make_workdir()
    state = RMState(workdir)
    yield state
    state.shutdown()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def rm(rm_state: RMState) -> Iterator[RMServer]:
    server = RMServer(rm_state)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
async def close_yarn_clients() -> AsyncIterator[None]:
    """Each test has its own event loop: drop the per-loop RM clients and pollers it made."""
    yield
    await YarnShared.close_all()


def yarn_config(rm_url: str, **extra: Any) -> dict[str, Any]:
    config = {
        "yarn_endpoint": rm_url,
        "response_ip": "127.0.0.1",
        "response_port": 0,
        "remote_python": sys.executable,
        "startup_poll_interval": 0.1,
        "poll_interval": 0.5,
        "shutdown_wait_time": 15,
        "launch_timeout": 30,
    }
    config.update(extra)
    return config


# What a shutdown leaves: the provisioner asks the agent to end the kernel, then kills the application. When the agent
# (the AM container) has already exited by the time the kill arrives, the emulator, like the RM, keeps the state the
# exit gave: FINISHED. Either way the application is over when shutdown_kernel returns.
ENDED_BY_SHUTDOWN = ("KILLED", "FINISHED")


def write_yarn_spec(jupyter_path: Path, name: str, rm_url: str, **extra: Any) -> Path:
    return write_kernel_spec(jupyter_path, name, provisioner="yarn-provisioner", config=yarn_config(rm_url, **extra))


@pytest.fixture
def spark_submit(tmp_path: Path, rm: RMServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``spark-submit`` on PATH (the stand-in) and a HADOOP_CONF_DIR whose yarn-site.xml names the emulator."""
    bin_dir = tmp_path / "spark" / "bin"
    bin_dir.mkdir(parents=True)
    script = bin_dir / "spark-submit"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{HERE / "fake_spark_submit.py"}" "$@"\n')
    script.chmod(0o755)
    conf = tmp_path / "hadoop-conf"
    conf.mkdir()
    address = rm.url.removeprefix("http://")
    (conf / "yarn-site.xml").write_text(
        "<configuration><property><name>yarn.resourcemanager.webapp.address</name>"
        f"<value>{address}</value></property></configuration>"
    )
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv("HADOOP_CONF_DIR", str(conf))
    staging = tmp_path / "tmp"  # the stand-in's staging folders land here, removed with the test's folder
    staging.mkdir()
    monkeypatch.setenv("TMPDIR", str(staging))
    return script


@pytest.fixture
def dask_yarn(spark_submit: Path) -> Path:
    """``dask-yarn`` on PATH (the stand-in), beside ``spark-submit``, with the same HADOOP_CONF_DIR and TMPDIR."""
    script = spark_submit.parent / "dask-yarn"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{HERE / "fake_dask_yarn.py"}" "$@"\n')
    script.chmod(0o755)
    return script
