"""What clients and operators see through a real jupyter server: progress events, HTTP errors, metrics, the folder."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
import uuid
from pathlib import Path

import pytest

from ...conftest import write_kernel_spec
from .conftest import JupyterServer, execute

pytestmark = pytest.mark.integration

SCHEMA_ID = "https://events.jupyter.org/gateway_provisioners/kernel_progress/v1"


async def test_subscriber_sees_every_phase_of_a_launch(make_server, local_spec: str) -> None:
    server: JupyterServer = await make_server()
    ws = await server.websocket("/api/events/subscribe")
    kernel = await server.request("POST", "/api/kernels", {"name": local_spec})
    phases: list[str] = []
    deadline = time.monotonic() + 30
    while "ready" not in phases:
        raw = await asyncio.wait_for(ws.read_message(), max(0.1, deadline - time.monotonic()))
        assert raw is not None, "event WebSocket closed"
        event = json.loads(raw)
        if event.get("schema_id") == SCHEMA_ID and event["kernel_id"] == kernel["id"]:
            assert event["backend"] == "local" and event["kernel_name"] == local_spec
            assert isinstance(event["message"], str) and event["elapsed"] >= 0
            phases.append(event["phase"])
    ws.close()
    # The local backend skips 'pending' (nothing to queue or pull); every other phase of a launch is seen, in order.
    assert phases == ["submitted", "starting", "connecting", "ready"]

    metrics = await server.request("GET", "/metrics")
    assert metric(metrics, "gateway_provisioners_kernel_launches_total", backend="local", kernel_name=local_spec) == 1
    assert metric(metrics, "gateway_provisioners_kernel_launch_duration_seconds_count", backend="local") == 1
    assert metric(metrics, "gateway_provisioners_kernels", backend="local", phase="ready") == 1
    await server.request("DELETE", f"/api/kernels/{kernel['id']}")
    metrics = await server.request("GET", "/metrics")
    assert metric(metrics, "gateway_provisioners_kernels", backend="local", phase="ready") == 0


def metric(text: str, name: str, **labels: str) -> float:
    """The value of ``name`` with exactly ``labels`` in Prometheus' text format; 0 when absent."""
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}\{{(.*)\}} (\S+)$", line)
        if match and dict(re.findall(r'(\w+)="([^"]*)"', match.group(1))) == labels:
            return float(match.group(2))
    return 0.0


# (spec config or argv change, expected status, words the message must hold)
BAD_STARTS = {
    "unknown-setting": ({"lanch_timeout": 5}, 400, "did you mean 'launch_timeout'"),
    "bad-value": ({"launch_timeout": -1}, 400, "launch_timeout"),
    "refused-user": ({"unauthorized_users": ["gp-tester"]}, 403, "gp-tester"),
    "timeout": ({"launch_timeout": 2, "argv": [sys.executable, "-c", "import time; time.sleep(60)"]}, 504, "ready"),
    "unreachable": ({"provisioner": "distributed-provisioner", "remote_hosts": ["127.0.0.1:1"]}, 503, "127.0.0.1"),
}


async def test_failed_starts_answer_with_status_and_reason(make_server, jupyter_path: Path, local_spec: str) -> None:
    for name, (config, _, _) in BAD_STARTS.items():
        config = dict(config)
        argv = config.pop("argv", None)
        provisioner = config.pop("provisioner", "local-agent-provisioner")
        write_kernel_spec(jupyter_path, name, config=config, argv=argv, provisioner=provisioner)
    # Kernels are shut down at the server's stop (the Helm chart's setting), so that the stop meets the failed starts.
    server: JupyterServer = await make_server(
        extra_args=("--GatewayProvisionersServer.keep_kernels_on_shutdown=False",)
    )
    for name, (_, status, words) in BAD_STARTS.items():
        started = time.monotonic()
        code, body = await server.request("POST", "/api/kernels", {"name": name}, raise_error=False)
        took = time.monotonic() - started
        assert code == status, f"{name}: {code} {body}"
        assert words in body["message"], f"{name}: {body['message']!r}"
        assert "\n" not in body["message"]
        assert took < 15, f"{name}: the error took {took:.1f} s"
    # A session's kernel that cannot start: the same status and reason (jupyter_server's own handler answers 500).
    for name, (_, status, words) in BAD_STARTS.items():
        session = {"path": f"{name}.ipynb", "type": "notebook", "kernel": {"name": name}}
        code, body = await server.request("POST", "/api/sessions", session, raise_error=False)
        assert code == status, f"session {name}: {code} {body}"
        assert words in body["message"] and "\n" not in body["message"], f"session {name}: {body['message']!r}"
    assert await server.request("GET", "/api/sessions") == [], "a session whose kernel failed must not be listed"
    assert await server.kernel_ids() == [], "a failed start must not stay listed"
    metrics = await server.request("GET", "/metrics")
    # Each twice: the kernel request and the session request.
    assert metric(metrics, "gateway_provisioners_kernel_failures_total", backend="local", reason="LaunchTimeout") == 2
    assert metric(metrics, "gateway_provisioners_kernel_failures_total", backend="none", reason="NotAuthorized") == 2
    # The failed starts are not left among jupyter_client's pending kernels: a server stopping with a kernel to shut
    # down stops at SIGTERM (its cleanup used to end with "Kernel does not exist" and the process never exited).
    await server.request("POST", "/api/kernels", {"name": local_spec})
    assert server.terminate(timeout=30) == 0, server.log_tail()
    assert "Kernel does not exist" not in server.log_tail(200)


