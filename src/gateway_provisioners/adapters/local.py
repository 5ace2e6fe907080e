"""The local backend: the agent runs as a process on this machine.

It is a real backend (``local-agent-provisioner`` runs kernels through it with every feature of the agent: the
handshake, restart in place, the control channel) and the one the core's tests and embedders' tests use, since it
needs nothing but Python. The shared observer is the event loop itself: each agent process is awaited (or, after a
reattach, watched through a pidfd), so a dead agent is known the moment it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from typing import Any, ClassVar

from ..agent import agent_path
from ..core.backend import Backend, BackendHandle, Observation, PlatformState
from ..core.handshake import AGENT_LOG_PREFIX, STDOUT_PREFIX
from ..core.launch import ConnectionMode, LaunchSpec
from ..core.tasks import BackgroundTasks

log = logging.getLogger("gateway_provisioners.local")


class LocalBackend(Backend):
    """Run the agent (and so the kernel) as a child process of this server.

    Parameters
    ----------
    python:
        The interpreter that runs the agent, and replaces a bare ``python`` at the start of a kernel's argv.
    log_dir:
        Where each agent makes its private folder (0700, an unpredictable name) for the kernel's log (0600); default:
        the temporary folder. The log is kept after the kernel ends only if ``keep_logs`` (or the launch failed, until
        the kernel is cleaned up).
    """

    name: ClassVar[str] = "local"
    kernel_ends_with_resource: ClassVar[bool] = True  # the observed process is the agent itself
    modes: ClassVar[tuple[ConnectionMode, ...]] = (
        ConnectionMode.STDOUT,
        ConnectionMode.CALLBACK,
        ConnectionMode.ASSIGNED,
    )

    def __init__(self, python: str | None = None, log_dir: str | None = None, keep_logs: bool = False) -> None:
        self.python = python or sys.executable
        self.log_dir = log_dir
        self.keep_logs = keep_logs
        self._tasks = BackgroundTasks(log, "local backend task")

    def kernel_uid(self, spec: LaunchSpec) -> int | None:
        return os.geteuid()  # no impersonation: the agent and its kernel run as this server

    async def submit(self, spec: LaunchSpec) -> BackendHandle:
        params = spec.agent_params(python=self.python)
        if self.log_dir:
            params["log_dir"] = self.log_dir
        proc = await asyncio.create_subprocess_exec(
            self.python, str(agent_path()), "--params", "-", *(["--keep-log"] if self.keep_logs else []),
            env=dict(spec.env), cwd=spec.cwd or None,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C in the server's terminal must not reach kernels
        )  # fmt: skip
        assert proc.stdin is not None
        # The token travels on the agent's standard input: never in argv (visible to every user) or the environment.
        proc.stdin.write(json.dumps(params).encode() + b"\n")
        await proc.stdin.drain()
        proc.stdin.close()
        handle = BackendHandle(spec.kernel_id, data={"pid": proc.pid})
        # The agent runs here, so its address is known at once (as a pod IP is to the Kubernetes adapter).
        state = PlatformState.RUNNING if spec.mode is ConnectionMode.ASSIGNED else PlatformState.STARTING
        handle.update(Observation(state, ip="127.0.0.1", host=socket.gethostname(), reason=f"agent pid {proc.pid}"))
        self._spawn(self._read_output(proc, handle))
        self._spawn(self._observe(proc, handle))
        return handle

    def _spawn(self, coro: Any) -> None:
        self._tasks.spawn(coro)

    async def _read_output(self, proc: asyncio.subprocess.Process, handle: BackendHandle) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            text = line.decode("utf-8", "replace").strip()
            if text.startswith(STDOUT_PREFIX):
                handle.deliver_payload(text[len(STDOUT_PREFIX) :].encode())
            elif text.startswith(f"{AGENT_LOG_PREFIX}{handle.kernel_id} /"):  # where the agent made the kernel's log
                handle.data["log_file"] = text.split(" ", 2)[2]

    async def _observe(self, proc: asyncio.subprocess.Process, handle: BackendHandle) -> None:
        code = await proc.wait()
        handle.update(
            Observation(PlatformState.EXITED, ip="127.0.0.1", exit_code=code, reason=f"agent exit code {code}")
        )

    async def terminate(self, handle: BackendHandle, grace: float = 0.0) -> None:
        """SIGTERM the agent (it ends its kernel's process group), SIGKILL both after ``grace`` + 2 s."""
        pid = handle.data.get("pid")
        if handle.observation.state.is_over or not pid:
            self._remove_log(handle)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not await self._wait_over(handle, grace + 2.0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _kill_group(handle.data.get("kernel_pgid"), signal.SIGKILL)
            await self._wait_over(handle, 5.0)
        self._remove_log(handle)

    @staticmethod
    async def _wait_over(handle: BackendHandle, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not handle.observation.state.is_over:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(handle.wait_changed(), remaining)
        return True

    def _remove_log(self, handle: BackendHandle) -> None:
        """The agent removes its log after a clean shutdown; after a failure it leaves it for diagnostics, until now."""
        path = handle.data.get("log_file")
        if not self.keep_logs and path and os.path.basename(os.path.dirname(path)).startswith("gp-kernel-"):
            # The agent's private folder: its log, and the connection file (the HMAC key) left by a killed agent.
            for name in (path, os.path.join(os.path.dirname(path), "kernel.json")):
                with contextlib.suppress(OSError):
                    os.remove(name)
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(path))  # only if nothing else is left in it

    async def signal(self, handle: BackendHandle, signum: int) -> None:
        _kill_group(handle.data.get("kernel_pgid"), signum)

    async def log_tail(self, handle: BackendHandle, lines: int = 20) -> list[str]:
        path = handle.data.get("log_file")
        if not path:
            return []
        return await asyncio.get_running_loop().run_in_executor(None, _tail, path, lines)

    def serialize(self, handle: BackendHandle) -> dict[str, Any]:
        return {k: handle.data[k] for k in ("pid", "kernel_pgid", "log_file") if k in handle.data}

    async def restore(self, data: dict[str, Any]) -> BackendHandle:
        handle = BackendHandle(str(data.get("kernel_id", "")), data=dict(data))
        pid = int(data["pid"])
        try:
            pidfd = os.pidfd_open(pid)
        except (ProcessLookupError, OSError):
            handle.update(Observation(PlatformState.GONE, reason=f"agent pid {pid} is gone"))
            return handle
        handle.update(Observation(PlatformState.RUNNING, ip="127.0.0.1", host=socket.gethostname()))
        loop = asyncio.get_running_loop()

        def on_exit() -> None:  # a pidfd becomes readable when its process ends
            loop.remove_reader(pidfd)
            os.close(pidfd)
            handle.update(Observation(PlatformState.EXITED, reason=f"agent pid {pid} ended"))

        loop.add_reader(pidfd, on_exit)
        return handle

    async def close(self) -> None:
        self._tasks.cancel()


def _kill_group(pgid: int | None, signum: int) -> None:
    if pgid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signum)


def _tail(path: str, lines: int) -> list[str]:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16384))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]
