"""Driving a real kernel in tests: run code, ask its pid or host, interrupt a running cell, probe its channels."""

from __future__ import annotations

import time
from typing import Any

import zmq
import zmq.asyncio
from jupyter_client.session import Session

SLEEPING_CELL = "import time; print('sleeping', flush=True); time.sleep(30)"
# An interrupt answered this soon ended the sleep: how fast it comes is measured by the benchmarks, not asserted here
# (a loaded machine stretches it), but it must come long before the cell could have finished by itself.
INTERRUPTED_WITHIN = 10.0


def new_client(km: Any) -> Any:
    """A client of ``km``'s kernel under its own ZeroMQ identity, as jupyter_server gives each WebSocket connection.

    ``km.client()`` alone reuses the manager's session, whose id is the shell socket's identity. ipykernel's ROUTER
    hands a reused identity over to the newest connection; Apache Toree's (JeroMQ, no handover) ignores a connection
    that arrives while the previous one under the same identity is still registered, and keeps ignoring it: the
    client waits forever for its kernel_info reply (docs/languages.md).
    """
    session = Session(key=km.session.key, signature_scheme=km.session.signature_scheme, username=km.session.username)
    return km.client(session=session)


async def run_code(km: Any, code: str, timeout: float = 30) -> tuple[dict[str, Any], str]:
    """Execute ``code`` with a new client; returns the reply's content and everything printed."""
    kc = new_client(km)
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=timeout)
        output: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                output.append(msg["content"]["text"])

        reply = await kc.execute_interactive(code, timeout=timeout, output_hook=hook)
        return reply["content"], "".join(output)
    finally:
        kc.stop_channels()


async def kernel_pid(km: Any) -> int:
    return int((await run_code(km, "import os; print(os.getpid())"))[1])


async def hostname_of(km: Any) -> str:
    return (await run_code(km, "import socket; print(socket.gethostname())"))[1].strip()


async def interrupt_running_cell(
    km: Any, timeout: float = 10, cell: str = SLEEPING_CELL, ready_timeout: float = 30
) -> tuple[dict[str, Any], float]:
    """Start a cell that sleeps 30 s, interrupt it once it runs; returns the reply's content and the seconds taken.

    The cell prints before sleeping: ipykernel turns SIGINT into KeyboardInterrupt only while a cell runs, so the
    interrupt is sent once that output arrives. ``cell`` is the same for another language (tests/support/languages.py).
    """
    kc = new_client(km)
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=ready_timeout)
        msg_id = kc.execute(cell)
        while True:
            msg = await kc.get_iopub_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
                break
        started = time.monotonic()
        await km.interrupt_kernel()
        reply = await kc.get_shell_msg(timeout=timeout)
        return reply["content"], time.monotonic() - started
    finally:
        kc.stop_channels()


REATTACH_SCRIPT = """
import asyncio, json, sys
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning.factory import KernelProvisionerFactory

async def main():
    kernel_name, kernel_id, saved = sys.argv[1:4]
    km = AsyncKernelManager(kernel_name=kernel_name)
    km.kernel_id = kernel_id
    km.provisioner = KernelProvisionerFactory.instance(parent=km.parent).create_provisioner_instance(
        km.kernel_id, km.kernel_spec, parent=km)
    info = json.load(open(saved))
    await km.provisioner.load_provisioner_info(info)
    km.load_connection_info(info["connection_info"])
    assert await km.is_alive(), "the reattached kernel polls as dead"
    handle = km.provisioner.kernel.handle
    print("HANDLE", json.dumps({"data": handle.data, "state": handle.observation.state.value}))
    kc = km.client(); kc.start_channels(); await kc.wait_for_ready(timeout=30)
    out = []
    await kc.execute_interactive("import os; print(os.getpid())", timeout=30,
        output_hook=lambda m: out.append(m["content"].get("text", "")) if m["msg_type"] == "stream" else None)
    kc.stop_channels()
    await km.provisioner.send_signal(0)
    print("PID", "".join(out).strip())

asyncio.run(main())
"""


async def reattach_in_new_process(km: Any, folder: Any) -> tuple[int, dict[str, Any]]:
    """Reattach to ``km``'s kernel from a new Python process (as a restarted server would) and run code there.

    Returns the kernel pid the other process saw and its view of the backend handle; raises if it failed.
    """
    import asyncio
    import json
    import os
    import subprocess
    import sys

    saved = folder / "provisioner-info.json"
    saved.write_text(json.dumps(await km.provisioner.get_provisioner_info()))
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", REATTACH_SCRIPT, km.kernel_name, km.kernel_id, str(saved)],
        capture_output=True, text=True, timeout=60, env=os.environ,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if line.startswith(("PID ", "HANDLE ")))
    return int(lines["PID"]), json.loads(lines["HANDLE"])


async def shell_answers(info: dict[str, Any], curve: bool, timeout: float) -> bool:
    """Whether a kernel_info request sent on the shell channel, as a Curve client or not, is answered in time."""
    context = zmq.asyncio.Context()
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    if curve:
        sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()  # any client key: the server key is the check
        sock.curve_serverkey = info["curve_publickey"].encode()
    sock.connect(f"tcp://{info['ip']}:{info['shell_port']}")
    try:
        session = Session(key=info["key"], signature_scheme=info["signature_scheme"])  # the manager holds bytes
        # A DEALER with no connected peer blocks on send: bounded, so an unreachable kernel answers False, not a hang.
        sock.sndtimeo = int(timeout * 1000)
        try:
            session.send(sock, "kernel_info_request", {})
        except zmq.Again:
            return False
        return bool(await sock.poll(timeout * 1000))
    finally:
        sock.close()
        context.term()