# Every start after the first never gets ready: its restarts time out.
FIRST_START_ONLY = """
import os, sys, time
marker = sys.argv[1]
if os.path.exists(marker):
    time.sleep(600)
open(marker, "w").close()
os.execv(sys.executable, [sys.executable, "-m", "ipykernel_launcher", "-f", sys.argv[2]])
"""


async def test_failed_restarts_answer_with_status_and_reason(make_server, jupyter_path: Path, tmp_path: Path) -> None:
    launch_timeout = 10.0
    argv = [sys.executable, "-c", FIRST_START_ONLY, str(tmp_path / "started-once"), "{connection_file}"]
    write_kernel_spec(jupyter_path, "first-start-only", argv=argv, config={"launch_timeout": launch_timeout})
    server: JupyterServer = await make_server()
    kernel = await server.request("POST", "/api/kernels", {"name": "first-start-only"})
    assert (await execute(server, kernel["id"], "print(6 * 7)"))[1].strip() == "42"

    started = time.monotonic()
    code, body = await server.request("POST", f"/api/kernels/{kernel['id']}/restart", raise_error=False)
    took = time.monotonic() - started
    assert code == 504, (code, body)
    assert "not ready after a restart" in body["message"] and "\n" not in body["message"], body
    assert took < 3 * launch_timeout, f"the restart's failure took {took:.1f} s"
    await server.request("DELETE", f"/api/kernels/{kernel['id']}")

    code, body = await server.request("POST", f"/api/kernels/{uuid.uuid4()}/restart", raise_error=False)
    assert code == 404, (code, body)


async def test_restart_refused_after_the_user_was_revoked(make_server, local_spec: str, jupyter_path: Path) -> None:
    """An operator revokes a user while the server is down; the reattached kernel's restart is refused with 403."""
    server: JupyterServer = await make_server()
    kernel = await server.request("POST", "/api/kernels", {"name": local_spec})
    server.kill()
    write_kernel_spec(jupyter_path, local_spec, config={"agent_watchdog": 120, "unauthorized_users": ["gp-tester"]})
    await server.start()
    await server.wait_listed(kernel["id"])
    code, body = await server.request("POST", f"/api/kernels/{kernel['id']}/restart", raise_error=False)
    assert code == 403, (code, body)
    assert "gp-tester" in body["message"] and "\n" not in body["message"], body
    await server.request("DELETE", f"/api/kernels/{kernel['id']}")


async def test_local_kernel_starts_in_the_notebooks_folder(make_server, local_spec: str) -> None:
    server: JupyterServer = await make_server()
    kernel = await server.request("POST", "/api/kernels", {"name": local_spec, "path": "sub dir/notebook.ipynb"})
    status, out = await execute(server, kernel["id"], "import os; print(os.getcwd())")
    assert status == "ok"
    assert out.strip() == str(server.root / "notebooks" / "sub dir")
    await server.request("DELETE", f"/api/kernels/{kernel['id']}")


async def test_pending_kernels_answer_at_once_and_a_failed_one_leaves_the_list(
    make_server, local_spec: str, jupyter_path: Path
) -> None:
    write_kernel_spec(jupyter_path, "never-ready", argv=[sys.executable, "-c", "import time; time.sleep(60)"],
                      config={"launch_timeout": 3})  # fmt: skip
    server: JupyterServer = await make_server(extra_args=("--MultiKernelManager.use_pending_kernels=True",))
    ws = await server.websocket("/api/events/subscribe")
    started = time.monotonic()
    good = await server.request("POST", "/api/kernels", {"name": local_spec})
    bad = await server.request("POST", "/api/kernels", {"name": "never-ready"})
    assert time.monotonic() - started < 1.5, "with pending kernels POST /api/kernels must not wait for the launch"
    assert {good["id"], bad["id"]} <= set(await server.kernel_ids())

    last: dict[str, dict] = {}
    deadline = time.monotonic() + 30
    while last.get(good["id"], {}).get("phase") != "ready" or last.get(bad["id"], {}).get("phase") != "failed":
        raw = await asyncio.wait_for(ws.read_message(), max(0.1, deadline - time.monotonic()))
        assert raw is not None, "event WebSocket closed"
        event = json.loads(raw)
        if event.get("schema_id") == SCHEMA_ID:
            last[event["kernel_id"]] = event
    ws.close()
    assert last[bad["id"]]["error"] == "LaunchTimeout" and "not ready" in last[bad["id"]]["message"]
    deadline = time.monotonic() + 2
    while bad["id"] in await server.kernel_ids():
        assert time.monotonic() < deadline, "a failed pending kernel must leave /api/kernels at once"
        await asyncio.sleep(0.05)
    assert (await execute(server, good["id"], "print(6 * 7)"))[1].strip() == "42"
    await server.request("DELETE", f"/api/kernels/{good['id']}")
