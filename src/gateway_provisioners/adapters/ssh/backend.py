"""The SSH backend (the port): picks a host, starts the agent through the host's spawner (or a per-launch session
when impersonating), follows it, and cleans up over the same connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shlex
from collections import deque
from collections.abc import Sequence
from typing import Any, ClassVar

import asyncssh

from ...agent import agent_path
from ...core.backend import Backend, BackendHandle, Observation, PlatformState
from ...core.errors import BackendUnavailable, ConfigurationError
from ...core.handshake import AGENT_LOG_PREFIX, STDOUT_PREFIX
from ...core.launch import ConnectionMode, LaunchSpec
from ...core.tasks import BackgroundTasks
from .connections import SessionSlot, SSHConnectionPool, SSHHost, SSHSettings
from .selection import HostSelector, RoundRobin
from .spawner import AGENT_PID_PREFIX, AgentSpawner, note_log_file, remote_command, shell_line

log = logging.getLogger("gateway_provisioners.ssh")


class SSHBackend(Backend):
    """Launch agents on a pool of SSH hosts.

    Parameters
    ----------
    hosts:
        ``[user@]host[:port]`` strings, in order of preference.
    settings:
        How to connect (known_hosts, keys, GSSAPI, timeouts).
    python:
        The interpreter on the hosts (needs ``cryptography`` for the agent, and the kernel's own packages).
    selector:
        Orders the hosts for each launch (see :data:`HostSelector`).
    log_dir:
        Folder on the hosts in which each agent makes its private folder (0700, unpredictable name) for the kernel's
        log (0600); default: the hosts' temporary folder.
    impersonate:
        Run the agent as ``KERNEL_USERNAME`` with ``sudo -n -u`` (the SSH user needs the sudo rights).
    tunnel:
        Reach the kernel through the SSH connection (local port forwards) instead of directly.
    """

    name: ClassVar[str] = "ssh"
    modes: ClassVar[tuple[ConnectionMode, ...]] = (ConnectionMode.STDOUT, ConnectionMode.CALLBACK)

    def __init__(
        self,
        hosts: Sequence[str],
        settings: SSHSettings | None = None,
        *,
        default_port: int = 22,
        default_user: str | None = None,
        python: str = "python3",
        selector: HostSelector | None = None,
        log_dir: str | None = None,
        keep_logs: bool = False,
        impersonate: bool = False,
        tunnel: bool = False,
        pool: SSHConnectionPool | None = None,
    ) -> None:
        if not hosts:
            raise ConfigurationError("no remote hosts configured: set remote_hosts (GP_REMOTE_HOSTS)")
        parsed = [(text.strip(), SSHHost.parse(text, default_port, default_user)) for text in hosts]
        self.hosts = {str(host): host for _, host in parsed}
        self.spellings = {str(host): text for text, host in parsed}  # as configured, for KERNEL_REMOTE_HOST
        self.pool = pool or SSHConnectionPool(settings or SSHSettings())
        self.python = python
        self.selector = selector or RoundRobin()
        self.log_dir = log_dir
        self.keep_logs = keep_logs
        self.impersonate = impersonate
        self.tunnel = tunnel
        self.load: dict[str, int] = {}
        self._tunnels: dict[str, list[asyncssh.SSHListener]] = {}
        self._spawners: dict[str, AgentSpawner] = {}
        self._spawner_locks: dict[str, asyncio.Lock] = {}
        self._tasks = BackgroundTasks(log, "SSH backend task")
        self._agent_source = agent_path().read_bytes()

    # --- launching ----------------------------------------------------------------------------------------------

    async def submit(self, spec: LaunchSpec) -> BackendHandle:
        requested = spec.values.get("KERNEL_REMOTE_HOST")
        names = list(self.hosts)
        if requested:
            names = [name for name in names if requested in (name, self.hosts[name].host, self.spellings[name])]
            if not names:
                raise ConfigurationError(
                    f"KERNEL_REMOTE_HOST={requested!r} is not one of remote_hosts {list(self.hosts)}"
                )
        failures: list[str] = []
        for name in await self.selector(names, dict(self.load), spec):
            host = self.hosts[name]
            self.load[name] = self.load.get(name, 0) + 1  # a pending launch counts for least-connection
            try:
                return await self._start_agent(host, name, spec)
            except BackendUnavailable as exc:
                self.load[name] -= 1
                log.warning("kernel %s: skipping %s: %s", spec.kernel_id, name, exc)
                failures.append(f"{name}: {exc}")
            except BaseException:
                self.load[name] -= 1
                raise
        raise BackendUnavailable(f"no remote host could start kernel {spec.kernel_id}", diagnostics=failures, hint="")

    async def _start_agent(self, host: SSHHost, name: str, spec: LaunchSpec) -> BackendHandle:
        params = spec.agent_params(python=self.python)
        if self.log_dir:
            params["log_dir"] = self.log_dir
        keep = ["--keep-log"] if self.keep_logs else []
        if self.tunnel:
            params["kernel_ip"] = "127.0.0.1"  # only reachable through the tunnel
        if not (self.impersonate and spec.username):  # a spawner runs as the SSH user: not for impersonation
            spawner = await self._spawner(host, name, spec.launch_timeout)
            handle = BackendHandle(spec.kernel_id, data={"host": name})
            peer = spawner.slot.connection.get_extra_info("peername")
            handle.update(Observation(PlatformState.STARTING, ip=peer[0] if peer else host.host, host=host.host,
                                      reason=f"agent starting on {name}"))  # fmt: skip
            spawner.launch(handle, params, keep)
            return handle
        slot = await self.pool.acquire(host)
        conn = slot.connection
        command = self._command(spec, keep)
        try:
            process = await conn.create_process(command, encoding=None)
        except (asyncssh.Error, OSError) as exc:
            self.pool.release(slot)
            raise BackendUnavailable(f"cannot start a session on {name}: {exc}") from None
        process.stdin.write(self._agent_source + json.dumps(params).encode() + b"\n")
        process.stdin.write_eof()
        peer = conn.get_extra_info("peername")
        handle = BackendHandle(spec.kernel_id, data={"host": name, "run_as": spec.username})
        handle.update(
            Observation(PlatformState.STARTING, ip=peer[0] if peer else host.host, host=host.host,
                        reason=f"agent starting on {name}")
        )  # fmt: skip
        self._spawn(self._follow(process, handle, peer[0] if peer else host.host, slot))
        return handle

    async def _spawner(self, host: SSHHost, name: str, timeout: float) -> AgentSpawner:
        """This host's live spawner, started on first use (and again after its session ended)."""
        async with self._spawner_locks.setdefault(name, asyncio.Lock()):
            spawner = self._spawners.get(name)
            if spawner is None or not spawner.alive:
                spawner = AgentSpawner(await self.pool.acquire(host), self.pool)
                await spawner.start(self.python, self._agent_source, timeout)
                self._spawners[name] = spawner
            return spawner

    def _command(self, spec: LaunchSpec, extra: list[str]) -> str:
        """A per-launch session's command (impersonation: the spawner runs as the SSH user)."""
        words = remote_command(self.python, self._agent_source, "--params", "-", "--detach", *extra)
        if self.impersonate and spec.username:
            words = ["sudo", "-n", "-u", spec.username, "--", *words]
        return shell_line(words)

    def _spawn(self, coro: Any) -> None:
        self._tasks.spawn(coro)

    async def _follow(
        self, process: asyncssh.SSHClientProcess[bytes], handle: BackendHandle, ip: str, slot: SessionSlot
    ) -> None:
        """Read the launching session: the agent's pid, its payload, its errors, and how the session ended."""
        try:
            await self._read_session(process, handle, ip)
        finally:
            self.pool.release(slot)

    async def _read_session(self, process: asyncssh.SSHClientProcess[bytes], handle: BackendHandle, ip: str) -> None:
        errors: deque[str] = deque(maxlen=20)

        async def read_errors() -> None:
            async for line in process.stderr:
                errors.append(line.decode("utf-8", "replace").rstrip())

        error_reader = asyncio.ensure_future(read_errors())
        async for raw in process.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if line.startswith(AGENT_PID_PREFIX):
                handle.data["agent_pid"] = int(line[len(AGENT_PID_PREFIX) :])
            elif line.startswith(AGENT_LOG_PREFIX):
                note_log_file({handle.kernel_id: handle}, line)
            elif line.startswith(STDOUT_PREFIX):
                handle.deliver_payload(line[len(STDOUT_PREFIX) :].encode())
        result = await process.wait(check=False)
        await error_reader
        handle.data["launch_errors"] = list(errors)
        code = result.exit_status
        if code == 0:  # the agent reported and detached: its control channel tells the rest
            handle.update(Observation(PlatformState.RUNNING, ip=ip, host=handle.observation.host))
        else:
            reason = f"agent exit code {code}" if code is not None else f"SSH session ended ({result.exit_signal})"
            handle.update(
                Observation(PlatformState.EXITED, ip=ip, host=handle.observation.host, exit_code=code,
                            reason=reason, diagnostics=list(errors))
            )  # fmt: skip

    # --- routing (optional tunnels) -----------------------------------------------------------------------------

    async def route(self, handle: BackendHandle, info: dict[str, Any]) -> dict[str, Any]:
        if not self.tunnel:
            return info
        names = ["shell_port", "iopub_port", "stdin_port", "hb_port", "control_port", "agent_port"]
        wanted = handle.data.get("tunnels") or {}
        conn = await self.pool.get(self.hosts[handle.data["host"]])
        listeners, local = [], {}
        for name in names:
            listener = await conn.forward_local_port(
                "127.0.0.1", int(wanted.get(name, 0)), "127.0.0.1", int(info[name])
            )
            listeners.append(listener)
            local[name] = listener.get_port()
        self._tunnels[handle.kernel_id] = listeners
        handle.data["tunnels"] = local
        handle.data["remote_ports"] = {name: int(info[name]) for name in names}
        return {**info, **local, "ip": "127.0.0.1"}

    # --- ending -------------------------------------------------------------------------------------------------

    async def terminate(self, handle: BackendHandle, grace: float = 0.0) -> None:
        """End the agent (SIGTERM, SIGKILL after ``grace``) and its kernel's group if still there; remove the log."""
        for listener in self._tunnels.pop(handle.kernel_id, []):
            listener.close()
        name = handle.data.get("host")
        if name in self.load:
            self.load[name] = max(0, self.load[name] - 1)
        if name not in self.hosts or handle.data.get("agent_exited"):
            return  # the agent ended itself and its kernel, and removed its log
        agent = int(handle.data.get("agent_pid") or 0)
        group = int(handle.data.get("kernel_pgid") or 0)
        steps = max(1, int(grace * 50))
        script = (
            f"a={agent}; g={group}; "
            'if [ "$a" -gt 0 ]; then kill -TERM "$a" 2>/dev/null; i=0; '
            f'while kill -0 "$a" 2>/dev/null && [ $i -lt {steps} ]; do sleep 0.02; i=$((i+1)); done; '
            'kill -KILL "$a" 2>/dev/null; fi; '
            'if [ "$g" -gt 0 ]; then kill -KILL -- "-$g" 2>/dev/null; fi; '
        )
        log_file = handle.data.get("log_file")
        if log_file and not self.keep_logs and "/gp-kernel-" in log_file:  # the agent's private folder: the log and
            # the connection file a killed agent left
            folder = shlex.quote(log_file.rsplit("/", 1)[0])
            script += f"rm -f {shlex.quote(log_file)} {folder}/kernel.json; rmdir {folder} 2>/dev/null; "
        await self._run(name, self._as_kernel_user(handle, script + "true"), timeout=grace + 10)

    async def signal(self, handle: BackendHandle, signum: int) -> None:
        group = int(handle.data.get("kernel_pgid") or 0)
        if group > 0 and handle.data.get("host") in self.hosts:
            await self._run(handle.data["host"], self._as_kernel_user(handle, f"kill -{int(signum)} -- -{group}"), 10)

    async def log_tail(self, handle: BackendHandle, lines: int = 20) -> list[str]:
        tail = list(handle.data.get("launch_errors") or [])
        path = handle.data.get("log_file")
        if path and handle.data.get("host") in self.hosts:
            command = self._as_kernel_user(handle, f"tail -n {int(lines)} {shlex.quote(path)} 2>/dev/null")
            output = await self._run(handle.data["host"], command, 10)
            tail.extend(line for line in output.splitlines() if line.strip())
        return tail[-lines:]

    def _as_kernel_user(self, handle: BackendHandle, script: str) -> str:
        """With impersonation the agent, its kernel and the kernel's private log belong to the kernel's user."""
        user = handle.data.get("run_as")
        return f"sudo -n -u {shlex.quote(user)} -- sh -c {shlex.quote(script)}" if user else script

    def kernel_uid(self, spec: LaunchSpec) -> int | None:
        if self.impersonate and spec.username == "root":
            return 0  # sudo -u root: known here; any other user's id is known only on the host, where the agent checks
        return None

    async def _run(self, name: str, command: str, timeout: float) -> str:
        """Run a short command on host ``name``; returns its output ('' when the host cannot be reached)."""
        try:
            slot = await self.pool.acquire(self.hosts[name])
        except BackendUnavailable as exc:
            log.warning("command on %s failed: %s", name, exc)
            return ""
        try:
            result = await asyncio.wait_for(slot.connection.run(command, check=False), timeout)
        except (asyncssh.Error, OSError, asyncio.TimeoutError) as exc:
            log.warning("command on %s failed: %s", name, exc)
            return ""
        finally:
            self.pool.release(slot)
        return str(result.stdout or "")

    # --- persistence --------------------------------------------------------------------------------------------

    def serialize(self, handle: BackendHandle) -> dict[str, Any]:
        keys = ("host", "agent_pid", "kernel_pgid", "log_file", "run_as", "tunnels", "remote_ports")
        return {"kernel_id": handle.kernel_id, **{k: handle.data[k] for k in keys if k in handle.data}}

    async def restore(self, data: dict[str, Any]) -> BackendHandle:
        handle = BackendHandle(str(data.get("kernel_id", "")), data=dict(data))
        name = data.get("host")
        if name not in self.hosts:
            handle.update(Observation(PlatformState.GONE, reason=f"host {name!r} is no longer in remote_hosts"))
            return handle
        self.load[name] = self.load.get(name, 0) + 1
        conn = await self.pool.get(self.hosts[name])
        peer = conn.get_extra_info("peername")
        if self.tunnel and data.get("remote_ports"):  # bring the tunnels back on the same local ports
            await self.route(handle, {**data["remote_ports"], "ip": peer[0]})
        handle.update(Observation(PlatformState.RUNNING, ip=peer[0] if peer else self.hosts[name].host, host=name))
        return handle

    async def close(self) -> None:
        for spawner in self._spawners.values():
            spawner.close()
        self._spawners.clear()
        self._tasks.cancel()
        for listeners in self._tunnels.values():
            for listener in listeners:
                listener.close()
        self._tunnels.clear()
        with contextlib.suppress(Exception):
            await self.pool.close()
