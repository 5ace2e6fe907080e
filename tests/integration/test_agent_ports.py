"""The agent never reports a kernel with a port another process took between its release and the kernel's bind."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import psutil
import pytest

from gateway_provisioners.adapters.local import LocalBackend
from gateway_provisioners.core.errors import KernelExited
from gateway_provisioners.core.kernel import RemoteKernel
from gateway_provisioners.core.launch import LaunchSpec, build_kernel_env

from ..conftest import AS_ROOT

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="port ownership is checked through Linux /proc"),
]

# A stand-in kernel: reads its connection file and has the five ports bound and listening by another process —
# in its own process group (a child of the kernel) or in a new session (someone else entirely).
FAKE_KERNEL = r"""
import json, os, signal, socket, sys, time
info = json.load(open(sys.argv[1]))
def listen_all():
    held = []
    for name in ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port"):
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", info[name])); s.listen(); held.append(s)
    time.sleep(600)
if os.fork() == 0:
    if sys.argv[2] == "other-session":
        os.setsid()
    listen_all()
signal.pause()
"""


async def launch(tmp_path: Path, who: str) -> RemoteKernel:
    script = tmp_path / "fake_kernel.py"
    script.write_text(FAKE_KERNEL)
    kernel_id = str(uuid.uuid4())
    kernel = RemoteKernel(LocalBackend(), kernel_id)
    argv = [sys.executable, str(script), "{connection_file}", who]
    env = build_kernel_env(os.environ, {}, ["PATH"])
    spec = LaunchSpec(kernel_id, argv, env=env, kernel_ip="127.0.0.1", launch_timeout=20, allow_root=AS_ROOT)
    await kernel.start(spec)
    return kernel


async def test_ports_bound_by_the_kernels_own_child_count_as_ready(tmp_path: Path) -> None:
    kernel = await launch(tmp_path, "own-group")
    try:
        assert kernel.poll() is None
    finally:
        await kernel.shutdown(grace=0)


async def test_ports_taken_by_another_process_are_never_reported(tmp_path: Path) -> None:
    try:
        with pytest.raises(KernelExited, match="another process took one of the kernel's ports") as caught:
            await launch(tmp_path, "other-session")
        assert sum("starting it again on new ports" in line for line in caught.value.diagnostics) == 2
    finally:  # the port thieves live in sessions of their own: the agent rightly leaves them alone
        for proc in psutil.process_iter(["cmdline"]):
            if str(tmp_path) in " ".join(proc.info["cmdline"] or []):
                proc.kill()
