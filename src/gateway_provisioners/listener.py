"""The response listener: where agents in callback mode deliver their sealed connection info.

An asyncio TCP server. Each connection sends one envelope line and gets one reply line
(``{"gp":2,"status":"accepted"}`` or ``{"gp":2,"status":"rejected","reason":...}``) — see docs/protocol.md. Every
connection has a size cap and a read deadline, connections are served concurrently up to a bound, and nothing a peer
sends can stop the listener or another launch: the worst a bad peer gets is a rejection and a warning in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from dataclasses import dataclass, field
from types import TracebackType

from .core.broker import ConnectionBroker
from .core.handshake import MAX_PAYLOAD_BYTES, Reply, make_reply
from .per_loop import PerLoop

log = logging.getLogger("gateway_provisioners.listener")

DEFAULT_PORT = 8877


class ResponseListener:
    """Receive callback-mode payloads and hand them to ``broker``.

    Parameters
    ----------
    broker:
        Matches payloads to waiting launches.
    ip:
        The address agents are told to call (``GP_RESPONSE_IP``); also the bind address unless ``bind_any``.
    port:
        The first port tried (``GP_RESPONSE_PORT``, 8877); 0 picks a free one.
    port_retries:
        How many further ports (port+1, port+2, ...) to try when the port is taken (``GP_RESPONSE_PORT_RETRIES``).
    bind_any:
        Bind every interface but still advertise ``ip`` (``GP_RESPONSE_ADDR_ANY``).
    read_timeout:
        Seconds a connection may take to send its payload.
    max_connections:
        Connections served at once; more are answered "busy" and closed.
    """

    def __init__(
        self,
        broker: ConnectionBroker,
        ip: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        port_retries: int = 10,
        bind_any: bool = False,
        read_timeout: float = 10.0,
        max_bytes: int = MAX_PAYLOAD_BYTES,
        max_connections: int = 256,
    ) -> None:
        self.broker = broker
        self.ip = ip
        self.port = port
        self.port_retries = port_retries
        self.bind_any = bind_any
        self.read_timeout = read_timeout
        self.max_bytes = max_bytes
        self.max_connections = max_connections
        self._server: asyncio.base_events.Server | None = None
        self._active = 0

    @property
    def address(self) -> str:
        """``host:port`` to give agents."""
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{host}:{self.port}"

    async def start(self) -> None:
        """Bind (trying further ports when taken) and start serving."""
        bind_ip = ("::" if ":" in self.ip else "0.0.0.0") if self.bind_any else self.ip
        candidates = [0] if self.port == 0 else [self.port + i for i in range(self.port_retries + 1)]
        last_error: OSError | None = None
        for port in candidates:
            try:
                self._server = await asyncio.start_server(
                    self._serve, bind_ip, port, limit=self.max_bytes + 1, family=socket.AF_UNSPEC, backlog=512
                )
            except OSError as exc:
                if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                    raise
                last_error = exc
                continue
            self.port = self._server.sockets[0].getsockname()[1]
            log.info("response listener on %s (bound %s)", self.address, bind_ip)
            return
        raise OSError(
            f"no free response port in {candidates[0]}..{candidates[-1]} on {bind_ip}: {last_error}; "
            "set GP_RESPONSE_PORT or GP_RESPONSE_PORT_RETRIES"
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer(writer)
        if self._active >= self.max_connections:
            await self._reply(writer, Reply.BUSY, "too many connections", reader)
            return
        self._active += 1
        try:
            code, detail = await self._receive(reader, peer)
            await self._reply(writer, code, detail, reader)
        except asyncio.CancelledError:
            writer.close()  # the listener is closing; ending here quietly is the point
        except Exception:  # the listener must outlive any peer
            log.exception("response listener: unexpected error with %s", peer)
            writer.close()
        finally:
            self._active -= 1

    async def _receive(self, reader: asyncio.StreamReader, peer: str) -> tuple[str, str]:
        try:
            data = await asyncio.wait_for(reader.readuntil(b"\n"), self.read_timeout)
        except asyncio.TimeoutError:
            return self.broker.reject(Reply.TIMEOUT, f"nothing complete within {self.read_timeout:g} s", peer)
        except asyncio.LimitOverrunError:
            return self.broker.reject(Reply.TOO_LARGE, f"more than {self.max_bytes} bytes", peer)
        except asyncio.IncompleteReadError as exc:
            data = exc.partial  # the agent closed its side without a newline: judge what it sent
            if not data.strip():
                return self.broker.reject(Reply.MALFORMED, "empty payload", peer)
        except ConnectionError as exc:
            return self.broker.reject(Reply.MALFORMED, f"connection failed: {exc}", peer)
        return self.broker.accept(data.strip(), peer=peer)

    @staticmethod
    async def _reply(
        writer: asyncio.StreamWriter, code: str, detail: str, reader: asyncio.StreamReader | None = None
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError, asyncio.TimeoutError):
            writer.write(make_reply(code, detail))
            await asyncio.wait_for(writer.drain(), 5)
            if reader is not None and code != Reply.ACCEPTED:
                # Closing with unread input makes the kernel reset the connection, and the peer would lose the
                # reply: say we are done, then discard what is still arriving, briefly and boundedly.
                writer.write_eof()
                await asyncio.wait_for(_discard(reader, 8 * 1024 * 1024), 1.0)
        writer.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> ResponseListener:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        await self.wait_closed()


async def _discard(reader: asyncio.StreamReader, limit: int) -> None:
    while limit > 0 and (chunk := await reader.read(65536)):
        limit -= len(chunk)


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)


@dataclass
class _LoopShare:
    """What one event loop's kernels share: the broker, the listener, and the lock that starts it once."""

    broker: ConnectionBroker = field(default_factory=ConnectionBroker)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    listener: ResponseListener | None = None

    def release(self) -> None:
        """Its loop has closed: free the listener's port (a closed loop still closes the listening sockets)."""
        if self.listener is not None:
            self.listener.close()


_shares: PerLoop[_LoopShare] = PerLoop(release=_LoopShare.release)


def _share() -> _LoopShare:
    return _shares.get(None, _LoopShare)


def shared_broker() -> ConnectionBroker:
    """The process's one connection broker for the running event loop."""
    return _share().broker


async def shared_listener(**settings: object) -> ResponseListener:
    """The process's one response listener for the running event loop, started on first use with ``settings``.

    Later calls return the same listener whatever their settings: one port serves every callback-mode kernel.
    """
    share = _share()
    async with share.lock:
        if share.listener is None:
            listener = ResponseListener(share.broker, **settings)  # type: ignore[arg-type]
            await listener.start()
            share.listener = listener
        return share.listener
