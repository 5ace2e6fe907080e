"""The SSH backend: the agent runs on one of a pool of hosts, started over SSH (asyncssh).

* One multiplexed SSH connection per host (:class:`SSHConnectionPool`), shared by every kernel on that host, with
  keepalives; a dead connection is replaced on next use.
* Nothing is installed on the hosts: the agent's source travels on the SSH channel's standard input, followed by its
  launch parameters (token included), and the remote Python runs it (``python3 -c <stub>``). No secret and no
  client-supplied value appears in the remote command line, so nothing needs shell quoting but the operator's own
  settings, which are quoted.
* The agent reports on the channel (stdout mode) and then detaches (``--detach``): the SSH session ends and only the
  agent's authenticated control connection remains, so a host serves any number of kernels over one connection.
* Host keys are checked against known_hosts by default; the user's keys, agent and ``~/.ssh/config`` are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import shlex
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import asyncssh

from ..agent import agent_path
from ..core.backend import Backend, BackendHandle, Observation, PlatformState
from ..core.errors import BackendUnavailable, ConfigurationError
from ..core.handshake import AGENT_LOG_PREFIX, STDOUT_PREFIX
from ..core.launch import ConnectionMode, LaunchSpec
from ..core.tasks import BackgroundTasks

log = logging.getLogger("gateway_provisioners.ssh")

AGENT_PID_PREFIX = "GP-AGENT-PID "  # the agent's pid (--detach: "<pid>"; --spawner: "<kernel id> <pid>")
AGENT_EXIT_PREFIX = "GP-AGENT-EXIT "  # --spawner: "<kernel id> <exit code>"
SPAWNER_READY_PREFIX = "GP-SPAWNER-READY "
# Runs the agent from the first N bytes of standard input; the launch parameters follow on the same stream.
_STUB = "import sys;exec(compile(sys.stdin.buffer.read({size}),'gp_agent.py','exec'))"


@dataclass(frozen=True)
class SSHHost:
    """``[user@]host[:port]``."""

    host: str
    port: int = 22
    user: str | None = None

    @classmethod
    def parse(cls, text: str, default_port: int = 22, default_user: str | None = None) -> SSHHost:
        spec = text.strip()
        user, _, rest = spec.rpartition("@") if "@" in spec else (default_user, "", spec)
        host, port = rest, default_port
        if rest.startswith("["):  # [ipv6]:port
            host, _, tail = rest[1:].partition("]")
            port = int(tail[1:]) if tail.startswith(":") else default_port
        elif rest.count(":") == 1:
            host, _, port_text = rest.partition(":")
            if not port_text.isdigit():
                raise ConfigurationError(f"remote host {text!r}: port {port_text!r} is not a number")
            port = int(port_text)
        if not host:
            raise ConfigurationError(f"remote host {text!r} names no host")
        return cls(host, port, user or None)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user + '@' if self.user else ''}{host}:{self.port}"


@dataclass
class SSHSettings:
    """How to reach the hosts. ``known_hosts=None`` means ``~/.ssh/known_hosts``; ``check_host_keys=False`` trusts
    any host key (never the default)."""

    known_hosts: str | None = None
    check_host_keys: bool = True
    client_keys: Sequence[str] | None = None
    gss_auth: bool = False
    connect_timeout: float = 10.0
    keepalive_interval: float = 15.0


@dataclass(eq=False)
class SessionSlot:
    """One SSH session on one pooled connection, held from :meth:`SSHConnectionPool.acquire` to ``release``."""

    connection: asyncssh.SSHClientConnection
    pool_entry: list[int]  # [sessions open on this connection]


class SSHConnectionPool:
    """SSH connections per host, shared by every kernel on it. An async context manager.

    OpenSSH allows only a few sessions per connection at once (``MaxSessions``, 10 by default), and each launch holds
    one until its agent detaches. So a host gets one connection while that is enough, and more when many kernels
    start at once; a broken connection is replaced on next use.
    """

    def __init__(self, settings: SSHSettings, sessions_per_connection: int = 8) -> None:
        self.settings = settings
        self.sessions_per_connection = sessions_per_connection
        self._connections: dict[SSHHost, list[tuple[asyncssh.SSHClientConnection, list[int]]]] = {}
        self._locks: dict[SSHHost, asyncio.Lock] = {}

    async def acquire(self, host: SSHHost) -> SessionSlot:
        """A session slot on a live connection to ``host``, connecting when every connection is full or broken."""
        async with self._locks.setdefault(host, asyncio.Lock()):
            entries = [e for e in self._connections.get(host, []) if not e[0].is_closed()]
            self._connections[host] = entries
            for connection, count in entries:
                if count[0] < self.sessions_per_connection:
                    count[0] += 1
                    return SessionSlot(connection, count)
            connection = await self._connect(host)
            entry = (connection, [1])
            entries.append(entry)
            return SessionSlot(connection, entry[1])

    @staticmethod
    def release(slot: SessionSlot) -> None:
        slot.pool_entry[0] -= 1

    async def get(self, host: SSHHost) -> asyncssh.SSHClientConnection:
        """A live connection to ``host`` for channels that are not sessions (port forwards)."""
        slot = await self.acquire(host)
        self.release(slot)
        return slot.connection

    async def _connect(self, host: SSHHost) -> asyncssh.SSHClientConnection:
        s = self.settings
        options: dict[str, Any] = {
            "port": host.port,
            "connect_timeout": s.connect_timeout,
            "keepalive_interval": s.keepalive_interval,
            "keepalive_count_max": 3,
            "gss_auth": s.gss_auth,
        }
        if host.user:
            options["username"] = host.user
        if not s.check_host_keys:
            options["known_hosts"] = None
        elif s.known_hosts:
            options["known_hosts"] = s.known_hosts
        if s.client_keys:
            options["client_keys"] = list(s.client_keys)
        try:
            return await asyncssh.connect(host.host, **options)
        except asyncssh.HostKeyNotVerifiable as exc:
            raise BackendUnavailable(
                f"host key of {host.host}:{host.port} is not trusted ({exc.reason})",
                hint=f"add it to {s.known_hosts or '~/.ssh/known_hosts'} "
                f"(e.g. ssh-keyscan -p {host.port} {host.host} >> ~/.ssh/known_hosts) after checking its fingerprint",
            ) from None
        except asyncssh.PermissionDenied as exc:
            raise BackendUnavailable(
                f"SSH login to {host} refused ({exc.reason})",
                hint="check remote_user and that one of client_keys (or your SSH agent) is authorized there",
            ) from None
        except (OSError, asyncssh.Error, asyncio.TimeoutError) as exc:
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            raise BackendUnavailable(f"cannot reach {host}: {reason}") from None

    async def close(self) -> None:
        for entries in self._connections.values():
            for connection, _ in entries:
                connection.close()
        self._connections.clear()

    async def __aenter__(self) -> SSHConnectionPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


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
        stub = _STUB.format(size=len(agent_source))
        command = "cd ~ 2>/dev/null; exec " + " ".join(shlex.quote(w) for w in (python, "-c", stub, "--spawner"))
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
HostSelector = Callable[[list[str], dict[str, int], LaunchSpec], Awaitable[list[str]]]


class RoundRobin:
    """Each launch starts at the host after the previous launch's first choice."""

    def __init__(self) -> None:
        self._next = 0

    async def __call__(self, hosts: list[str], load: dict[str, int], spec: LaunchSpec) -> list[str]:
        start = self._next % len(hosts)
        self._next += 1
        return hosts[start:] + hosts[:start]


