"""Embedding the core without jupyter_client's kernel manager, as a custom gateway would.

Run it:  python docs/examples/embed_local.py

It launches a kernel through the core and the local backend, executes code with a plain jupyter_client client on the
returned connection info, interrupts a running cell, restarts the kernel in place, serializes the kernel, restores it
as a second ``RemoteKernel`` (as a new gateway process would after a restart), and shuts it down.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from typing import Any

from jupyter_client.asynchronous import AsyncKernelClient

from gateway_provisioners.adapters.local import LocalBackend
from gateway_provisioners.core.kernel import RemoteKernel
from gateway_provisioners.core.launch import LaunchSpec, build_kernel_env, parse_bool


async def execute(connection_info: dict[str, Any], code: str) -> tuple[str, str]:
    """Run ``code`` on the kernel; returns (status, printed text)."""
    client = AsyncKernelClient()
    client.load_connection_info(connection_info)
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=30)
        printed: list[str] = []
        reply = await client.execute_interactive(
            code,
            timeout=30,
            output_hook=lambda msg: printed.append(msg["content"].get("text", "")),
        )
        return reply["content"]["status"], "".join(printed).strip()
    finally:
        client.stop_channels()


async def main() -> dict[str, Any]:
    kernel_id = str(uuid.uuid4())
    backend = LocalBackend()
    kernel = RemoteKernel(backend, kernel_id)
    kernel.lifecycle.events.subscribe(lambda e: print(f"  [{e.since_start:6.3f}s] {e.phase}: {e.message}"))
    results: dict[str, Any] = {}

    # 1. Launch: the kernel spec's own argv; the agent fills in {connection_file} where the kernel runs.
    spec = LaunchSpec(
        kernel_id=kernel_id,
        argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        env=build_kernel_env(os.environ, {}, allowlist=["PATH", "HOME", "LANG"]),
        kernel_ip="127.0.0.1",
        launch_timeout=30,
        # Kernels that would really run as root are refused unless the operator allows them (here: when asked to).
        allow_root=parse_bool(os.environ.get("GP_ALLOW_ROOT_KERNELS", "false")),
    )
    info = await kernel.start(spec)
    results["status"], results["answer"] = await execute(info, "print(6 * 7)")

    # 2. Interrupt a running cell.
    client = AsyncKernelClient()
    client.load_connection_info(info)
    client.start_channels()
    await client.wait_for_ready(timeout=30)
    msg_id = client.execute("import time; print('sleeping', flush=True); time.sleep(30)")
    while True:  # wait until the cell runs (its output arrives): only then does SIGINT interrupt it
        msg = await client.get_iopub_msg(timeout=10)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
            break
    await kernel.interrupt()
    results["interrupted"] = (await client.get_shell_msg(timeout=10))["content"].get("ename")
    client.stop_channels()

    # 3. Restart in place: same agent, same ports, same key; a fresh kernel process.
    _, pid_before = await execute(info, "import os; print(os.getpid())")
    info_after = await kernel.restart()
    _, pid_after = await execute(info_after, "import os; print(os.getpid())")
    results["same_ports"] = info_after == info
    results["new_process"] = pid_before != pid_after

    # 4. Serialize, and restore as a new gateway process would (same backend type, new RemoteKernel).
    saved = kernel.serialize()
    restored = await RemoteKernel.restore(LocalBackend(), saved)
    results["restored_alive"] = restored.poll() is None
    results["restored_answer"] = (await execute(restored.connection_info, "print(7 * 6)"))[1]

    # 5. Shut down through the restored handle; the original sees its agent go.
    await restored.shutdown(grace=2)
    results["exit_code_known"] = restored.poll() is not None
    await kernel.shutdown(grace=0)
    return results


if __name__ == "__main__":
    print(asyncio.run(main()))
