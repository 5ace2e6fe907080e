"""The agent's control port against hostile peers (issue 11): idle connections that hold its slots, deep nesting.

One real agent runs per test (stdout mode) with a stand-in kernel that only listens on its five ports, so the agent
is ready in well under a second. The tests talk to its control port on loopback, as an attacker and as the server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import struct
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway_provisioners.adapters.local import LocalBackend
from gateway_provisioners.core.broker import ConnectionBroker
from gateway_provisioners.core.control import ControlConnection
from gateway_provisioners.core.handshake import STDOUT_PREFIX, encode_token, new_token, open_payload, parse_envelope
from gateway_provisioners.core.kernel import RemoteKernel
from gateway_provisioners.core.launch import ConnectionMode, LaunchSpec, build_kernel_env
from gateway_provisioners.listener import ResponseListener

from ..conftest import AS_ROOT

pytestmark = pytest.mark.integration

AGENT = Path(__file__).resolve().parents[2] / "launchers" / "gp_agent.py"
HOST = "127.0.0.1"
STAND_IN_KERNEL = r"""
import json, socket, sys, time
info = json.load(open(sys.argv[1]))
held = []
for name in ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port"):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", info[name])); s.listen(); held.append(s)
time.sleep(600)
"""


@dataclass
class RunningAgent:
    kernel_id: str
    token: bytes
    port: int
    stderr: Path

    def control(self) -> ControlConnection:
        return ControlConnection(self.kernel_id, self.token)


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[RunningAgent]:
    kernel_script = tmp_path / "stand_in_kernel.py"
    kernel_script.write_text(STAND_IN_KERNEL)
    kernel_id, token = str(uuid.uuid4()), new_token()
    params = {
        "gp": 2,
        "kernel_id": kernel_id,
        "token": encode_token(token),
        "argv": [sys.executable, str(kernel_script), "{connection_file}"],
        "kernel_ip": HOST,
        "ready_timeout": 20,
        "allow_root": AS_ROOT,
    }
    stderr = tmp_path / "agent.stderr"
    with stderr.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(AGENT), "--params", "-", "--log-file", str(tmp_path / "agent.log"),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err,
            env={**os.environ, "GP_AGENT_LOG_LEVEL": "INFO"},
        )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(params).encode() + b"\n")
    proc.stdin.close()
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        if line.startswith("GP-AGENT-LOG "):  # where the agent keeps its log, then the payload
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        assert line.startswith(STDOUT_PREFIX), (line, stderr.read_text())
        info = open_payload(token, parse_envelope(line[len(STDOUT_PREFIX) :]))
        yield RunningAgent(kernel_id, token, int(info["agent_port"]), stderr)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()


async def test_idle_connections_do_not_keep_the_server_out(agent: RunningAgent) -> None:
    # More idle, never-authenticating connections than the agent's connection limit (8).
    idle = [await asyncio.open_connection(HOST, agent.port) for _ in range(12)]
    try:
        control = agent.control()
        state = await asyncio.wait_for(control.open(HOST, agent.port, timeout=5), 10)
        assert state["ok"] is True and state["kernel"] == "running"
        # Authenticated, it stays: further idle connections do not evict it.
        more = [await asyncio.open_connection(HOST, agent.port) for _ in range(12)]
        idle.extend(more)
        assert (await control.request("ping", timeout=5))["ok"] is True
        await control.close()
    finally:
        for _, writer in idle:
            writer.close()


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    (length,) = struct.unpack(">I", await reader.readexactly(4))
    return await reader.readexactly(length)


@pytest.mark.parametrize(
    "hello",
    [b"[" * 60_000, b'{"gp":2,"nonce":' + b"[" * 60_000 + b"}", json.dumps({"gp": 2, "nonce": 123}).encode()],
    ids=["deep-nesting", "deep-in-a-field", "nonce-is-a-number"],
)
async def test_hostile_server_hello_is_dropped_quietly(agent: RunningAgent, hello: bytes) -> None:
    reader, writer = await asyncio.open_connection(HOST, agent.port)
    try:
        assert json.loads(await asyncio.wait_for(read_frame(reader), 5))["kernel_id"] == agent.kernel_id
        writer.write(struct.pack(">I", len(hello)) + hello)
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b"", "the agent closes the connection"
    finally:
        writer.close()
    # The agent still serves its server, and said what happened in one warning line, not a traceback.
    control = agent.control()
    assert (await asyncio.wait_for(control.open(HOST, agent.port, timeout=5), 10))["ok"] is True
    await control.close()
    logged = agent.stderr.read_text()
    assert "Traceback" not in logged and "Unhandled exception" not in logged, logged
    assert "control connection from" in logged, logged


FORGED = "2026-01-01 00:00:00,000 gp-agent INFO server authenticated"


async def test_agent_log_lines_cannot_be_forged_by_a_peer(agent: RunningAgent) -> None:
    reader, writer = await asyncio.open_connection(HOST, agent.port)
    try:
        await asyncio.wait_for(read_frame(reader), 5)
        forged = {"gp": f"2\n{FORGED}", "nonce": base64.b64encode(bytes(16)).decode()}
        body = json.dumps(forged).encode()
        writer.write(struct.pack(">I", len(body)) + body)
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()
    assert f"\n{FORGED}" not in agent.stderr.read_text()


async def test_callback_launch_succeeds_while_idle_peers_fill_the_listener(tmp_path: Path) -> None:
    # Issue 11: 300 idle connections to the listener made a real callback-mode launch fail with "busy".
    kernel_script = tmp_path / "stand_in_kernel.py"
    kernel_script.write_text(STAND_IN_KERNEL)
    broker = ConnectionBroker()
    async with ResponseListener(broker, HOST, 0, read_timeout=10) as listener:
        idle = [await asyncio.open_connection(HOST, listener.port) for _ in range(300)]
        try:
            kernel_id = str(uuid.uuid4())
            kernel = RemoteKernel(LocalBackend(), kernel_id, broker=broker)
            spec = LaunchSpec(
                kernel_id,
                [sys.executable, str(kernel_script), "{connection_file}"],
                env=build_kernel_env(os.environ, {}, ["PATH"]),
                kernel_ip=HOST,
                launch_timeout=20,
                mode=ConnectionMode.CALLBACK,
                response_address=listener.address,
                allow_root=AS_ROOT,
            )
            started = time.monotonic()
            await kernel.start(spec)
            try:
                assert kernel.poll() is None
                assert time.monotonic() - started < 10  # well before the idle connections' read deadline
            finally:
                await kernel.shutdown(grace=0)
        finally:
            for _, writer in idle:
                writer.close()