async def least_connection(hosts: list[str], load: dict[str, int], spec: LaunchSpec) -> list[str]:
    """Fewest kernels (counting launches still starting) first; configured order breaks ties."""
    return sorted(hosts, key=lambda host: (load.get(host, 0), hosts.index(host)))


def load_selector(name: str) -> HostSelector:
    """``round-robin``, ``least-connection``, or ``module:callable`` naming an async :data:`HostSelector`."""
    if name == "round-robin":
        return RoundRobin()
    if name == "least-connection":
        return least_connection
    module, _, attribute = name.partition(":")
    if not module or not attribute:
        raise ConfigurationError(
            f"load_balancing_algorithm {name!r}: use round-robin, least-connection or module:function"
        )
    try:
        return getattr(importlib.import_module(module), attribute)  # type: ignore[no-any-return]
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"load_balancing_algorithm {name!r} cannot be imported: {exc}") from None


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
        stub = _STUB.format(size=len(self._agent_source))
        words = [self.python, "-c", stub, "--params", "-", "--detach", *extra]
        if self.impersonate and spec.username:
            words = ["sudo", "-n", "-u", spec.username, "--", *words]
        # Every word is quoted: operator settings may hold spaces; client values never reach this line.
        return "cd ~ 2>/dev/null; exec " + " ".join(shlex.quote(word) for word in words)

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
