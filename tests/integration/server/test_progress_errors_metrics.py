"""What clients and operators see through a real jupyter server: progress events, HTTP errors, metrics, the folder."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
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
    # jupyter_server's sessions handler answers any error with 500, but the reason now reaches its message.
    session = {"path": "nb.ipynb", "type": "notebook", "kernel": {"name": "refused-user"}}
    code, body = await server.request("POST", "/api/sessions", session, raise_error=False)
    assert code >= 400 and "not allowed to start kernel" in body["message"], (code, body)
    assert await server.kernel_ids() == [], "a failed start must not stay listed"
    metrics = await server.request("GET", "/metrics")
    assert metric(metrics, "gateway_provisioners_kernel_failures_total", backend="local", reason="LaunchTimeout") == 1
    # NotAuthorized twice: the kernel request and the session request.
    assert metric(metrics, "gateway_provisioners_kernel_failures_total", backend="none", reason="NotAuthorized") == 2
    # The failed starts are not left among jupyter_client's pending kernels: a server stopping with a kernel to shut
    # down stops at SIGTERM (its cleanup used to end with "Kernel does not exist" and the process never exited).
    await server.request("POST", "/api/kernels", {"name": local_spec})
    assert server.terminate(timeout=30) == 0, server.log_tail()
    assert "Kernel does not exist" not in server.log_tail(200)


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
