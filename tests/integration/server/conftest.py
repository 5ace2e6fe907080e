"""A real ``jupyter server`` process with the gateway_provisioners.server extension, driven over REST and WebSocket.

Nothing runs in the test's process but the client: the server is a subprocess (so ``kill -9`` is real), kernels are
started by it through the provisioners, and the test talks to it only through its HTTP API and WebSockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from ...conftest import AS_ROOT, write_kernel_spec
from .postgres import cannot_run, run_postgres

EXTENSION = "gateway_provisioners.server"
# Long enough that a kernel outlives the gap between two server processes in these tests, whatever the agent's
# default watchdog is; short enough that a kernel a failed test leaves behind ends by itself.
WATCHDOG_SECONDS = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class JupyterServer:
    """One ``jupyter server`` process; :meth:`start` again after :meth:`kill` or :meth:`terminate` runs a new one on
    the same folders, store and port."""

    status_path = "/api/status"  # answers once the server serves requests

    def __init__(
        self,
        root: Path,
        *,
        env: dict[str, str],
        store: str = "file",
        store_path: str = "",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.root = root
        self.port = free_port()
        self.token = uuid.uuid4().hex
        self.store = store
        self.scope = uuid.uuid4().hex[:12]  # servers of different tests may share a database
        self.store_path = store_path or str(root / ("state/kernels.sqlite" if store == "sqlite" else "state/kernels"))
        self.extra_args = list(extra_args)
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / "server.log"
        self.http = AsyncHTTPClient()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "jupyter_server",
            f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1",
            "--ServerApp.open_browser=False", f"--ServerApp.root_dir={self.root / 'notebooks'}",
            f"--IdentityProvider.token={self.token}", "--ServerApp.allow_root=True",
            f"--ServerApp.jpserver_extensions={EXTENSION}=True",
            f"--GatewayProvisionersServer.store={self.store}",
            f"--GatewayProvisionersServer.store_path={self.store_path}",
            f"--GatewayProvisionersServer.store_scope={self.scope}",
            *self.extra_args,
        ]  # fmt: skip

    async def start(self, timeout: float = 60) -> None:
        log = open(self.log_path, "ab")  # the server writes to it until it ends
        log.write(f"--- start {time.strftime('%H:%M:%S')} ---\n".encode())
        log.flush()
        self.proc = subprocess.Popen(self.command(), env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"jupyter server exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError, HTTPClientError):
                await self.request("GET", self.status_path)
                return
            await asyncio.sleep(0.1)  # polling the server's readiness, bounded by the deadline
        raise AssertionError(f"jupyter server not answering after {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """``kill -9``: the server gets no chance to do anything."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    async def request(self, method: str, path: str, body: Any = None, *, raise_error: bool = True) -> Any:
        headers = {"Authorization": f"token {self.token}"}
        data = json.dumps(body) if body is not None else ("{}" if method == "POST" else None)
        request = HTTPRequest(self.url + path, method=method, headers=headers, body=data, request_timeout=120)
        response = await self.http.fetch(request, raise_error=raise_error)
        text = response.body.decode() if response.body else ""
        if not raise_error:
            return response.code, (json.loads(text) if text.startswith(("{", "[")) else text)
        return json.loads(text) if text.startswith(("{", "[")) else text

    async def websocket(self, path: str) -> WebSocketClientConnection:
        request = HTTPRequest(
            "ws" + self.url[4:] + path, headers={"Authorization": f"token {self.token}"}, request_timeout=30
        )
        return await websocket_connect(request)

    async def kernel_ids(self) -> list[str]:
        return [k["id"] for k in await self.request("GET", "/api/kernels")]

    async def wait_listed(self, kernel_id: str, timeout: float = 30) -> None:
        """The extension reattaches once the server's loop runs: poll the listing until the kernel is there."""
        deadline = time.monotonic() + timeout
        while kernel_id not in await self.kernel_ids():
            if time.monotonic() > deadline:
                raise AssertionError(f"kernel {kernel_id} not listed after {timeout} s:\n{self.log_tail()}")
            await asyncio.sleep(0.1)

    def records(self) -> dict[str, dict[str, Any]]:
        """The store's records, read as the next server would (the file store's folder, or the SQLite file)."""
        from gateway_provisioners.server.store import open_store

        store = open_store(self.store, self.store_path, self.scope)
        assert store is not None
        try:
            return store.load_all()
        finally:
            store.close()


