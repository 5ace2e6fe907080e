"""Measuring helpers shared by the benchmark scripts. Needs only jupyter_client and psutil, so the driver can run
under another package's virtualenv (the older gateway_provisioners) as well as ours."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import psutil


class StallProbe:
    """The longest lateness of a 5 ms sleep while it runs: how long the event loop was blocked at most."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.005)
            self.longest = max(self.longest, loop.time() - before - 0.005)

    def start(self) -> StallProbe:
        self._task = asyncio.ensure_future(self._run())
        return self

    async def stop(self) -> float:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        return self.longest


async def ready(km: Any, timeout: float = 60) -> None:
    """Until the kernel answers kernel_info."""
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=timeout)
    finally:
        kc.stop_channels()


async def kernel_pid(km: Any) -> int:
    """The kernel process's pid, asked of the kernel itself."""
    kc = km.client()
    kc.start_channels()
    out: list[str] = []
    try:
        await kc.wait_for_ready(timeout=60)
        await kc.execute_interactive(
            "import os; print(os.getpid())",
            timeout=30,
            output_hook=lambda m: out.append(m["content"].get("text", "")) if m["msg_type"] == "stream" else None,
        )
    finally:
        kc.stop_channels()
    return int("".join(out).strip())


def gone_after(pid: int, since: float, timeout: float = 60.0) -> float:
    """Seconds from ``since`` until process ``pid`` is gone (inf after ``timeout``). Blocking: run in a thread."""
    try:
        psutil.Process(pid).wait(timeout)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        return float("inf")
    return time.monotonic() - since


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


def summary(values: list[float]) -> str:
    """``min / **median** / max`` in seconds."""
    if not values:
        return "–"
    return f"{min(values):.3f} / **{statistics.median(values):.3f}** / {max(values):.3f}"
