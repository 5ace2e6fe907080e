"""What a hostile local user or a chaos tester tried against the agent and the local backend (issue 11, items 1, 2, 3
and 10): kernel logs private and never written through a planted link; a kernel that would really run as root
refused whatever name was claimed; an agent whose server went away ends itself and its kernel; the kernel's whole
process group ends when its agent is killed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from gateway_provisioners.adapters.local import LocalBackend
from gateway_provisioners.agent import agent_path
from gateway_provisioners.core.errors import KernelExited, NotAuthorized
from gateway_provisioners.core.kernel import RemoteKernel
from gateway_provisioners.core.launch import LaunchSpec, build_kernel_env

from ..conftest import AS_ROOT, pid_gone

pytestmark = pytest.mark.integration

IPYKERNEL = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]


def spec_for(argv: list[str], **extra: object) -> LaunchSpec:
    kernel_id = str(uuid.uuid4())
    env = build_kernel_env(os.environ, {}, ["PATH", "HOME"])
    options: dict = {"kernel_ip": "127.0.0.1", "launch_timeout": 30, "allow_root": AS_ROOT, **extra}
    return LaunchSpec(kernel_id, list(argv), env=env, **options)


async def wait_until(condition, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


# --- item 1: the kernel's log ---------------------------------------------------------------------------------------


async def test_kernel_log_is_private_and_a_planted_link_is_not_followed(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    log_dir.chmod(0o1777)  # shared, like /tmp: another user may plant files here
    spec = spec_for(IPYKERNEL)
    victim = tmp_path / "victim.txt"
    victim.write_text("")
    # The attacker guesses the path the kernel's log used to get and plants a link there.
    (log_dir / f"kernel-{spec.kernel_id}.log").symlink_to(victim)
    backend = LocalBackend(log_dir=str(log_dir))
    kernel = RemoteKernel(backend, spec.kernel_id)
    try:
        await kernel.start(spec)
        assert kernel.handle is not None
        log_file = Path(kernel.handle.data["log_file"])
        assert log_file.is_file() and not log_file.is_symlink()
        folder = log_file.parent
        assert folder.parent == log_dir and folder.name != f"kernel-{spec.kernel_id}.log"
        assert stat.S_IMODE(folder.lstat().st_mode) == 0o700 and folder.lstat().st_uid == os.geteuid()
        assert stat.S_IMODE(log_file.lstat().st_mode) == 0o600
        await kernel.interrupt()  # the agent logs it: the log is written to
        assert victim.read_text() == "", "the agent wrote through a planted link"
    finally:
        await kernel.shutdown(grace=1)
        await backend.close()
    assert not log_file.exists() and not folder.exists(), "a clean shutdown removes the log and its folder"


@pytest.mark.parametrize("planted", ["link", "file"])
def test_agent_refuses_a_log_file_it_did_not_create(tmp_path: Path, planted: str) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    target = private / "kernel.log"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    if planted == "link":
        target.symlink_to(victim)
    else:
        target.write_text("someone else's file\n")
    params = spec_for(IPYKERNEL).agent_params()
    result = subprocess.run(
        [sys.executable, str(agent_path()), "--params", "-", "--log-file", str(target)],
        input=json.dumps(params) + "\n", capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "exists already" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert victim.read_text() == "keep me\n"


def test_agent_refuses_a_log_file_in_a_folder_others_may_write(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    params = spec_for(IPYKERNEL).agent_params()
    result = subprocess.run(
        [sys.executable, str(agent_path()), "--params", "-", "--log-file", str(shared / "kernel.log")],
        input=json.dumps(params) + "\n", capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2 and "others may write to it" in result.stderr, result.stderr
    assert not (shared / "kernel.log").exists()


# --- item 2: root, whatever name was claimed ------------------------------------------------------------------------


async def test_local_kernel_that_would_run_as_root_is_refused_whatever_name_was_claimed() -> None:
    if not AS_ROOT:
        pytest.skip("the kernel runs as this process's user, which is not root here")
    spec = spec_for(IPYKERNEL, allow_root=False, username="alice")  # a client claimed KERNEL_USERNAME=alice
    kernel = RemoteKernel(LocalBackend(), spec.kernel_id)
    with pytest.raises(NotAuthorized, match=r"uid 0.*allow_root_kernels \(GP_ALLOW_ROOT_KERNELS\)"):
        await kernel.start(spec)
    assert kernel.handle is None


async def test_agent_refuses_to_run_a_kernel_as_root_where_the_server_cannot_tell() -> None:
    """Backends whose kernel uid only the target knows (SSH, YARN) rely on the agent's own check."""
    if not AS_ROOT:
        pytest.skip("the agent runs as this process's user, which is not root here")

    class UidUnknownHere(LocalBackend):
        def kernel_uid(self, spec: LaunchSpec) -> int | None:
            return None

    marker = Path(f"/tmp/gp-root-probe-{uuid.uuid4().hex}")
    spec = spec_for([sys.executable, "-c", f"open({str(marker)!r}, 'w')"], allow_root=False)
    backend = UidUnknownHere()
    kernel = RemoteKernel(backend, spec.kernel_id)
    try:
        with pytest.raises(KernelExited, match=r"as root \(uid 0\).*GP_ALLOW_ROOT_KERNELS"):
            await kernel.start(spec)
    finally:
        await backend.close()
    assert not marker.exists(), "the kernel ran as root"


