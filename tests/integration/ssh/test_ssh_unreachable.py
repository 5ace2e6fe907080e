"""A host that becomes unreachable in the middle of a launch (issue 11, item 3).

The launch must fail at its timeout (+1 s at most), however long the clean-up would wait on the dead connection, and
the agent and kernel left on the host must end themselves (the agent's watchdog) instead of running forever. The host
is a real sshd in a network namespace; it becomes unreachable when its link on the bridge goes down.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from gateway_provisioners.adapters.ssh import SSHBackend, SSHSettings
from gateway_provisioners.core.errors import LaunchTimeout
from gateway_provisioners.core.kernel import RemoteKernel
from gateway_provisioners.core.launch import LaunchSpec, build_kernel_env
from tests.support.sshd import SSHKeys, SSHServer, can_make_namespaces, find_sshd, namespace_hosts, run_sshd

from ...conftest import AS_ROOT, pid_gone

pytestmark = pytest.mark.integration

PREFIX, SUBNET = "gpu", "10.250.9"  # a namespace set of its own: this test takes its host's link down
LAUNCH_TIMEOUT, GRACE = 12.0, 3.0

# The kernel: says it started, waits until the test has cut the host off, then becomes a real ipykernel.
KERNEL = r"""
import os, sys, time
open(sys.argv[2], "w").write(str(os.getpid()))
while not os.path.exists(sys.argv[3]):
    time.sleep(0.02)
os.execv(sys.executable, [sys.executable, "-m", "ipykernel_launcher", "-f", sys.argv[1]])
"""


@pytest.fixture
def lonely_host(tmp_path_factory: pytest.TempPathFactory, ssh_keys: SSHKeys) -> Iterator[SSHServer]:
    if find_sshd() is None:
        pytest.skip("OpenSSH sshd is not installed here (Debian: apt-get install openssh-server)")
    reason = can_make_namespaces()
    if reason:
        pytest.skip(f"unreachable-host test skipped: {reason}")
    with namespace_hosts(1, prefix=PREFIX, subnet=SUBNET) as hosts:
        name, address = hosts[0]
        with run_sshd(tmp_path_factory.mktemp(name), ssh_keys, address, 22, netns=name, hostname=name) as server:
            try:
                yield server
            finally:
                set_link(up=True)
                # Sessions of the dead connection: let them see their client go, then make sure they are gone.
                sessions = psutil.Process(server.process.pid).children(recursive=True)
                _, alive = psutil.wait_procs(sessions, timeout=5)
                for proc in alive:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        proc.kill()


async def ended_at(pid: int, timeout: float) -> float | None:
    """When process ``pid`` ended (or became a zombie), polled every 50 ms; None if it still runs after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid_gone(pid, 0):
            return time.monotonic()
        await asyncio.sleep(0.05)
    return None


def set_link(up: bool) -> None:
    """The host's port on the bridge: down, and nothing reaches the host or comes back from it."""
    state = "up" if up else "down"
    subprocess.run(["ip", "-n", f"{PREFIX}-sw", "link", "set", "h0", state], check=True, capture_output=True)


