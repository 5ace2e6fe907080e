"""Persistence across a ``kill -9`` or SIGTERM of a real jupyter server, for kernels on SSH hosts and in Docker
containers.

The agent's watchdog (when on) must be longer than the few seconds between the two server processes here; the
kernels are deleted at the end, and the fixtures' own safety nets remove whatever a failed test leaves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ..docker.conftest import bridge_network, docker_client, kernel_image, make_variant  # noqa: F401 (fixtures)
from ..ssh.conftest import ssh_keys, ssh_spec, sshd  # noqa: F401 (fixtures)
from .conftest import JupyterServer, execute

pytestmark = pytest.mark.integration


@pytest.fixture(params=["ssh", "docker"])
def remote_spec(request: pytest.FixtureRequest, jupyter_path: Path) -> str:
    if request.param == "ssh":
        return str(request.getfixturevalue("ssh_spec")("gp-ssh"))
    return make_variant("docker-bridge", request, jupyter_path).spec("gp-docker")


@pytest.mark.parametrize("stop", ["kill -9", "SIGTERM"])
async def test_remote_kernel_survives_a_server_restart(make_server: Any, remote_spec: str, stop: str) -> None:
    server: JupyterServer = await make_server()
    kernel = await server.request("POST", "/api/kernels", {"name": remote_spec})
    kernel_id = kernel["id"]
    assert (await execute(server, kernel_id, "x = 42"))[0] == "ok"
    assert kernel_id in server.records()

    if stop == "SIGTERM":
        assert server.terminate() == 0
        log = server.log_path.read_text()
        assert "ControlConnection" not in log, "a kept kernel's control connection was left pending at shutdown"
        assert "Traceback" not in log and "Task was destroyed" not in log, log[-3000:]
    else:
        server.kill()
    await server.start()
    await server.wait_listed(kernel_id)
    status, out = await execute(server, kernel_id, "print(x)")
    assert (status, out.strip()) == ("ok", "42")

    await server.request("DELETE", f"/api/kernels/{kernel_id}")
    assert kernel_id not in await server.kernel_ids()
    assert kernel_id not in server.records()


async def test_sigterm_shutting_ssh_kernels_down_leaves_a_clean_log(make_server: Any, request: Any) -> None:
    """The server ends its SSH kernels at SIGTERM: the host's agent spawner session is still open when the event loop
    stops, and nothing of it may be left pending (asyncio's "Task was destroyed but it is pending!")."""
    spec = request.getfixturevalue("ssh_spec")("gp-ssh")
    end_kernels = "--GatewayProvisionersServer.keep_kernels_on_shutdown=False"
    server: JupyterServer = await make_server(extra_args=(end_kernels,))
    kernel = await server.request("POST", "/api/kernels", {"name": spec})
    assert (await execute(server, kernel["id"], "print(6 * 7)"))[1].strip() == "42"
    assert server.terminate() == 0
    log = server.log_path.read_text()
    assert "Shutting down 1 kernel" in log, log[-3000:]
    assert "Traceback" not in log and "Task was destroyed" not in log, log[-3000:]
    assert server.records() == {}, "a kernel shut down with the server must leave no record"
