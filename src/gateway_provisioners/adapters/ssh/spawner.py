"""The agent spawner: one long-lived SSH session per host connection runs the agent in ``--spawner`` mode, and each
launch asks it for a line to fork a detached agent — a launch costs a line and a fork instead of a new SSH session
(about 0.1 s here). The spawner reports each agent's payload, pid, log file and exit on its standard output.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
from collections import deque
from typing import Any

import asyncssh

from ...core.backend import BackendHandle, Observation, PlatformState
from ...core.errors import BackendUnavailable
from ...core.handshake import AGENT_LOG_PREFIX, STDOUT_PREFIX
from .connections import SessionSlot, SSHConnectionPool

AGENT_PID_PREFIX = "GP-AGENT-PID "  # the agent's pid (--detach: "<pid>"; --spawner: "<kernel id> <pid>")
AGENT_EXIT_PREFIX = "GP-AGENT-EXIT "  # --spawner: "<kernel id> <exit code>"
SPAWNER_READY_PREFIX = "GP-SPAWNER-READY "
# Runs the agent from the first N bytes of standard input; the launch parameters follow on the same stream.
_STUB = "import sys;exec(compile(sys.stdin.buffer.read({size}),'gp_agent.py','exec'))"


def remote_command(python: str, agent_source: bytes, *args: str) -> list[str]:
    """The words of a remote command that runs the agent whose source follows on standard input."""
    return [python, "-c", _STUB.format(size=len(agent_source)), *args]


def shell_line(words: list[str]) -> str:
    """``words`` as one remote shell line, run from the home folder. Every word is quoted: operator settings may
    hold spaces; client values never reach this line."""
    return "cd ~ 2>/dev/null; exec " + " ".join(shlex.quote(word) for word in words)


class AgentSpawner:
    """One long-lived ``gp_agent.py --spawner`` session per host connection.

    Starting an SSH session costs about 0.1 s (sshd forks, runs a shell, which starts Python); a spawner pays that
    once, and each launch is then a line on its input and a fork on the host. It reports, per kernel id, the agent's
    pid, the agent's payload and the agent's exit.
    """

    def __init__(self, slot: SessionSlot, pool: SSHConnectionPool) -> None:
        self.slot = slot
        self.pool = pool
        self.handles: dict[str, BackendHandle] = {}
        self.errors: deque[str] = deque(maxlen=50)
        self._process: asyncssh.SSHClientProcess[bytes] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def alive(self) -> bool:
        return bool(self._tasks) and not self._tasks[0].done()

    async def start(self, python: str, agent_source: bytes, timeout: float) -> None:
        command = shell_line(remote_command(python, agent_source, "--spawner"))
        try:
            self._process = await self.slot.connection.create_process(command, encoding=None)
            self._process.stdin.write(agent_source)
            ready = await asyncio.wait_for(self._process.stdout.readline(), timeout)
        except (asyncssh.Error, OSError, asyncio.TimeoutError) as exc:
            self.close()
            raise BackendUnavailable(f"cannot start the agent spawner: {exc}") from None
        if not ready.startswith(SPAWNER_READY_PREFIX.encode()):
            errors = (await self._process.stderr.read(4096)).decode("utf-8", "replace").strip()
            self.close()
            raise BackendUnavailable(f"the agent spawner did not start with {python}: {errors or ready!r}")
        self._tasks = [asyncio.ensure_future(self._read()), asyncio.ensure_future(self._read_errors())]

    def launch(self, handle: BackendHandle, params: dict[str, Any], args: list[str]) -> None:
        assert self._process is not None
        self.handles[handle.kernel_id] = handle
        self._process.stdin.write(json.dumps({"params": params, "args": args}).encode() + b"\n")

    async def _read(self) -> None:
        assert self._process is not None
        try:
            async for raw in self._process.stdout:
                self._dispatch(raw.decode("utf-8", "replace").strip())
        except (asyncssh.Error, OSError):
            pass
        finally:
            for handle in self.handles.values():
                if not handle.observation.state.is_over:
                    handle.update(Observation(PlatformState.GONE, reason="the SSH session to the host ended"))
            self.handles.clear()
            self.close()

    def _dispatch(self, line: str) -> None:
        if line.startswith(STDOUT_PREFIX):
            envelope = line[len(STDOUT_PREFIX) :]
            with contextlib.suppress(ValueError, KeyError, TypeError, RecursionError):  # a bad line is dropped
                self.handles[json.loads(envelope)["kernel_id"]].deliver_payload(envelope.encode())
        elif line.startswith(AGENT_LOG_PREFIX):
            note_log_file(self.handles, line)
        elif line.startswith((AGENT_PID_PREFIX, AGENT_EXIT_PREFIX)):
            kernel_id, _, number = line.split(" ", 1)[1].partition(" ")
            handle = self.handles.get(kernel_id)
            if handle is None or not number.lstrip("-").isdigit():
                return
            if line.startswith(AGENT_PID_PREFIX):
                handle.data["agent_pid"] = int(number)
            else:
                del self.handles[kernel_id]
                handle.data["launch_errors"] = list(self.errors)[-20:]
                handle.update(Observation(PlatformState.EXITED, ip=handle.observation.ip, host=handle.observation.host,
                                          exit_code=int(number), reason=f"agent exit code {number}"))  # fmt: skip

    async def _read_errors(self) -> None:
        assert self._process is not None
        with contextlib.suppress(asyncssh.Error, OSError):
            async for raw in self._process.stderr:
                self.errors.append(raw.decode("utf-8", "replace").rstrip())

    def close(self) -> None:
        """End the spawner (its agents go on) and give its session slot back. Idempotent."""
        if self._process is not None:
            self._process.close()
            self._process = None
            self.pool.release(self.slot)


def note_log_file(handles: dict[str, BackendHandle], line: str) -> None:
    """``GP-AGENT-LOG <kernel id> <path>``: where the agent made the kernel's log, for diagnostics and clean-up."""
    kernel_id, _, path = line[len(AGENT_LOG_PREFIX) :].partition(" ")
    if kernel_id in handles and path.startswith("/") and "\n" not in path:
        handles[kernel_id].data["log_file"] = path


#: A host selector: given the candidate hosts in configured order, the kernels per host (running and starting) and
#: the launch spec, return the hosts in the order to try them.
