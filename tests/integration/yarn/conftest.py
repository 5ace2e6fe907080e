"""Fixtures for the YARN tests: the real YARN that scripts/yarn-cluster.sh runs, an RM emulator (or an HA pair) for
what a real RM cannot be made to do on demand, kernel specs for yarn-provisioner, the stand-ins for spark-submit and
dask-yarn."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway_provisioners.adapters.yarn import YarnShared

from ...conftest import write_kernel_spec
from .rm_emulator import RMServer, RMState, make_workdir

HERE = Path(__file__).parent
ROOT = HERE.parents[2]


@dataclass(frozen=True)
class RealYarn:
    """The running test cluster (``sh scripts/yarn-cluster.sh up``): Hadoop's own ResourceManager and NodeManager."""

    endpoint: str  # the RM's web address
    conf_dir: Path  # yarn-site.xml and core-site.xml for clients (HADOOP_CONF_DIR)
    am_expiry: float  # seconds: yarn.am.liveness-monitor.expiry-interval-ms
    request_log: Path  # the RM's HTTP request log, one line per request

    def requests_served(self) -> list[str]:
        """The request lines (``GET /ws/v1/cluster/apps?... HTTP/1.1``) the RM has served so far."""
        text = self.request_log.read_text() if self.request_log.exists() else ""
        return [line.split('"')[1] for line in text.splitlines() if line.count('"') >= 2]


@pytest.fixture(scope="session")
def real_yarn() -> RealYarn:
    """The real YARN, or a skip saying how to start it (a failure under CI=true, where scripts/test.sh starts it)."""
    out = subprocess.run(
        ["sh", str(ROOT / "scripts" / "yarn-cluster.sh"), "env"], capture_output=True, text=True, check=False
    )
    values = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    if out.returncode != 0 or "GP_YARN_ENDPOINT" not in values:
        reason = "no real YARN is running: start one with 'sh scripts/yarn-cluster.sh up' (needs Java and Maven)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; under CI=true scripts/test.sh must have started it")
        pytest.skip(reason)
    return RealYarn(values["GP_YARN_ENDPOINT"], Path(values["HADOOP_CONF_DIR"]),
                    int(values["GP_YARN_AM_EXPIRY_MS"]) / 1000, Path(values["GP_YARN_RM_REQUEST_LOG"]))  # fmt: skip


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
        # The emulator runs AM commands as plain processes and speaks no AMRM protocol: the agent is the AM there.
        "application_master": "agent",
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


def write_real_yarn_spec(jupyter_path: Path, name: str, cluster: RealYarn, **extra: Any) -> Path:
    """A spec for the real YARN: the registered Java AM (the default), the kernels' Python is this one."""
    config = yarn_config(cluster.endpoint, **{"application_master": "java", "launch_timeout": 90, **extra})
    return write_kernel_spec(jupyter_path, name, provisioner="yarn-provisioner", config=config)


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