# --- item 3: the watchdog -------------------------------------------------------------------------------------------


async def test_agent_whose_server_went_away_ends_itself_and_its_kernel(tmp_path: Path) -> None:
    grace = 2.0
    spec = spec_for(IPYKERNEL, agent_watchdog=grace)
    backend = LocalBackend()
    kernel = RemoteKernel(backend, spec.kernel_id)
    try:
        await kernel.start(spec)
        assert kernel.handle is not None
        agent_pid, kernel_pid = kernel.handle.data["pid"], kernel.kernel_pid
        assert kernel_pid is not None
        await kernel._close_control()  # the server is gone: its connection closes, nobody reconnects
        gone_at = time.monotonic()
        assert await wait_until(lambda: kernel.handle.observation.state.is_over, grace + 3), "agent still running"
        assert time.monotonic() - gone_at >= grace * 0.9, "the watchdog must give the server its grace"
        assert pid_gone(kernel_pid, 1.0), "the agent's kernel outlived it"
        assert pid_gone(agent_pid, 1.0)
    finally:
        await kernel.shutdown(grace=0)
        await backend.close()


# A server process: starts one kernel through the local backend, prints the agent's and kernel's pids, then waits to
# be killed (it never shuts the kernel down).
SERVER = r"""
import asyncio, json, os, sys
from gateway_provisioners.adapters.local import LocalBackend
from gateway_provisioners.core.kernel import RemoteKernel
from gateway_provisioners.core.launch import LaunchSpec, build_kernel_env

async def main():
    spec = LaunchSpec("killed-server", [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                      env=build_kernel_env(os.environ, {}, ["PATH", "HOME"]), kernel_ip="127.0.0.1",
                      agent_watchdog=float(sys.argv[1]), allow_root=sys.argv[2] == "root")
    kernel = RemoteKernel(LocalBackend(), spec.kernel_id)
    await kernel.start(spec)
    print(json.dumps([kernel.handle.data["pid"], kernel.kernel_pid]), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def test_agent_whose_server_was_killed_ends_itself_and_its_kernel() -> None:
    grace = 2.0
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(grace), "root" if AS_ROOT else "user"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        agent_pid, kernel_pid = json.loads(server.stdout.readline())  # type: ignore[union-attr]
    finally:
        server.kill()  # kill -9: no shutdown, no clean-up, its connections just close
        server.wait(10)
    killed = time.monotonic()
    assert pid_gone(agent_pid, grace + 3), f"agent still running {grace + 3:g} s after its server was killed"
    assert time.monotonic() - killed >= grace * 0.9, "the watchdog must give the server its grace"
    assert pid_gone(kernel_pid, 1.0), "the kernel outlived its agent"


def test_watchdog_is_on_by_default() -> None:
    assert LaunchSpec("k", ["python"]).agent_params()["watchdog"] > 0
    result = subprocess.run([sys.executable, str(agent_path()), "--help"], capture_output=True, text=True, timeout=30)
    assert "0 = never (default 60" in " ".join(result.stdout.split())


# --- item 10: the kernel's children when the agent is killed --------------------------------------------------------

# A kernel that starts a child (in its own process group, as kernels' subprocesses are) and never becomes ready.
KERNEL_WITH_CHILD = r"""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open(sys.argv[1], "w").write(str(child.pid))
time.sleep(600)
"""


async def test_killing_the_agent_ends_what_its_kernel_started(tmp_path: Path) -> None:
    script, pid_file = tmp_path / "kernel.py", tmp_path / "child.pid"
    script.write_text(KERNEL_WITH_CHILD)
    spec = spec_for([sys.executable, str(script), str(pid_file)])
    backend = LocalBackend()
    kernel = RemoteKernel(backend, spec.kernel_id)
    launch = asyncio.ensure_future(kernel.start(spec))
    try:
        assert await wait_until(lambda: pid_file.exists() and pid_file.read_text(), 20), "the kernel did not start"
        child = int(pid_file.read_text())
        assert kernel.handle is not None
        folder = Path(kernel.handle.data["log_file"]).parent
        os.kill(kernel.handle.data["pid"], 9)  # the agent, mid-launch
        with pytest.raises(KernelExited):
            await launch
        assert pid_gone(child, 3.0), "a process the kernel started outlived its killed agent by 3 s"
        assert not folder.exists(), "the killed agent's folder (log, connection file with the key) must be removed"
    finally:
        launch.cancel()
        await backend.close()
        if pid_file.exists() and pid_file.read_text():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), 9)  # before the fix it lived on
