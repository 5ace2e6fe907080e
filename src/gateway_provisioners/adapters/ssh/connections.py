"""SSH connections to the hosts: one multiplexed asyncssh connection per host, shared by every kernel there,
with keepalives; more connections when a host's sessions are all in use (OpenSSH's MaxSessions).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncssh

from ...core.errors import BackendUnavailable, ConfigurationError


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
