"""``gateway-provisioners-demo``: launch a real kernel through the library and show each phase with its time.

By default the kernel runs "remotely" through ``distributed-provisioner`` on an SSH server: a real one named with
``--remote-host``, or else an SSH server embedded in the demo on 127.0.0.1 (no sshd and no root needed). With
``--provisioner local`` it runs under ``local-agent-provisioner`` instead. The demo writes a throw-away kernel spec
and drives it with jupyter_client's own ``AsyncKernelManager``, exactly as a Jupyter server would: start, execute,
interrupt a running cell, restart in place, execute again, shut down.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from .embedded_sshd import embedded_sshd

SPEC_NAME = "gp-demo"


def write_demo_spec(
    root: Path, provisioner: str = "local-agent-provisioner", config: dict[str, Any] | None = None, curve: bool = True
) -> Path:
    """A kernel spec under ``root/kernels/gp-demo`` whose argv is ipykernel's own command; with ``curve`` it declares
    that the kernel serves CurveZMQ (ipykernel 7.4 does)."""
    spec_dir = root / "kernels" / SPEC_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python (gateway-provisioners demo)",
        "language": "python",
        "interrupt_mode": "signal",
        "metadata": {"kernel_provisioner": {"provisioner_name": provisioner, "config": config or {}}},
    }
    if curve:
        spec["metadata"]["supported_encryption"] = ["curve"]  # type: ignore[index]
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


async def run_demo(
    username: str, provisioner: str, remote_host: str | None, curve: bool, allow_root: bool = False
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gp-demo-")))
        common: dict[str, Any] = {"allow_root_kernels": True} if allow_root else {}
        if provisioner == "local":
            click.echo("provisioner: local-agent-provisioner")
            write_demo_spec(tmp, config=common, curve=curve)
        else:
            config: dict[str, Any] = {**common, "remote_python": sys.executable, "remote_user": getpass.getuser()}
            if remote_host:
                config["remote_hosts"] = [remote_host]
            else:
                t = time.monotonic()
                server = await stack.enter_async_context(embedded_sshd(tmp))
                click.echo(f"embedded SSH server on {server.address} ({(time.monotonic() - t) * 1000:.0f} ms)")
                config.update(remote_hosts=[server.address], known_hosts=str(server.known_hosts),
                              client_keys=[str(server.client_key)])  # fmt: skip
            click.echo(f"provisioner: distributed-provisioner, host {config['remote_hosts'][0]}")
            write_demo_spec(tmp, "distributed-provisioner", config, curve=curve)
        await drive_kernel(tmp, username, curve)


async def drive_kernel(tmp: Path, username: str, curve: bool) -> None:
    from jupyter_client.manager import AsyncKernelManager

    start = time.monotonic()

    def step(text: str, since: float) -> None:
        click.echo(f"  {time.monotonic() - start:7.3f}s  {text} ({(time.monotonic() - since) * 1000:.0f} ms)")

    os.environ["JUPYTER_PATH"] = str(tmp) + os.pathsep + os.environ.get("JUPYTER_PATH", "")
    km = AsyncKernelManager(kernel_name=SPEC_NAME, transport_encryption="auto" if curve else "disabled")
    km.log.addHandler(PhaseLog(start))
    km.log.setLevel(logging.INFO)
    km.log.propagate = False
    t = time.monotonic()
    await km.start_kernel(env={**os.environ, "KERNEL_USERNAME": username})
    step(f"start_kernel() returned, kernel at {km.ip}:{km.shell_port}", t)
    sealed = km.get_connection_info().get("curve_publickey")
    click.echo(f"           kernel channels: {'CurveZMQ-encrypted' if sealed else 'signed, not encrypted'}")
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
@click.option("--provisioner", type=click.Choice(["ssh", "local"]), default="ssh", show_default=True,
              help="distributed-provisioner over SSH, or local-agent-provisioner.")  # fmt: skip
@click.option("--remote-host", default=None,
              help="A real SSH host ([user@]host[:port]) to use instead of the embedded server.")  # fmt: skip
@click.option("--allow-root", is_flag=True,
              help="Allow the kernel to run as root (allow_root_kernels): needed when you run the demo as root, "
                   "since the kernel runs as the demo's user whatever --username says.")  # fmt: skip
@click.option("--curve/--no-curve", default=None,
              help="Encrypt the kernel's channels with CurveZMQ (default: on, except with --remote-host, whose "
                   "ipykernel may be too old to read Curve keys).")  # fmt: skip
def main(username: str, provisioner: str, remote_host: str | None, allow_root: bool, curve: bool | None) -> None:
    """Launch a real ipykernel through gateway-provisioners and print each phase with its time."""
    click.echo("gateway-provisioners demo: a real kernel through jupyter_client's AsyncKernelManager")
    curve = remote_host is None if curve is None else curve
    asyncio.run(run_demo(username, provisioner, remote_host, curve, allow_root))


if __name__ == "__main__":
    main()
