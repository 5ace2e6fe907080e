"""The server's end of the control channel to one agent.

One long-lived TCP connection per kernel, opened after the handshake. The server sends requests (``ping``,
``signal``, ``restart``, ``shutdown``); the agent answers each and pushes events (``kernel-exited``) as they
happen, so the server learns of a dead kernel without polling anything. Framing and sealing are in
:mod:`.handshake`; the message catalogue is in ``docs/protocol.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
from collections.abc import Callable
from typing import Any

from .errors import ProtocolError
from .handshake import (
    HELLO_NONCE_BYTES,
    ControlCipher,
    control_keys,
    frame,
    frame_length,
    parse_agent_hello,
    server_hello,
)
from .logsafe import safe_logger

log = safe_logger("gateway_provisioners.control")

EventHandler = Callable[[dict[str, Any]], None]


class ControlChannelClosed(ConnectionError):
    """The control connection to the agent is gone (the agent exited, or the network dropped)."""


def _detect_dead_peer(sock: Any) -> None:
    """An agent whose host stops answering never closes the connection: keepalive probes (idle 10 s, 3 x 5 s) and
    TCP_USER_TIMEOUT (25 s for unacknowledged data) make it count as gone, so the kernel is not shown alive for ever."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 25_000)


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    header = await reader.readexactly(4)
    return await reader.readexactly(frame_length(header))


class ControlConnection:
    """An authenticated control connection to one agent; use :meth:`open`, then :meth:`request`, then :meth:`close`.

    ``on_event`` is called (on the event loop) for every event the agent pushes, and once with
    ``{"event": "disconnected"}`` when the connection ends for any reason other than :meth:`close`.
    """

    def __init__(self, kernel_id: str, token: bytes, on_event: EventHandler | None = None) -> None:
        self.kernel_id = kernel_id
        self._token = token
        self._on_event = on_event or (lambda event: None)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._cipher: ControlCipher | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._read_task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def is_open(self) -> bool:
        return self._read_task is not None and not self._read_task.done()

    async def open(self, host: str, port: int, timeout: float = 5.0) -> dict[str, Any]:
        """Connect and authenticate; returns the agent's first state report (a ``ping`` reply).

        Whatever the process on that port sends, the errors are typed: :class:`ProtocolError` for bytes that are not
        a valid hello, :class:`ControlChannelClosed` (a ``ConnectionError``) when it hangs up first — an agent
        answers so when it must make room, so the caller may try again — and ``asyncio.TimeoutError``.
        """
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        _detect_dead_peer(writer.get_extra_info("socket"))
        try:
            try:
                data = await asyncio.wait_for(_read_frame(reader), timeout)
            except asyncio.IncompleteReadError:
                raise ControlChannelClosed(f"{host}:{port} closed the connection before the agent hello") from None
            agent_nonce = parse_agent_hello(data, self.kernel_id)
            server_nonce = os.urandom(HELLO_NONCE_BYTES)
            writer.write(frame(server_hello(server_nonce)))
            keys = control_keys(self._token, self.kernel_id, agent_nonce, server_nonce)
            self._cipher = ControlCipher(keys, sending="s2a")
        except BaseException:
            writer.close()
            raise
        self._reader, self._writer = reader, writer
        self._read_task = asyncio.ensure_future(self._read_loop())
        # The first sealed exchange proves both sides hold the token.
        return await self.request("ping", timeout=timeout)

    async def request(self, op: str, timeout: float = 10.0, **args: Any) -> dict[str, Any]:
        """Send one request and wait for its reply. Raises :class:`ControlChannelClosed` if the agent is gone."""
        if not self.is_open or self._writer is None or self._cipher is None:
            raise ControlChannelClosed(f"no control connection to the agent of kernel {self.kernel_id}")
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            self._writer.write(frame(self._cipher.seal({"op": op, "id": request_id, **args})))
            await self._writer.drain()
            return await asyncio.wait_for(future, timeout)
        except (ConnectionError, RuntimeError) as exc:
            raise ControlChannelClosed(f"control connection to kernel {self.kernel_id} lost: {exc}") from exc
        finally:
            self._pending.pop(request_id, None)
            if future.done() and not future.cancelled():
                future.exception()  # the read loop may have failed it while we raised already: mark it seen
            future.cancel()

    async def _read_loop(self) -> None:
        assert self._reader is not None and self._cipher is not None
        reason = "agent closed the connection"
        try:
            while True:
                message = self._cipher.open(await _read_frame(self._reader))
                if "reply" in message:
                    reply_id = message["reply"]
                    future = self._pending.get(reply_id) if isinstance(reply_id, int) else None  # our ids are ints
                    if future is not None and not future.done():
                        future.set_result(message)
                elif "event" in message:
                    self._on_event(message)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except ProtocolError as exc:
            reason = str(exc)
            log.warning("kernel %s: control channel dropped: %s", self.kernel_id, exc)
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ControlChannelClosed(reason))
            if self._writer is not None:
                self._writer.close()
            if not self._closing:
                self._on_event({"event": "disconnected", "reason": reason})

    async def wait_closed_by_agent(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the agent to close the connection (it does when it exits)."""
        if self._read_task is None:
            return True
        done, _ = await asyncio.wait({self._read_task}, timeout=timeout)
        return bool(done)

    async def close(self) -> None:
        """Close the connection (the agent keeps running). Idempotent."""
        self._closing = True
        if self._writer is not None:
            self._writer.close()
            try:  # closing flushes what is buffered: bounded, an agent whose host stopped answering never acknowledges
                await asyncio.wait_for(self._writer.wait_closed(), 1.0)
            except asyncio.TimeoutError:
                self._writer.transport.abort()
            except Exception:  # the connection is going away either way
                pass
        if self._read_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._read_task