async def execute(
    server: JupyterServer,
    kernel_id: str,
    code: str,
    timeout: float = 30,
    on_busy: Callable[[], Awaitable[Any]] | None = None,
) -> tuple[str, str]:
    """Run ``code`` over a new kernel WebSocket; returns (reply status, everything printed). ``on_busy`` is awaited
    once the kernel has begun executing it (to interrupt it, say)."""
    ws = await server.websocket(f"/api/kernels/{kernel_id}/channels?session_id={uuid.uuid4().hex}")
    try:
        msg_id = uuid.uuid4().hex
        header = {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": uuid.uuid4().hex,
                  "date": "", "version": "5.3"}  # fmt: skip
        content = {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                   "allow_stdin": False, "stop_on_error": True}  # fmt: skip
        await ws.write_message(json.dumps({"header": header, "parent_header": {}, "metadata": {},
                                           "content": content, "channel": "shell", "buffers": []}))  # fmt: skip
        printed: list[str] = []
        status = None
        idle = False
        deadline = time.monotonic() + timeout
        while status is None or not idle:  # the reply and the kernel's return to idle, in either order
            raw = await asyncio.wait_for(ws.read_message(), max(0.1, deadline - time.monotonic()))
            if raw is None:
                raise AssertionError(f"kernel WebSocket closed:\n{server.log_tail()}")
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "status" and msg["content"]["execution_state"] == "busy" and on_busy is not None:
                await on_busy()
            elif kind == "stream":
                printed.append(msg["content"]["text"])
            elif kind == "execute_reply":
                status = msg["content"]["status"]
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
        return status, "".join(printed)
    finally:
        ws.close()


def kill_stored_kernels(server: JupyterServer) -> None:
    """End what a failed test left: the agents and kernel process groups the store names (only those)."""
    with contextlib.suppress(Exception):
        for record in server.records().values():
            handle = record.get("provisioner_info", {}).get("gateway_provisioners", {}).get("handle", {})
            for pid, kill in ((handle.get("kernel_pgid"), os.killpg), (handle.get("pid"), os.kill)):
                if pid:
                    with contextlib.suppress(OSError):
                        kill(int(pid), signal.SIGKILL)


@pytest.fixture
def server_env(jupyter_path: Path, tmp_path: Path) -> dict[str, str]:
    """The server's environment: private Jupyter folders, the test's kernel specs, a non-root KERNEL_USERNAME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "GP_"))}
    for name in ("config", "data", "runtime"):
        (tmp_path / name).mkdir()
    env.update(
        JUPYTER_PATH=str(jupyter_path),
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
        JUPYTER_DATA_DIR=str(tmp_path / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        KERNEL_USERNAME="gp-tester",
    )
    if AS_ROOT:  # the kernels really run as this user: as an operator would, allow root kernels explicitly
        env["GP_ALLOW_ROOT_KERNELS"] = "true"
    (tmp_path / "notebooks" / "sub dir").mkdir(parents=True)
    return env


@pytest.fixture
def local_spec(jupyter_path: Path) -> str:
    write_kernel_spec(jupyter_path, "gp-local", config={"agent_watchdog": WATCHDOG_SECONDS})
    return "gp-local"


@pytest.fixture
async def make_server(tmp_path: Path, server_env: dict[str, str]) -> AsyncIterator[Any]:
    """``await make_server(store=...)``: a started server; each is stopped, and its leftovers ended, at teardown."""
    servers: list[JupyterServer] = []

    async def make(**kwargs: Any) -> JupyterServer:
        server = JupyterServer(tmp_path, env=server_env, **kwargs)
        servers.append(server)
        await server.start()
        return server

    yield make
    for server in servers:
        if server.proc is not None and server.proc.poll() is None:
            server.kill()
        kill_stored_kernels(server)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server for this test session (skipped with the reason where it cannot run)."""
    reason = cannot_run()
    if reason:
        pytest.skip(reason)
    with run_postgres() as url:
        yield url


def agent_alive(record: dict[str, Any]) -> bool:
    pid = record["provisioner_info"]["gateway_provisioners"]["handle"]["pid"]
    return psutil.pid_exists(int(pid)) and psutil.Process(int(pid)).status() != psutil.STATUS_ZOMBIE
