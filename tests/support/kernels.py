"""Driving a real kernel in tests: run code, ask its pid or host, interrupt a running cell."""

from __future__ import annotations

import time
from typing import Any

SLEEPING_CELL = "import time; print('sleeping', flush=True); time.sleep(30)"


async def run_code(km: Any, code: str, timeout: float = 30) -> tuple[dict[str, Any], str]:
    """Execute ``code`` with a fresh client; returns the reply's content and everything printed."""
    kc = km.client()
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


async def interrupt_running_cell(km: Any, timeout: float = 10) -> tuple[dict[str, Any], float]:
    """Start a cell that sleeps 30 s, interrupt it once it runs; returns the reply's content and the seconds taken.

    The cell prints before sleeping: ipykernel turns SIGINT into KeyboardInterrupt only while a cell runs, so the
    interrupt is sent once that output arrives.
    """
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=30)
        msg_id = kc.execute(SLEEPING_CELL)
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
