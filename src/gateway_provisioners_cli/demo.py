"""``gateway-provisioners-demo``: launch a real kernel through the library and show each phase with its time.

It writes a throw-away kernel spec whose ``metadata.kernel_provisioner`` names ``local-agent-provisioner``, then
drives it with jupyter_client's own ``AsyncKernelManager``, exactly as a Jupyter server would: start, execute,
interrupt a running cell, restart in place, execute again, shut down.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

SPEC_NAME = "gp-demo"


def write_demo_spec(
    root: Path, provisioner: str = "local-agent-provisioner", config: dict[str, Any] | None = None
) -> Path:
    """A kernel spec under ``root/kernels/gp-demo`` whose argv is ipykernel's own command."""
    spec_dir = root / "kernels" / SPEC_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python (gateway-provisioners demo)",
        "language": "python",
        "interrupt_mode": "signal",
        "metadata": {"kernel_provisioner": {"provisioner_name": provisioner, "config": config or {}}},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=2))
    return spec_dir


class PhaseLog(logging.Handler):
    """Prints the provisioner's per-phase log lines as they happen."""

    def __init__(self, start: float) -> None:
        super().__init__(logging.INFO)
        self.start = start

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("kernel ") and "[" in message:
            click.echo(f"  {time.monotonic() - self.start:7.3f}s  phase: {message.split('] ', 1)[-1]}")


async def run_demo(username: str) -> None:
    from jupyter_client.manager import AsyncKernelManager

    start = time.monotonic()

    def step(text: str, since: float) -> None:
        click.echo(f"  {time.monotonic() - start:7.3f}s  {text} ({(time.monotonic() - since) * 1000:.0f} ms)")

    with tempfile.TemporaryDirectory(prefix="gp-demo-") as tmp:
        write_demo_spec(Path(tmp))
        os.environ["JUPYTER_PATH"] = tmp + os.pathsep + os.environ.get("JUPYTER_PATH", "")
        km = AsyncKernelManager(kernel_name=SPEC_NAME)
        km.log.addHandler(PhaseLog(start))
        km.log.setLevel(logging.INFO)
        km.log.propagate = False
        t = time.monotonic()
        await km.start_kernel(env={**os.environ, "KERNEL_USERNAME": username})
        step(f"start_kernel() returned, kernel at {km.ip}:{km.shell_port}", t)
        kc = km.client()
        kc.start_channels()
        await kc.wait_for_ready(timeout=60)
        step("kernel answered kernel_info", t)
        t = time.monotonic()
        reply = await kc.execute_interactive(
            "import os; print('6 * 7 =', 6 * 7, 'in pid', os.getpid())",
            timeout=30,
            output_hook=lambda msg: _echo_stream(msg),
        )
        step(f"executed code: {reply['content']['status']}", t)
        t = time.monotonic()
        sleeping = asyncio.Event()
        running = asyncio.ensure_future(
            kc.execute_interactive(
                "import time; print('sleeping', flush=True); time.sleep(30)",
                timeout=60,
                output_hook=lambda msg: sleeping.set() if msg["msg_type"] == "stream" else None,
            )
        )
        await asyncio.wait_for(sleeping.wait(), 30)  # the cell runs: only now does SIGINT interrupt it
        await km.interrupt_kernel()
        reply = await running
        step(f"interrupted a sleeping cell: {reply['content'].get('ename', reply['content']['status'])}", t)
        ports = (km.shell_port, km.iopub_port, km.stdin_port, km.hb_port, km.control_port)
        t = time.monotonic()
        await km.restart_kernel()
        kc.stop_channels()
        kc = km.client()
        kc.start_channels()
        await kc.wait_for_ready(timeout=60)
        same = ports == (km.shell_port, km.iopub_port, km.stdin_port, km.hb_port, km.control_port)
        step(f"restarted in place, {'same' if same else 'NEW'} ports, answered kernel_info", t)
        t = time.monotonic()
        reply = await kc.execute_interactive(
            "print('after restart:', 6 * 7)", timeout=30, output_hook=lambda msg: _echo_stream(msg)
        )
        step(f"executed code: {reply['content']['status']}", t)
        kc.stop_channels()
        t = time.monotonic()
        await km.shutdown_kernel()
        step("shut down", t)
    click.echo(f"  total {time.monotonic() - start:.3f}s")


def _echo_stream(msg: dict[str, Any]) -> None:
    if msg["msg_type"] == "stream":
        click.echo(f"           kernel says: {msg['content']['text'].rstrip()}")


@click.command()
@click.option(
    "--username",
    default=lambda: os.environ.get("KERNEL_USERNAME", "demo"),
    show_default="demo",
    help="KERNEL_USERNAME for the launch (root is refused by default).",
)
def main(username: str) -> None:
    """Launch a real ipykernel through gateway-provisioners and print each phase with its time."""
    click.echo("gateway-provisioners demo: a kernel through local-agent-provisioner and jupyter_client")
    asyncio.run(run_demo(username))


if __name__ == "__main__":
    main()
