"""yarn-provisioner against a real Hadoop YARN (scripts/yarn-cluster.sh: Hadoop's own ResourceManager and
NodeManager), through AsyncKernelManager and real ipykernels in YARN containers."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from jupyter_client.manager import AsyncKernelManager

from gateway_provisioners.core.errors import LaunchError, QueueFull
from gateway_provisioners.provisioners.yarn import YarnProvisioner

from ...conftest import pid_gone
from ...support.kernels import INTERRUPTED_WITHIN, interrupt_running_cell, reattach_in_new_process, run_code
from .conftest import ROOT, RealYarn, write_real_yarn_spec

pytestmark = pytest.mark.integration

FINAL = ("FINISHED", "FAILED", "KILLED")


def app_of(km: AsyncKernelManager) -> str:
    assert isinstance(km.provisioner, YarnProvisioner) and km.provisioner.kernel is not None
    handle = km.provisioner.kernel.handle
    assert handle is not None
    return str(handle.data["app_id"])


def rm_app(cluster: RealYarn, app_id: str) -> dict[str, Any]:
    reply = requests.get(f"{cluster.endpoint}/ws/v1/cluster/apps/{app_id}", timeout=10)
    reply.raise_for_status()
    return dict(reply.json()["app"])


async def wait_for_app(cluster: RealYarn, app_id: str, states: tuple[str, ...], timeout: float = 30) -> dict[str, Any]:
    """Poll the RM (off the event loop) until the application is in one of ``states``; its report."""
    deadline = time.monotonic() + timeout
    while True:
        app = await asyncio.to_thread(rm_app, cluster, app_id)
        if app["state"] in states or time.monotonic() > deadline:
            return app
        await asyncio.sleep(0.5)


async def test_rest_kernel_lives_past_three_am_expiries(jupyter_path: Path, real_yarn: RealYarn) -> None:
    """A kernel submitted through REST has a registered AM that heartbeats: the RM does not expire it. The control,
    side by side: with application_master 'agent' (nothing registers) the RM ends its kernel after one expiry."""
    write_real_yarn_spec(jupyter_path, "real-rest", real_yarn)
    write_real_yarn_spec(jupyter_path, "real-agent-am", real_yarn, application_master="agent")
    km, control = AsyncKernelManager(kernel_name="real-rest"), AsyncKernelManager(kernel_name="real-agent-am")
    await asyncio.gather(km.start_kernel(), control.start_kernel())
    try:
        app_id, control_id = app_of(km), app_of(control)
        app = await wait_for_app(real_yarn, app_id, ("RUNNING", *FINAL))
        assert app["state"] == "RUNNING", app  # registered: ACCEPTED would mean an AM the RM is waiting for
        assert f"gp-kernel-{km.kernel_id}" in app["applicationTags"].split(",")
        assert (await asyncio.to_thread(rm_app, real_yarn, control_id))["state"] == "ACCEPTED"  # never registers
        for manager in (km, control):
            content, out = await run_code(manager, "print(6 * 7)")
            assert content["status"] == "ok" and out.strip() == "42"
        # Waiting out wall time is the point: three AM expiry intervals, checking all along that it still runs.
        deadline = time.monotonic() + 3 * real_yarn.am_expiry + 2
        while time.monotonic() < deadline:
            app = await asyncio.to_thread(rm_app, real_yarn, app_id)
            assert app["state"] == "RUNNING", f"the RM ended the kernel's application: {app.get('diagnostics')}"
            await asyncio.sleep(2)
        content, out = await run_code(km, "print(sum(range(10)))")
        assert content["status"] == "ok" and out.strip() == "45"
        assert await km.is_alive()
        expired = await asyncio.to_thread(rm_app, real_yarn, control_id)
        assert expired["state"] == "FAILED" and "timed out" in expired["diagnostics"], expired
    finally:
        await asyncio.gather(km.shutdown_kernel(now=True), control.shutdown_kernel(now=True))
    app = await wait_for_app(real_yarn, app_id, FINAL)
    assert app["state"] in ("KILLED", "FINISHED"), app


async def test_rest_kernel_execute_interrupt_restart_reattach_shutdown(
    jupyter_path: Path, real_yarn: RealYarn, tmp_path: Path
) -> None:
    write_real_yarn_spec(jupyter_path, "real-life", real_yarn)
    km = AsyncKernelManager(kernel_name="real-life")
    await km.start_kernel()
    try:
        app_id = app_of(km)
        app = await asyncio.to_thread(rm_app, real_yarn, app_id)
        assert app["user"] == "gp-tester" and app["queue"] in ("default", "root.default")
        assert app["applicationType"] == "GATEWAY-PROVISIONERS"
        content, out = await run_code(km, "import os; print(os.getpid(), os.environ.get('CONTAINER_ID', ''))")
        assert content["status"] == "ok"
        pid, container = out.split()
        assert container.startswith("container_") and app_id.split("_", 1)[1] in container  # in YARN's container

        reply, elapsed = await interrupt_running_cell(km, timeout=20)
        assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt" and elapsed < INTERRUPTED_WITHIN

        await km.restart_kernel(now=True)  # in place: same application, a new kernel process
        assert app_of(km) == app_id
        _, out = await run_code(km, "import os; print(os.getpid())")
        assert out.strip() != pid and pid_gone(int(pid), 10)
        pid = out.strip()

        seen_pid, handle = await reattach_in_new_process(km, tmp_path)  # another server process reattaches
        assert seen_pid == int(pid) and handle["data"]["app_id"] == app_id
        assert await km.is_alive()
    finally:
        await km.shutdown_kernel(now=True)
    # Shutdown kills the application (the RM's own record) and with it the container's processes.
    assert (await asyncio.to_thread(rm_app, real_yarn, app_id))["state"] in ("KILLED", "FINISHED")
    assert pid_gone(int(pid), 10)


async def test_full_queue_is_queue_full_with_the_rms_diagnostics(jupyter_path: Path, real_yarn: RealYarn) -> None:
    """Queue 'tiny' (1 % of the node) cannot hold any AM container: the RM keeps the application ACCEPTED."""
    write_real_yarn_spec(jupyter_path, "real-full", real_yarn, queue="tiny", launch_timeout=8)
    km = AsyncKernelManager(kernel_name="real-full")
    with pytest.raises(QueueFull) as caught:
        await km.start_kernel()
    message = str(caught.value)
    # Hadoop 3 names the queue by its path; the diagnostics are the RM's own.
    assert message.startswith("queue root.tiny has no room: ") and "waiting for resources" in message.lower(), message
    (app,) = [a for a in await asyncio.to_thread(apps_tagged, real_yarn, f"gp-kernel-{km.kernel_id}")]
    assert (await wait_for_app(real_yarn, app["id"], FINAL))["state"] == "KILLED"


async def test_agent_that_cannot_start_fails_the_launch_at_once(jupyter_path: Path, real_yarn: RealYarn) -> None:
    write_real_yarn_spec(jupyter_path, "real-nopython", real_yarn, remote_python="/nonexistent/bin/python3")
    km = AsyncKernelManager(kernel_name="real-nopython")
    started = time.monotonic()
    with pytest.raises(LaunchError) as caught:
        await km.start_kernel()
    assert time.monotonic() - started < 45, "a failed application must fail the launch at once, not at the deadline"
    details = caught.value.details()
    assert "cannot start /nonexistent/bin/python3" in str(caught.value), str(caught.value)
    assert "[stderr] gp-yarn-am: cannot start /nonexistent/bin/python3" in details, details  # the container's log


def apps_tagged(cluster: RealYarn, tag: str) -> list[dict[str, Any]]:
    reply = requests.get(f"{cluster.endpoint}/ws/v1/cluster/apps", params={"applicationTags": tag}, timeout=10)
    reply.raise_for_status()
    return list(((reply.json() or {}).get("apps") or {}).get("app") or [])


async def test_one_rm_query_per_interval_for_all_running_kernels(jupyter_path: Path, real_yarn: RealYarn) -> None:
    """Counted in the real RM's own request log: idle kernels cost one list query per interval, whatever their
    number, and no request of their own."""
    interval, window, kernels = 1.0, 8.0, 3
    write_real_yarn_spec(jupyter_path, "real-idle", real_yarn, poll_interval=interval)
    kms = [AsyncKernelManager(kernel_name="real-idle") for _ in range(kernels)]
    await asyncio.gather(*(km.start_kernel() for km in kms))
    try:
        app_ids = [app_of(km) for km in kms]
        for km in kms:  # every kernel answers; then the servers' only traffic to the RM is the shared poller's
            content, _ = await run_code(km, "1")
            assert content["status"] == "ok"
        before = len(real_yarn.requests_served())
        await asyncio.sleep(window)  # the measurement window itself, not a wait for something to happen
        served = real_yarn.requests_served()[before:]
    finally:
        await asyncio.gather(*(km.shutdown_kernel(now=True) for km in kms))
    lists = [r for r in served if r.startswith("GET /ws/v1/cluster/apps?")]
    assert all("applicationTags=gateway-provisioners" in r for r in lists), lists
    assert not [r for r in served if any(app_id in r for app_id in app_ids)], "no per-kernel request while idle"
    assert window / interval - 2 <= len(lists) <= window / interval + 1, (len(lists), served)
    assert len(served) == len(lists), served


async def test_kernel_survives_a_resourcemanager_restart(jupyter_path: Path, real_yarn: RealYarn) -> None:
    """The RM restarts (recovering its applications; work-preserving): the kernel, its AM and the provisioner's
    poller carry on, and shutdown still kills the application through the restarted RM."""
    write_real_yarn_spec(jupyter_path, "real-rm-restart", real_yarn)
    km = AsyncKernelManager(kernel_name="real-rm-restart")
    await km.start_kernel()
    try:
        app_id = app_of(km)
        assert (await wait_for_app(real_yarn, app_id, ("RUNNING", *FINAL)))["state"] == "RUNNING"
        _, pid = await run_code(km, "import os; print(os.getpid())")
        script = str(ROOT / "scripts" / "yarn-cluster.sh")
        done = await asyncio.to_thread(subprocess.run, ["sh", script, "restart-rm"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        # The restarted RM knows the application again, and its AM has re-registered (RUNNING, not ACCEPTED).
        app = await wait_for_app(real_yarn, app_id, ("RUNNING", *FINAL), timeout=60)
        assert app["state"] == "RUNNING", app
        content, out = await run_code(km, "import os; print(os.getpid())")
        assert content["status"] == "ok" and out == pid, "the same kernel process, untouched by the restart"
        assert await km.is_alive()
    finally:
        await km.shutdown_kernel(now=True)
    assert (await wait_for_app(real_yarn, app_id, FINAL))["state"] in ("KILLED", "FINISHED")


async def test_spec_from_the_cli_runs_a_kernel(
    jupyter_path: Path, real_yarn: RealYarn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``jupyter-yarn-spec install`` (REST, its defaults) writes a spec that runs a kernel on this YARN, which it finds
    through HADOOP_CONF_DIR's yarn-site.xml."""
    cli = Path(sys.executable).parent / "jupyter-yarn-spec"
    prefix = jupyter_path.parent / "prefix"
    done = subprocess.run(
        [str(cli), "install", "--kernel-name", "cli_yarn", "--python-root", sys.prefix, "--prefix", str(prefix),
         "--launch-timeout", "90"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    shutil.copytree(prefix / "share" / "jupyter" / "kernels" / "cli_yarn", jupyter_path / "kernels" / "cli_yarn")
    monkeypatch.setenv("HADOOP_CONF_DIR", str(real_yarn.conf_dir))
    monkeypatch.setenv("GP_RESPONSE_IP", "127.0.0.1")
    km = AsyncKernelManager(kernel_name="cli_yarn")
    await km.start_kernel()
    try:
        app_id = app_of(km)
        assert (await wait_for_app(real_yarn, app_id, ("RUNNING", *FINAL)))["state"] == "RUNNING"
        content, out = await run_code(km, "import sys; print(sys.prefix)")
        assert content["status"] == "ok" and out.strip() == sys.prefix
    finally:
        await km.shutdown_kernel(now=True)
    assert (await wait_for_app(real_yarn, app_id, FINAL))["state"] in ("KILLED", "FINISHED")


async def test_kernel_survives_a_failover_between_two_rms(
    jupyter_path: Path, real_yarn: RealYarn, tmp_path: Path
) -> None:
    """An HA pair of its own (GP_YARN_HA=1: rm1 active, rm2 standby, one NodeManager): rm1 goes away and rm2 becomes
    active under a running kernel. The kernel, its AM and the provisioner's client carry on with rm2."""
    script = str(ROOT / "scripts" / "yarn-cluster.sh")
    env = {**os.environ, "GP_YARN_HA": "1", "GP_YARN_RUN": str(tmp_path / "ha")}
    up = await asyncio.to_thread(subprocess.run, ["sh", script, "up"], env=env, capture_output=True, text=True)
    try:
        assert up.returncode == 0, up.stderr
        values = dict(line.split("=", 1) for line in up.stdout.splitlines() if "=" in line)
        rm1, rm2 = values["GP_YARN_ENDPOINT"].split(",")
        conf, log = Path(values["HADOOP_CONF_DIR"]), Path(values["GP_YARN_RM_REQUEST_LOG"])
        first, second = RealYarn(rm1, conf, real_yarn.am_expiry, log), RealYarn(rm2, conf, real_yarn.am_expiry, log)
        write_real_yarn_spec(jupyter_path, "real-ha", first, yarn_endpoint=f"{rm1},{rm2}")
        km = AsyncKernelManager(kernel_name="real-ha")
        await km.start_kernel()
        try:
            app_id = app_of(km)
            assert (await wait_for_app(first, app_id, ("RUNNING", *FINAL)))["state"] == "RUNNING"
            _, pid = await run_code(km, "import os; print(os.getpid())")
            done = await asyncio.to_thread(
                subprocess.run, ["sh", script, "failover"], env=env, capture_output=True, text=True
            )
            assert done.returncode == 0, done.stderr
            app = await wait_for_app(second, app_id, ("RUNNING", *FINAL), timeout=60)
            assert app["state"] == "RUNNING", app  # recovered by rm2, its AM registered again there
            content, out = await run_code(km, "import os; print(os.getpid())")
            assert content["status"] == "ok" and out == pid
            backend = km.provisioner.kernel.backend  # type: ignore[union-attr]
            deadline = time.monotonic() + 30
            while backend.client.active_endpoint != rm2 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)  # the shared poller's next query finds rm1 gone and probes again
            assert backend.client.active_endpoint == rm2 and backend.client.failovers == 1
        finally:
            await km.shutdown_kernel(now=True)
        assert (await wait_for_app(second, app_id, FINAL))["state"] in ("KILLED", "FINISHED")
    finally:
        await asyncio.to_thread(subprocess.run, ["sh", script, "down"], env=env, capture_output=True)
