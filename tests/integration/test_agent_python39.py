"""The agent runs on the oldest Python it promises (3.9), next to a kernel of any Python."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from jupyter_client.asynchronous import AsyncKernelClient

from gateway_provisioners.adapters.local import LocalBackend
from gateway_provisioners.core.kernel import RemoteKernel
from gateway_provisioners.core.launch import LaunchSpec, build_kernel_env

from ..conftest import AS_ROOT

pytestmark = pytest.mark.integration


def find_python39() -> str | None:
    """A working Python 3.9: on PATH, or installed by pyenv (whose shims may not be active)."""
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [shutil.which("python3.9"), *sorted(str(p) for p in pyenv_root.glob("versions/3.9*/bin/python3.9"))]
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import venv"], capture_output=True)
        if probe.returncode == 0:
            return candidate
    return None


@pytest.fixture(scope="module")
def python39(tmp_path_factory: pytest.TempPathFactory) -> str:
    found = find_python39()
    if found is None:
        pytest.skip("no working python3.9 here: the agent's Python 3.9 compatibility is not checked on this machine")
    venv = tmp_path_factory.mktemp("py39") / "venv"
    subprocess.run([found, "-m", "venv", str(venv)], check=True, capture_output=True)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "-q", "cryptography"], capture_output=True, text=True)
    assert install.returncode == 0, f"pip install cryptography for Python 3.9 failed: {install.stderr[-1000:]}"
    return python


async def test_agent_on_python39_runs_a_kernel(python39: str) -> None:
    version = subprocess.run(
        [python39, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True
    )
    assert version.stdout.strip() == "(3, 9)"
    kernel_id = str(uuid.uuid4())
    kernel = RemoteKernel(LocalBackend(python=python39), kernel_id)
    spec = LaunchSpec(
        kernel_id,
        [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        env=build_kernel_env(os.environ, {}, ["PATH", "HOME"]),
        kernel_ip="127.0.0.1",
        allow_root=AS_ROOT,
    )
    info = await kernel.start(spec)
    try:
        agent_exe = Path(f"/proc/{kernel.handle.data['pid']}/exe").resolve()
        assert "3.9" in agent_exe.name or "3.9" in str(agent_exe)
        client = AsyncKernelClient()
        client.load_connection_info(info)
        client.start_channels()
        await client.wait_for_ready(timeout=30)
        reply = await client.execute_interactive("1 + 1", timeout=30)
        client.stop_channels()
        assert reply["content"]["status"] == "ok"
        assert await kernel.restart(grace=1) == info
    finally:
        await kernel.shutdown(grace=1)
    assert kernel.poll() is not None
