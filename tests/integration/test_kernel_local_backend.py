"""``RemoteKernel`` with the real agent and a real ipykernel through the local backend: the whole success path, and
a platform that ends the resource of a ready kernel."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from gateway_provisioners.adapters.local import LocalBackend
from gateway_provisioners.core.backend import Observation, PlatformState
from gateway_provisioners.core.kernel import RemoteKernel
from gateway_provisioners.core.launch import LaunchSpec
from gateway_provisioners.core.lifecycle import KernelPhase

from ..conftest import AS_ROOT

pytestmark = pytest.mark.integration


def ipykernel_spec(kernel_id: str, home: Path) -> LaunchSpec:
    """A real ipykernel of this interpreter, on loopback."""
    return LaunchSpec(
        kernel_id,
        [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", str(home))},
        kernel_ip="127.0.0.1",
        launch_timeout=60,
        allow_root=AS_ROOT,
    )


async def test_real_agent_through_the_local_backend(tmp_path: Path) -> None:
    backend = LocalBackend(log_dir=str(tmp_path))
    kernel = RemoteKernel(backend, "local-success")
    spec = ipykernel_spec("local-success", tmp_path)
    try:
        info = await kernel.start(spec)
        assert kernel.phase is KernelPhase.READY
        assert info["ip"] == "127.0.0.1" and info["transport"] == "tcp" and info["key"]
        ports = [info[name] for name in ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port")]
        assert len(set(ports)) == 5
        assert kernel.poll() is None and kernel.agent_alive
        first_pid = kernel.kernel_pid
        assert first_pid and os.getpgid(first_pid) == first_pid  # the kernel leads its own process group

        await kernel.signal(0)
        await kernel.interrupt()  # ipykernel ignores SIGINT while idle
        assert kernel.poll() is None and kernel.phase is KernelPhase.READY

        await kernel.kill_kernel()
        assert await asyncio.wait_for(kernel.wait(), 30) == -signal.SIGKILL
        assert kernel.phase is KernelPhase.EXITED and kernel.agent_alive

        assert await kernel.restart(grace=1) == info  # same ports, same key
        assert kernel.phase is KernelPhase.READY and kernel.poll() is None
        assert kernel.kernel_pid not in (None, first_pid)
    finally:
        await kernel.shutdown(grace=1)
        await backend.close()
    assert kernel.phase is KernelPhase.TERMINATED
    assert kernel.poll() is not None
    assert kernel.handle is None


@pytest.mark.parametrize("ends_with_resource", [True, False])
async def test_platform_ending_the_resource_ends_a_ready_kernel(tmp_path: Path, ends_with_resource: bool) -> None:
    class Backend(LocalBackend):
        kernel_ends_with_resource = ends_with_resource

    backend = Backend(log_dir=str(tmp_path))
    kernel = RemoteKernel(backend, "platform-ends")
    spec = ipykernel_spec("platform-ends", tmp_path)
    await kernel.start(spec)
    handle = kernel.handle
    assert handle is not None
    try:
        # The platform says the resource is gone (a service removed from outside) while the agent still answers.
        handle.update(Observation(PlatformState.GONE, reason="service removed", exit_code=137))
        if ends_with_resource:
            assert kernel.phase is KernelPhase.FAILED and kernel.poll() == 137
            assert not kernel.agent_alive, "a restart must not reuse an agent whose resource is going away"
            assert "service removed" in str(kernel.lifecycle.error)
        else:
            assert kernel.phase is KernelPhase.READY and kernel.poll() is None and kernel.agent_alive
    finally:
        await kernel.shutdown(grace=1)  # the agent still ends on the shutdown request
        while handle.observation.state is not PlatformState.EXITED:  # the backend sees the agent process end
            await asyncio.wait_for(handle.wait_changed(), 10)
        await backend.close()
    assert kernel.handle is None
