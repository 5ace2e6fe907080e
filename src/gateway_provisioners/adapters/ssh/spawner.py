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

    The session's output is handled by asyncssh's callbacks (:class:`_SpawnerSession`), not by reader tasks: the
    session lives as long as the server, and a task still reading it when the server's event loop stops would be
    reported as "Task was destroyed but it is pending!" by every host of this library that does not close it (Kernel
    Gateway, nbclient). A callback holds nothing that can be left pending.
    """

    def __init__(self, slot: SessionSlot, pool: SSHConnectionPool) -> None:
        self.slot = slot
        self.pool = pool
        self.handles: dict[str, BackendHandle] = {}
        self.errors: deque[str] = deque(maxlen=50)
        self._channel: asyncssh.SSHClientChannel[bytes] | None = None
        self._ready: asyncio.Future[bytes] | None = None  # the spawner's first line ('' if it ended before one)
        self._released = False

    @property
    def alive(self) -> bool:
        return self._channel is not None and self._ready is not None and self._ready.done()

    async def start(self, python: str, agent_source: bytes, timeout: float) -> None:
        command = shell_line(remote_command(python, agent_source, "--spawner"))
        self._ready = asyncio.get_running_loop().create_future()
        try:
            channel, _ = await self.slot.connection.create_session(
                lambda: _SpawnerSession(self), command, encoding=None
            )
            self._channel = channel
            channel.write(agent_source)
            ready = await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except (asyncssh.Error, OSError, asyncio.TimeoutError) as exc:
            self.close()
            raise BackendUnavailable(f"cannot start the agent spawner: {exc or type(exc).__name__}") from None
        if not ready.startswith(SPAWNER_READY_PREFIX.encode()):
            errors = " ".join(self.errors).strip()
            self.close()
            raise BackendUnavailable(f"the agent spawner did not start with {python}: {errors or ready!r}")

    def launch(self, handle: BackendHandle, params: dict[str, Any], args: list[str]) -> None:
        assert self._channel is not None
        self.handles[handle.kernel_id] = handle
        self._channel.write(json.dumps({"params": params, "args": args}).encode() + b"\n")

    # --- called by the session --------------------------------------------------------------------------------------

    def _line(self, raw: bytes) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(raw.strip())
            return
        self._dispatch(raw.decode("utf-8", "replace").strip())

    def _error_line(self, raw: bytes) -> None:
        self.errors.append(raw.decode("utf-8", "replace").rstrip())

    def _ended(self) -> None:
        """The session ended (the host, the connection or :meth:`close`): its agents go on, unobserved from here."""
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(b"")
        for handle in self.handles.values():
            if not handle.observation.state.is_over:
                handle.update(Observation(PlatformState.GONE, reason="the SSH session to the host ended"))
        self.handles.clear()
        self._channel = None
        self._release()

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

    def close(self) -> None:
        """End the spawner (its agents go on) and give its session slot back. Idempotent; nothing is left running."""
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()  # asyncssh then calls the session's connection_lost: _ended
        self._release()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self.pool.release(self.slot)


class _SpawnerSession(asyncssh.SSHClientSession[bytes]):
    """The spawner's SSH session: its output, split into lines, handed to the spawner as it arrives."""

    MAX_LINE = 1 << 20  # a line is a sealed payload of a few kB; a host that sends more without a newline is cut

    def __init__(self, spawner: AgentSpawner) -> None:
        self.spawner = spawner
        self._partial = {False: b"", True: b""}  # stdout, stderr

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        is_error = datatype == asyncssh.EXTENDED_DATA_STDERR
        *lines, rest = (self._partial[is_error] + data).split(b"\n")
        self._partial[is_error] = rest if len(rest) <= self.MAX_LINE else b""
        for line in lines:
            (self.spawner._error_line if is_error else self.spawner._line)(line)

    def connection_lost(self, exc: Exception | None) -> None:
        for is_error, rest in self._partial.items():
            if rest:
                (self.spawner._error_line if is_error else self.spawner._line)(rest)
        self.spawner._ended()


def note_log_file(handles: dict[str, BackendHandle], line: str) -> None:
    """``GP-AGENT-LOG <kernel id> <path>``: where the agent made the kernel's log, for diagnostics and clean-up."""
    kernel_id, _, path = line[len(AGENT_LOG_PREFIX) :].partition(" ")
    if kernel_id in handles and path.startswith("/") and "\n" not in path:
        handles[kernel_id].data["log_file"] = path


#: A host selector: given the candidate hosts in configured order, the kernels per host (running and starting) and
#: the launch spec, return the hosts in the order to try them.
