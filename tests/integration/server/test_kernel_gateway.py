"""This library's kernels through a real Jupyter Kernel Gateway 3 process: REST to create and delete, its WebSocket to
execute, and a clean log when it stops.

Kernel Gateway is a Jupyter application of its own, not a jupyter_server ``ServerApp``: it loads no server extension,
so the gateway_provisioners.server extension (persistence, progress events, metrics) does not run there
(docs/server.md says what does). The provisioners themselves work as in any jupyter_client host.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from ...conftest import pid_gone
from ..ssh.conftest import ssh_keys, ssh_spec, sshd  # noqa: F401 (fixtures)
from .conftest import JupyterServer, execute

pytestmark = pytest.mark.integration

pytest.importorskip("kernel_gateway", reason="jupyter_kernel_gateway is in the 'test' extra")


class KernelGateway(JupyterServer):
    """A ``jupyter kernelgateway`` process (its default WebSocket personality: jupyter_server's kernel API)."""

    status_path = "/api"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "kernel_gateway",
            f"--KernelGatewayApp.port={self.port}", "--KernelGatewayApp.port_retries=0",
            "--KernelGatewayApp.ip=127.0.0.1", f"--KernelGatewayApp.auth_token={self.token}",
            "--JupyterWebsocketPersonality.list_kernels=True",
        ]  # fmt: skip


@pytest.fixture(params=["local", "ssh"])
def gateway_spec(request: pytest.FixtureRequest, local_spec: str) -> str:
    if request.param == "ssh":
        return str(request.getfixturevalue("ssh_spec")("gp-ssh", agent_watchdog=120))
    return local_spec


async def test_kernels_through_kernel_gateway(tmp_path: Path, server_env: dict[str, str], gateway_spec: str) -> None:
    gateway = KernelGateway(tmp_path, env=server_env)
    await gateway.start()
    try:
        # Kernel Gateway passes the body's KERNEL_* values on by itself (over PATH only of its own environment).
        body: dict[str, Any] = {"name": gateway_spec, "env": {"KERNEL_USERNAME": "gp-tester", "KERNEL_EXTRA": "ok"}}
        kernel = await gateway.request("POST", "/api/kernels", body)
        assert kernel["name"] == gateway_spec
        status, out = await execute(gateway, kernel["id"], "import os; x = 6 * 7; print(os.environ['KERNEL_EXTRA'])")
        assert (status, out.strip()) == ("ok", "ok")
        status, out = await execute(gateway, kernel["id"], "print(x)")
        assert (status, out.strip()) == ("ok", "42"), "the kernel must keep its state between WebSocket connections"
        status, _ = await execute(
            gateway, kernel["id"], "import time; time.sleep(60)", timeout=20,
            on_busy=lambda: gateway.request("POST", f"/api/kernels/{kernel['id']}/interrupt"),
        )  # fmt: skip
        assert status == "error", "the interrupt did not reach the kernel"
        assert (await execute(gateway, kernel["id"], "print(x)"))[1].strip() == "42", "an interrupt keeps the state"
        await gateway.request("POST", f"/api/kernels/{kernel['id']}/restart")
        assert (await execute(gateway, kernel["id"], "print('x' in globals())"))[1].strip() == "False"
        await gateway.request("DELETE", f"/api/kernels/{kernel['id']}")
        assert kernel["id"] not in await gateway.kernel_ids()

        # A kernel still running when the gateway stops is ended by it (its agent, the host's spawner session too).
        other = await gateway.request("POST", "/api/kernels", {"name": gateway_spec})
        _, out = await execute(gateway, other["id"], "import os; print(os.getppid())")  # the kernel's agent
        agent_pid = int(out.strip())
        assert gateway.terminate() == 0
        assert pid_gone(agent_pid, 10), "the gateway must end its kernels' agents when it stops"
    finally:
        if gateway.proc is not None and gateway.proc.poll() is None:
            gateway.kill()
    log = gateway.log_path.read_text()
    assert "Traceback" not in log and "Task was destroyed" not in log, log[-3000:]
    assert os.path.getsize(gateway.log_path) > 0
