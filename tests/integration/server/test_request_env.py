"""Per-request ``KERNEL_*`` values in ``POST /api/kernels``'s ``env``, checked like every per-launch value, and kept
for the restart of a kernel reattached by a new server process."""

from __future__ import annotations

import pytest

from .conftest import JupyterServer, execute

pytestmark = pytest.mark.integration

SHOW_USER = "import os; print(os.environ['KERNEL_USERNAME'], 'x' in globals())"


async def test_request_env_reaches_the_kernel_and_survives_restarts(make_server, local_spec: str) -> None:
    server: JupyterServer = await make_server()
    kernel = await server.request("POST", "/api/kernels", {"name": local_spec, "env": {"KERNEL_USERNAME": "alice"}})
    kernel_id = kernel["id"]
    assert await execute(server, kernel_id, "x = 1") == ("ok", "")
    assert (await execute(server, kernel_id, SHOW_USER))[1].split() == ["alice", "True"]

    server.kill()
    await server.start()
    await server.wait_listed(kernel_id)
    await server.request("POST", f"/api/kernels/{kernel_id}/restart")  # a restart by the new server process
    assert (await execute(server, kernel_id, SHOW_USER))[1].split() == ["alice", "False"]
    assert kernel_id in server.records()
    await server.request("DELETE", f"/api/kernels/{kernel_id}")


BAD_ENV = [
    ({"KERNEL_LAUNCH_TIMEOUT": "soon"}, 400, "KERNEL_LAUNCH_TIMEOUT"),
    ({"KERNEL_USERNAME": "root"}, 403, "root"),
    ({"PATH": "/tmp"}, 400, "PATH"),
    ({"KERNEL_USERNAME": 7}, 400, "strings"),
]


async def test_bad_request_env_is_refused_with_the_reason(make_server, local_spec: str) -> None:
    server: JupyterServer = await make_server()
    for env, status, words in BAD_ENV:
        code, body = await server.request("POST", "/api/kernels", {"name": local_spec, "env": env}, raise_error=False)
        assert (code, words in body["message"]) == (status, True), f"{env}: {code} {body}"
    assert await server.kernel_ids() == []