async def test_unreachable_host_mid_launch_fails_at_the_timeout_and_leaves_nothing(
    lonely_host: SSHServer, ssh_keys: SSHKeys, tmp_path: Path
) -> None:
    script, started, go = tmp_path / "kernel.py", tmp_path / "kernel.pid", tmp_path / "go"
    script.write_text(KERNEL)
    settings = SSHSettings(known_hosts=str(ssh_keys.known_hosts), client_keys=[str(ssh_keys.client_key)])
    backend = SSHBackend([lonely_host.address], settings, default_user=getpass.getuser(), python=sys.executable)
    kernel_id = str(uuid.uuid4())
    spec = LaunchSpec(
        kernel_id,
        [sys.executable, str(script), "{connection_file}", str(started), str(go)],
        env=build_kernel_env(os.environ, {}, ["PATH", "HOME"]),
        launch_timeout=LAUNCH_TIMEOUT,
        agent_watchdog=GRACE,
        allow_root=AS_ROOT,
    )
    kernel = RemoteKernel(backend, kernel_id)
    began = time.monotonic()
    launch = asyncio.ensure_future(kernel.start(spec))
    try:
        deadline = time.monotonic() + 10
        while not (started.exists() and started.read_text() and kernel.handle and kernel.handle.data.get("log_file")):
            assert time.monotonic() < deadline and not launch.done(), "the kernel did not start on the host"
            await asyncio.sleep(0.02)
        kernel_pid = int(started.read_text())
        agent_pid = psutil.Process(kernel_pid).ppid()  # the host shares this machine's process table
        folder = Path(kernel.handle.data["log_file"]).parent  # the host shares this machine's files too
        set_link(up=False)
        go.touch()  # the kernel becomes ready; its agent's report goes into a connection nobody can reach
        cut_off = time.monotonic()
        agent_ended = asyncio.ensure_future(ended_at(agent_pid, LAUNCH_TIMEOUT + GRACE + 5))
        with pytest.raises(LaunchTimeout):
            await launch
        failed_after = time.monotonic() - began
        assert failed_after <= LAUNCH_TIMEOUT + 1.0, f"the error came after {failed_after:.1f} s"
        # The agent reported into the void and no server ever connected: its watchdog ends it and its kernel, within
        # the grace after its report (the kernel's start-up, about a second, comes before the report).
        ended = await agent_ended
        assert ended is not None, "the agent of the failed launch is still running on the host"
        ended_after = ended - cut_off
        assert ended_after <= GRACE + 4, f"the agent ended {ended_after:.1f} s after the host was cut off"
        assert pid_gone(kernel_pid, 1.0), "the kernel outlived its agent"
        assert not folder.exists(), "the agent's watchdog leaves nothing behind on the host"
        print(f"launch error after {failed_after:.2f} s (timeout {LAUNCH_TIMEOUT:g}), agent ended {ended_after:.2f} s")
    finally:
        launch.cancel()
        set_link(up=True)
        await backend.close()


async def test_agent_whose_server_became_unreachable_ends_itself_and_its_kernel(
    lonely_host: SSHServer, ssh_keys: SSHKeys
) -> None:
    """A ready kernel; then the host is cut off. The agent's control connection never closes by itself: keepalive (or,
    with a reply still unacknowledged, TCP_USER_TIMEOUT) finds it dead, then the watchdog gives the server its grace
    and ends the kernel and the agent."""
    settings = SSHSettings(known_hosts=str(ssh_keys.known_hosts), client_keys=[str(ssh_keys.client_key)])
    backend = SSHBackend([lonely_host.address], settings, default_user=getpass.getuser(), python=sys.executable)
    kernel_id = str(uuid.uuid4())
    spec = LaunchSpec(
        kernel_id,
        [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        env=build_kernel_env(os.environ, {}, ["PATH", "HOME"]),
        launch_timeout=30,
        agent_watchdog=GRACE,
        allow_root=AS_ROOT,
    )
    kernel = RemoteKernel(backend, kernel_id)
    try:
        await kernel.start(spec)
        assert kernel.handle is not None and kernel.kernel_pid is not None
        agent_pid, kernel_pid = int(kernel.handle.data["agent_pid"]), kernel.kernel_pid
        folder = Path(kernel.handle.data["log_file"]).parent
        set_link(up=False)
        cut_off = time.monotonic()
        # Keepalive: first probe after GRACE/3 idle, 3 probes 1 s apart (TCP_USER_TIMEOUT: 2/3 GRACE); then the
        # watchdog's GRACE (checked every GRACE/4): at most about GRACE/3 + 3 + GRACE + GRACE/4 in all.
        limit = GRACE / 3 + 3 + GRACE + GRACE / 4 + 3
        ended = await ended_at(agent_pid, limit + 10)
        assert ended is not None, "the agent of a server that became unreachable is still running"
        assert GRACE <= ended - cut_off <= limit, f"the agent ended {ended - cut_off:.1f} s after the cut"
        assert pid_gone(kernel_pid, 1.0), "the kernel outlived its agent"
        assert not folder.exists(), "the agent's watchdog leaves nothing behind on the host"
        # The server's side of the connection finds the agent gone too (keepalive, 25 s at most): the kernel is
        # reported dead instead of alive for ever.
        while kernel.poll() is None:
            assert time.monotonic() - cut_off < 40, "the server still shows the kernel of an unreachable host alive"
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(kernel.lifecycle.wait_changed(), 1)
        noticed = time.monotonic() - cut_off
        print(f"agent ended {ended - cut_off:.2f} s after its server became unreachable (grace {GRACE:g} s); "
              f"the server noticed after {noticed:.2f} s")  # fmt: skip
    finally:
        set_link(up=True)
        await kernel.shutdown(grace=0)
        await backend.close()
