"""A throw-away SSH server on 127.0.0.1 for the demo, so it needs no sshd, no root and no configuration.

It accepts one generated client key, presents one generated host key (the client checks it: strict host keys stay
on), and runs each command with ``/bin/sh -c`` as the user running the demo.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh


@dataclass
class EmbeddedSSHServer:
    address: str  # host:port
    known_hosts: Path
    client_key: Path


async def _pump(
    reader: asyncio.StreamReader | asyncssh.SSHReader[bytes], writer: asyncio.StreamWriter | asyncssh.SSHWriter[bytes]
) -> None:  # type: ignore[type-arg]
    while data := await reader.read(65536):
        writer.write(data)
    with contextlib.suppress(OSError, asyncssh.Error):
        writer.write_eof()


async def _run_command(process: asyncssh.SSHServerProcess[bytes]) -> None:
    local = await asyncio.create_subprocess_exec(
        "/bin/sh", "-c", process.command or "true",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert local.stdin and local.stdout and local.stderr
    feeding = asyncio.ensure_future(_pump(process.stdin, local.stdin))
    await asyncio.gather(_pump(local.stdout, process.stdout), _pump(local.stderr, process.stderr))
    code = await local.wait()
    feeding.cancel()
    process.exit(code)


@contextlib.asynccontextmanager
async def embedded_sshd(folder: Path) -> AsyncIterator[EmbeddedSSHServer]:
    """Serve SSH on a free port of 127.0.0.1 until the block ends; keys and known_hosts are written to ``folder``."""
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key_path = folder / "client_ed25519"
    client_key.write_private_key(str(client_key_path))
    client_key_path.chmod(0o600)
    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        authorized_client_keys=asyncssh.import_authorized_keys(client_key.export_public_key().decode()),
        process_factory=_run_command,
        encoding=None,
    )
    port = server.sockets[0].getsockname()[1]
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key.export_public_key().decode().strip()}\n")
    try:
        yield EmbeddedSSHServer(f"127.0.0.1:{port}", known_hosts, client_key_path)
    finally:
        server.close()
        await server.wait_closed()
