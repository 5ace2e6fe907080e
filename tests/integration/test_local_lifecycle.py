"""A real AsyncKernelManager drives a real ipykernel through local-agent-provisioner: the whole lifecycle."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest
from jupyter_client.manager import AsyncKernelManager

from gateway_provisioners.core.errors import KernelExited, NotAuthorized
from gateway_provisioners.core.lifecycle import KernelPhase
from gateway_provisioners.provisioners.local import LocalAgentProvisioner

from ..conftest import pid_gone, write_kernel_spec
from ..support.kernels import INTERRUPTED_WITHIN, interrupt_running_cell, kernel_pid, reattach_in_new_process, run_code

pytestmark = pytest.mark.integration


@pytest.fixture
async def km(jupyter_path: Path):
    write_kernel_spec(jupyter_path, "gp-local")
    manager = AsyncKernelManager(kernel_name="gp-local")
    await manager.start_kernel()
    yield manager
    if manager.has_kernel:
        await manager.shutdown_kernel(now=True)


async def test_start_and_execute(km: AsyncKernelManager) -> None:
    assert isinstance(km.provisioner, LocalAgentProvisioner)
    content, out = await run_code(km, "print(6 * 7)")
    assert content["status"] == "ok"
    assert "".join(out).strip() == "42"
    assert await km.is_alive()


async def test_interrupt_running_sleep_within_one_second(km: AsyncKernelManager) -> None:
    reply, elapsed = await interrupt_running_cell(km)
    assert reply["status"] == "error"
    assert reply["ename"] == "KeyboardInterrupt"
    assert elapsed < INTERRUPTED_WITHIN, f"interrupt took {elapsed:.2f} s"
    assert await km.is_alive()


async def test_restart_in_place_keeps_ports(km: AsyncKernelManager) -> None:
    ports = km.get_connection_info()
    old_pid = await kernel_pid(km)
    agent_pid = km.provisioner.kernel.handle.data["pid"]
    await km.restart_kernel()
    new_pid = await kernel_pid(km)  # a fresh client executes on the restarted kernel
    assert new_pid != old_pid
    assert km.get_connection_info() == ports
    assert km.provisioner.kernel.handle.data["pid"] == agent_pid, "restart in place must keep the agent"
    assert pid_gone(old_pid, 1.0)


async def test_shutdown_leaves_no_process(km: AsyncKernelManager) -> None:
    pid = await kernel_pid(km)
    agent_pid = km.provisioner.kernel.handle.data["pid"]
    await km.shutdown_kernel()
    assert pid_gone(pid, 1.0), "kernel process still alive 1 s after shutdown"
    assert pid_gone(agent_pid, 1.0), "agent still alive 1 s after shutdown"
    assert not km.has_kernel


async def test_kernel_killed_from_outside_is_reported_dead(km: AsyncKernelManager) -> None:
    pid = await kernel_pid(km)
    os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    while await km.is_alive():
        await asyncio.wait_for(km.provisioner.kernel.lifecycle.wait_changed(), 3)
    assert time.monotonic() - started < 3
    assert await km.provisioner.poll() == -signal.SIGKILL
    # The agent is still there, so jupyter_client's restart brings the kernel back on the same ports.
    ports = km.get_connection_info()
    await km.restart_kernel(now=True)
    assert (await run_code(km, "1 + 1"))[0]["status"] == "ok"
    assert km.get_connection_info() == ports


async def test_server_environment_is_not_copied(jupyter_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GP_TEST_SERVER_SECRET", "do-not-leak")
    write_kernel_spec(jupyter_path, "gp-env", env={"FROM_SPEC": "yes"})
    km = AsyncKernelManager(kernel_name="gp-env")
    await km.start_kernel(env={**os.environ, "KERNEL_EXTRA": "passes"})
    try:
        code = "import os, json; print(json.dumps({k: os.environ.get(k) for k in "
        code += "['GP_TEST_SERVER_SECRET', 'KERNEL_EXTRA', 'FROM_SPEC', 'KERNEL_ID', 'GP_LAUNCH_PARAMS']}))"
        _, out = await run_code(km, code)
    finally:
        await km.shutdown_kernel(now=True)
    seen = json.loads("".join(out))
    assert seen == {
        "GP_TEST_SERVER_SECRET": None,
        "KERNEL_EXTRA": "passes",
        "FROM_SPEC": "yes",
        "KERNEL_ID": km.kernel_id,
        "GP_LAUNCH_PARAMS": None,
    }


async def test_callback_mode_through_the_response_listener(jupyter_path: Path) -> None:
    write_kernel_spec(jupyter_path, "gp-callback", config={"connection_mode": "callback", "response_port": 0})
    km = AsyncKernelManager(kernel_name="gp-callback")
    await km.start_kernel()
    try:
        assert km.provisioner.kernel.spec.response_address.startswith("127.0.0.1:")
        assert (await run_code(km, "2 ** 10"))[0]["status"] == "ok"
    finally:
        await km.shutdown_kernel()


@pytest.mark.parametrize(
    ("argv", "expected_code", "expected_text"),
    [
        (["/nonexistent/kernel-binary", "-f", "{connection_file}"], None, "No such file"),
        (
            [sys.executable, "-c", "import sys; print('boom at start', file=sys.stderr); sys.exit(3)"],
            3,
            "boom at start",
        ),
    ],
    ids=["bad-argv", "exits-at-once"],
)
async def test_failed_launch_reports_reason_quickly(
    jupyter_path: Path, argv: list[str], expected_code: int | None, expected_text: str
) -> None:
    write_kernel_spec(jupyter_path, "gp-broken", argv=argv, config={"launch_timeout": 30})
    km = AsyncKernelManager(kernel_name="gp-broken")
    started = time.monotonic()
    with pytest.raises(KernelExited) as caught:
        await km.start_kernel()
    elapsed = time.monotonic() - started
    assert elapsed < 15, f"failure took {elapsed:.1f} s to report (timeout is 30 s)"
    error = caught.value
    assert expected_text in error.details()
    if expected_code is not None:
        assert error.exit_code == expected_code
    assert error.phase in ("starting", "connecting", "submitted")


async def test_root_is_refused_by_default(jupyter_path: Path) -> None:
    write_kernel_spec(jupyter_path, "gp-local")
    km = AsyncKernelManager(kernel_name="gp-local")
    with pytest.raises(NotAuthorized, match="'root' is not allowed"):
        await km.start_kernel(env={**os.environ, "KERNEL_USERNAME": "root"})
    assert not km.has_kernel


async def test_per_kernel_user_lists_are_parsed(jupyter_path: Path) -> None:
    write_kernel_spec(jupyter_path, "gp-users", config={"unauthorized_users": "mallory, eve", "authorized_users": ""})
    km = AsyncKernelManager(kernel_name="gp-users")
    with pytest.raises(NotAuthorized, match="'eve'"):
        await km.start_kernel(env={**os.environ, "KERNEL_USERNAME": "eve"})


async def test_reattach_from_another_process(km: AsyncKernelManager, tmp_path: Path) -> None:
    pid = await kernel_pid(km)
    seen_pid, _ = await reattach_in_new_process(km, tmp_path)
    assert seen_pid == pid
    assert await km.is_alive(), "the other process's reattach must not disturb the kernel"


async def test_jupyter_execute_runs_a_notebook(jupyter_path: Path, tmp_path: Path) -> None:
    write_kernel_spec(jupyter_path, "gp-nb")
    notebook = tmp_path / "nb.ipynb"
    notebook.write_text(
        json.dumps(
            {
                "cells": [
                    {
                        "cell_type": "code",
                        "metadata": {},
                        "source": "x = 6 * 7\nprint('answer', x)",
                        "outputs": [],
                        "execution_count": None,
                    },
                ],
                "metadata": {"kernelspec": {"name": "gp-nb", "display_name": "gp-nb", "language": "python"}},
                "nbformat": 4,
                "nbformat_minor": 5,
            }
        )
    )
    jupyter = Path(sys.executable).with_name("jupyter")
    proc = await asyncio.create_subprocess_exec(
        str(jupyter), "execute", "--kernel_name=gp-nb", "--inplace", str(notebook),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    outputs = json.loads(notebook.read_text())["cells"][0]["outputs"]
    assert outputs and outputs[0]["text"] in ("answer 42\n", ["answer 42\n"])


async def test_kernel_phases_are_logged_without_secrets(jupyter_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_kernel_spec(jupyter_path, "gp-local")
    km = AsyncKernelManager(kernel_name="gp-local")
    caplog.set_level("DEBUG")
    await km.start_kernel()
    try:
        key = km.session.key.decode()
        token = km.provisioner.kernel.serialize()["token"]
        assert km.provisioner.kernel.phase is KernelPhase.READY
    finally:
        await km.shutdown_kernel()
    text = "\n".join(record.getMessage() for record in caplog.records)
    for phase in ("submitted", "starting", "connecting", "ready", "terminated"):
        assert f"] {phase} (" in text, f"phase {phase} not logged"
    assert key not in text and token not in text


def agent_pids() -> set[int]:
    """This test process's descendants that run the agent."""
    found = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            if "gp_agent.py" in " ".join(proc.cmdline()) and proc.status() != psutil.STATUS_ZOMBIE:
                found.add(proc.pid)
        except psutil.Error:  # ended while we looked
            continue
    return found


async def test_no_agent_process_lingers_after_a_failed_launch(jupyter_path: Path) -> None:
    argv = [sys.executable, "-c", "import sys, time; time.sleep(0.5); sys.exit(3)", "{connection_file}"]
    write_kernel_spec(jupyter_path, "gp-broken", argv=argv, config={"launch_timeout": 30})
    before = agent_pids()
    seen: set[int] = set()

    async def watch_agents() -> None:  # the launch's agent lives for about half a second: note it while it does
        while True:
            seen.update(agent_pids() - before)
            await asyncio.sleep(0.02)

    watcher = asyncio.ensure_future(watch_agents())
    try:
        with pytest.raises(KernelExited):
            await AsyncKernelManager(kernel_name="gp-broken").start_kernel()
    finally:
        watcher.cancel()
    assert seen, "the failed launch's agent was never seen running"
    assert all(pid_gone(pid, 2) for pid in seen), "the agent of a failed launch is still running"
