"""Kernels outlive their jupyter server: kill -9 or SIGTERM it, start it again, the same kernel answers with its state.

Everything goes through a real ``jupyter server`` subprocess, its REST API and kernel WebSockets.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path

import pytest

from gateway_provisioners.core.kernel import REATTACH_TIMEOUT

from ...conftest import pid_gone
from .conftest import JupyterServer, agent_alive, execute
from .test_progress_errors_metrics import metric

pytestmark = pytest.mark.integration


async def start_kernel_with_state(server: JupyterServer, spec: str) -> str:
    kernel = await server.request("POST", "/api/kernels", {"name": spec})
    status, _ = await execute(server, kernel["id"], "x = 42")
    assert status == "ok"
    return str(kernel["id"])


@pytest.mark.parametrize("store", ["file", "sqlite", "postgres"])
async def test_kernel_survives_kill_9_of_the_server(
    make_server, local_spec: str, store: str, request: pytest.FixtureRequest
) -> None:
    store_path = request.getfixturevalue("postgres_url") if store == "postgres" else ""
    server: JupyterServer = await make_server(store=store, store_path=store_path)
    kernel_id = await start_kernel_with_state(server, local_spec)
    record = server.records()[kernel_id]
    assert record["kernel_name"] == local_spec

    server.kill()
    assert agent_alive(record), "the kernel's agent must outlive its server"
    await server.start()
    await server.wait_listed(kernel_id)
    status, out = await execute(server, kernel_id, "print(x)")
    assert (status, out.strip()) == ("ok", "42")
    metrics = await server.request("GET", "/metrics")
    assert metric(metrics, "gateway_provisioners_kernels_reattached_total", backend="local") == 1
    assert metric(metrics, "gateway_provisioners_kernels", backend="local", phase="ready") == 1

    await server.request("DELETE", f"/api/kernels/{kernel_id}")
    assert kernel_id not in await server.kernel_ids()
    assert kernel_id not in server.records(), "a deleted kernel's record must be gone"
    pid = record["provisioner_info"]["gateway_provisioners"]["handle"]["pid"]
    assert pid_gone(int(pid), 5), "the agent must end with the deleted kernel"


async def test_kernel_survives_sigterm_of_the_server(make_server, local_spec: str) -> None:
    server: JupyterServer = await make_server()
    kernel_id = await start_kernel_with_state(server, local_spec)
    record = server.records()[kernel_id]

    assert server.terminate() == 0
    assert agent_alive(record), "a clean stop must leave remote kernels running for the next server"
    log = server.log_path.read_text()
    assert "Traceback" not in log and "Task was destroyed" not in log, log[-3000:]
    assert kernel_id in server.records()
    await server.start()
    await server.wait_listed(kernel_id)
    status, out = await execute(server, kernel_id, "print(x)")
    assert (status, out.strip()) == ("ok", "42")
    await server.request("DELETE", f"/api/kernels/{kernel_id}")
    assert server.records() == {}


async def test_kernel_gone_while_server_down_is_forgotten(make_server, local_spec: str) -> None:
    server: JupyterServer = await make_server()
    kernel_id = await start_kernel_with_state(server, local_spec)
    handle = server.records()[kernel_id]["provisioner_info"]["gateway_provisioners"]["handle"]
    server.kill()
    os.killpg(int(handle["kernel_pgid"]), 9)
    os.kill(int(handle["pid"]), 9)
    assert pid_gone(int(handle["pid"]), 5)

    await server.start()
    answering = time.monotonic()
    await wait_for_no_records(server)
    took = time.monotonic() - answering
    # The platform (the agent's pid is gone) says so at once: the record goes well within the reattach deadline.
    assert took < REATTACH_TIMEOUT / 2, f"a gone kernel took {took:.1f} s to be forgotten\n{server.log_tail()}"
    assert kernel_id not in await server.kernel_ids()
    assert f"stored kernel {kernel_id} [local] is gone" in server.log_path.read_text()


async def wait_for_no_records(server: JupyterServer, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while server.records():
        assert time.monotonic() < deadline, f"records left: {list(server.records())}\n{server.log_tail()}"
        await asyncio.sleep(0.1)


async def test_file_store_is_private(make_server, local_spec: str) -> None:
    server: JupyterServer = await make_server()
    kernel_id = await start_kernel_with_state(server, local_spec)
    folder = Path(server.store_path) / server.scope
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / f"{kernel_id}.json").stat().st_mode) == 0o600
    await server.request("DELETE", f"/api/kernels/{kernel_id}")


async def test_reattached_kernel_can_be_interrupted_and_restarted(make_server, local_spec: str) -> None:
    server: JupyterServer = await make_server()
    kernel_id = await start_kernel_with_state(server, local_spec)
    server.kill()
    await server.start()
    await server.wait_listed(kernel_id)

    started = time.monotonic()
    status, _ = await execute(
        server, kernel_id, "import time; print('sleeping', flush=True); time.sleep(60)",
        on_busy=lambda: server.request("POST", f"/api/kernels/{kernel_id}/interrupt"),
    )  # fmt: skip
    assert status == "error" and time.monotonic() - started < 10, "the interrupt did not reach the kernel"
    assert (await execute(server, kernel_id, "print(x)"))[1].strip() == "42", "an interrupt must keep the state"

    await server.request("POST", f"/api/kernels/{kernel_id}/restart")
    assert (await execute(server, kernel_id, "print('x' in globals())"))[1].strip() == "False"
    await server.request("DELETE", f"/api/kernels/{kernel_id}")
    assert server.records() == {}


async def test_automatic_restart_after_the_agent_died_is_stored(make_server, local_spec: str) -> None:
    """jupyter_server's restarter brings back a kernel whose agent was killed: the new agent's record is what the
    next server process reattaches."""
    server: JupyterServer = await make_server()
    kernel_id = await start_kernel_with_state(server, local_spec)
    old = server.records()[kernel_id]["provisioner_info"]["gateway_provisioners"]["handle"]
    os.killpg(int(old["kernel_pgid"]), 9)
    os.kill(int(old["pid"]), 9)

    deadline = time.monotonic() + 60
    while True:  # the restarter polls every few seconds, then starts a new agent
        handle = server.records().get(kernel_id, {}).get("provisioner_info", {}).get("gateway_provisioners", {})
        if handle.get("handle", {}).get("pid") not in (None, old["pid"]):
            break
        assert time.monotonic() < deadline, f"no new agent stored:\n{server.log_tail()}"
        await asyncio.sleep(0.2)
    server.kill()
    await server.start()
    await server.wait_listed(kernel_id)
    assert (await execute(server, kernel_id, "print('x' in globals())"))[1].strip() == "False"
    await server.request("DELETE", f"/api/kernels/{kernel_id}")
    assert server.records() == {}


async def test_sigterm_shuts_kernels_down_when_told_not_to_keep_them(make_server, local_spec: str) -> None:
    server: JupyterServer = await make_server(
        store="sqlite", extra_args=("--GatewayProvisionersServer.keep_kernels_on_shutdown=False",)
    )
    kernel_id = await start_kernel_with_state(server, local_spec)
    pid = int(server.records()[kernel_id]["provisioner_info"]["gateway_provisioners"]["handle"]["pid"])
    assert server.terminate() == 0
    assert pid_gone(pid, 5), "the kernel's agent must end with the server"
    assert server.records() == {}, "a kernel shut down with the server must leave no record"


async def test_a_bad_store_setting_is_one_error_line_and_the_server_still_stops(make_server) -> None:
    pytest.importorskip("psycopg")
    unreachable = "postgresql://gp:hunter2@127.0.0.1:1/kernels?connect_timeout=2"
    server: JupyterServer = await make_server(store="postgres", store_path=unreachable)
    assert server.terminate() == 0, "the server must stop cleanly although the extension did not load"
    log = server.log_path.read_text()
    errors = [line for line in log.splitlines() if "gateway_provisioners.server is not active" in line]
    assert len(errors) == 1 and "cannot use the PostgreSQL store" in errors[0], log[-3000:]
    assert "host=127.0.0.1" in errors[0] and "hunter2" not in log, errors
    assert "AttributeError" not in log, log[-3000:]
