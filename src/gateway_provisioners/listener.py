"""The response listener: where agents in callback mode deliver their sealed connection info.

A TCP server on the event loop. Each connection sends one envelope line and gets one reply line
(``{"gp":2,"status":"accepted"}`` or ``{"gp":2,"status":"rejected","reason":...}``) — see docs/protocol.md. Nothing a
peer sends can stop the listener or another launch, and no number of peers can keep a real agent out:

* every connection has a size cap and a read deadline, and every bad input gets a reply and one log line;
* every connection the listener holds counts against ``max_connections`` — while it is read, answered, or drained
  after a rejection — and that bound is kept well below the process's open-files limit;
* when all slots are taken, a new connection is not turned away: the oldest connection makes room (one already
  answered first, else the one waiting longest for its line, which is answered ``busy``). A real agent sends its line
  the moment it connects, so idle peers cannot hold the listener against it;
* the listener accepts connections itself, so that running out of file descriptors ("Too many open files") frees
  one of its own connections and is logged once in a while, instead of stalling and logging on every attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import SupportsIndex

from .core.broker import ConnectionBroker
from .core.handshake import MAX_PAYLOAD_BYTES, Reply, make_reply
from .core.logsafe import safe_logger
from .per_loop import PerLoop

log = safe_logger("gateway_provisioners.listener")

DEFAULT_PORT = 8877
BACKLOG = 512
ACCEPTS_PER_WAKEUP = 8  # then let the accepted connections be read before taking more (and evicting for them)
OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
OUT_OF_DESCRIPTORS_LOG_EVERY = 10.0  # seconds between two warnings about it
PAUSE_WHEN_OUT_OF_DESCRIPTORS = 0.05  # seconds; only when the listener has no connection of its own to give up
SHARE_OF_OPEN_FILES_LIMIT = 4  # the listener holds at most a quarter of the process's descriptors


class _Reader(asyncio.StreamReader):
    """A stream reader that remembers whether the peer has sent anything at all."""

    received = False

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        self.received = self.received or bool(data)
        super().feed_data(data)


class _Connection:
    """One accepted peer: its socket, the task serving it, its stream once made, and whether it was answered."""

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.peer = peer
        self.reader: _Reader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None
        self.answered = False

    @property
    def silent(self) -> bool:
        """Nothing has arrived from the peer: not read by us, and not waiting in the socket either."""
        if self.reader is not None and self.reader.received:
            return False
        try:
            return not self.sock.recv(1, socket.MSG_PEEK)  # b"": the peer closed without sending
        except BlockingIOError:
            return True
        except OSError:
            return False

    def drop(self, reply: bytes = b"") -> None:
        """Free the descriptor: send ``reply`` if it fits the socket buffer, then abort (closed on the next turn of
        the loop). Before its stream exists, the socket is closed once the cancelled task has let go of it."""
        if self.writer is not None:
            if reply and not self.answered:
                with contextlib.suppress(OSError, RuntimeError):
                    self.writer.write(reply)
            self.writer.transport.abort()
        if self.task is not None:
            self.task.cancel()
            if self.writer is None:
                self.task.add_done_callback(lambda _: self.sock.close())
        else:
            self.sock.close()


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
        Connections held at once (at most a quarter of the open-files limit); a further one makes the oldest give
        way.
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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sockets: list[socket.socket] = []
        self._connections: dict[_Connection, None] = {}  # oldest first
        self._dropped_at_close: list[asyncio.Task[None]] = []
        self._out_of_descriptors = 0  # accepts that failed for want of a descriptor since the last warning
        self._out_of_descriptors_logged = -OUT_OF_DESCRIPTORS_LOG_EVERY

    @property
    def address(self) -> str:
        """``host:port`` to give agents."""
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{host}:{self.port}"

    @property
    def connections(self) -> int:
        """Connections held right now (each one file descriptor)."""
        return len(self._connections)

    async def start(self) -> None:
        """Bind (trying further ports when taken) and start serving."""
        loop = asyncio.get_running_loop()
        bind_ip = ("::" if ":" in self.ip else "0.0.0.0") if self.bind_any else self.ip
        candidates = [0] if self.port == 0 else [self.port + i for i in range(self.port_retries + 1)]
        last_error: OSError | None = None
        for port in candidates:
            try:
                self._sockets = await _bind(loop, bind_ip, port)
            except OSError as exc:
                if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                    raise
                last_error = exc
                continue
            self.port = self._sockets[0].getsockname()[1]
            self.max_connections = _within_descriptor_limit(self.max_connections)
            self._loop = loop
            for sock in self._sockets:
                loop.add_reader(sock.fileno(), self._accept, sock)
            log.info(
                "response listener on %s (bound %s, at most %d connections)",
                self.address,
                bind_ip,
                self.max_connections,
            )
            return
        raise OSError(
            f"no free response port in {candidates[0]}..{candidates[-1]} on {bind_ip}: {last_error}; "
            "set GP_RESPONSE_PORT or GP_RESPONSE_PORT_RETRIES"
        )

    # -- accepting -------------------------------------------------------------------------------------------------

    def _accept(self, listening: socket.socket) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                sock, address = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in OUT_OF_DESCRIPTORS:
                    self._no_descriptor(listening, exc)
                return  # anything else (a peer that reset before we took it): the next wakeup goes on
            sock.setblocking(False)
            if self._connections and len(self._connections) >= self.max_connections:
                self._make_room()
            self._serve(sock, _peer(address))

    def _make_room(self) -> None:
        """Drop the connection that matters least, oldest first: one already answered, else one whose peer has
        sent nothing yet (a real agent's line is on its way the moment it connects), else the one waiting longest
        (a peer that dribbles bytes)."""
        victim = (
            next((c for c in self._connections if c.answered), None)
            or next((c for c in self._connections if c.silent), None)
            or next(iter(self._connections))
        )
        del self._connections[victim]
        victim.drop(make_reply(Reply.BUSY, "the listener is full and this connection had sent nothing: try again"))

    def _no_descriptor(self, listening: socket.socket, exc: OSError) -> None:
        """The process is out of descriptors. Give up one of ours so the next accept works; say so now and then."""
        self._out_of_descriptors += 1
        now = time.monotonic()
        if now - self._out_of_descriptors_logged >= OUT_OF_DESCRIPTORS_LOG_EVERY:
            log.warning(
                "response listener: out of file descriptors (%s; %d times since the last warning), holding %d "
                "connections; raise the open-files limit (ulimit -n) if this goes on",
                exc.strerror, self._out_of_descriptors, len(self._connections),
            )  # fmt: skip
            self._out_of_descriptors, self._out_of_descriptors_logged = 0, now
        assert self._loop is not None
        self._loop.remove_reader(listening.fileno())
        if self._connections:
            # The dropped socket is closed by callbacks queued now; accept again once they have run.
            self._make_room()
            self._loop.call_soon(self._resume, listening)
        else:
            # All descriptors are held elsewhere in the process: retry shortly rather than spin on a full backlog.
            self._loop.call_later(PAUSE_WHEN_OUT_OF_DESCRIPTORS, self._resume, listening)

    def _resume(self, listening: socket.socket) -> None:
        if self._loop is not None and listening in self._sockets and listening.fileno() >= 0:
            self._loop.add_reader(listening.fileno(), self._accept, listening)

    # -- one connection ----------------------------------------------------------------------------------------------

    def _serve(self, sock: socket.socket, peer: str) -> None:
        assert self._loop is not None
        connection = _Connection(sock, peer)
        self._connections[connection] = None
        connection.task = self._loop.create_task(self._exchange(connection))

    async def _exchange(self, connection: _Connection) -> None:
        writer: asyncio.StreamWriter | None = None
        try:
            assert self._loop is not None
            reader = connection.reader = _Reader(limit=self.max_bytes + 1)
            protocol = asyncio.StreamReaderProtocol(reader)
            transport, _ = await self._loop.connect_accepted_socket(lambda: protocol, sock=connection.sock)
            writer = connection.writer = asyncio.StreamWriter(transport, protocol, reader, self._loop)
            code, detail = await self._receive(reader, connection.peer)
            await self._reply(connection, code, detail, reader)
        except asyncio.CancelledError:
            pass  # dropped to make room, or the listener is closing: the dropper closed the socket
        except Exception:  # the listener must outlive any peer
            log.exception("response listener: unexpected error with %s", connection.peer)
        finally:
            if self._connections.pop(connection, False) is None:  # still ours: close it here
                connection.writer = writer
                if writer is not None and writer.transport.get_write_buffer_size():
                    writer.transport.abort()  # a peer that does not read its reply keeps nothing of ours
                elif writer is not None:
                    writer.close()
                else:
                    connection.sock.close()

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
    async def _reply(connection: _Connection, code: str, detail: str, reader: asyncio.StreamReader) -> None:
        writer = connection.writer
        assert writer is not None
        connection.answered = True  # from now on, the first to give way when the listener is full
        with contextlib.suppress(ConnectionError, OSError, asyncio.TimeoutError):
            writer.write(make_reply(code, detail))
            await asyncio.wait_for(writer.drain(), 5)
            if code != Reply.ACCEPTED:
                # Closing with unread input makes the kernel reset the connection, and the peer would lose the
                # reply: say we are done, then discard what is still arriving, briefly and boundedly.
                writer.write_eof()
                await asyncio.wait_for(_discard(reader, 8 * 1024 * 1024), 1.0)

    # -- closing -----------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop accepting and drop every connection. Safe to call after the loop closed (it frees the port)."""
        loop_open = self._loop is not None and not self._loop.is_closed()
        for sock in self._sockets:
            if loop_open and sock.fileno() >= 0:
                assert self._loop is not None
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets = []
        if loop_open:
            while self._connections:
                connection, _ = self._connections.popitem()
                connection.drop()
                if connection.task is not None:
                    self._dropped_at_close.append(connection.task)

    async def wait_closed(self) -> None:
        tasks, self._dropped_at_close = self._dropped_at_close, []
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> ResponseListener:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        await self.wait_closed()


async def _bind(loop: asyncio.AbstractEventLoop, host: str, port: int) -> list[socket.socket]:
    """Listening, non-blocking sockets for every address of ``host`` (as ``asyncio.start_server`` would bind)."""
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _within_descriptor_limit(wanted: int) -> int:
    """``wanted``, but at most a share of the process's open-files limit: the server needs descriptors too."""
    try:
        import resource  # Unix only

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return wanted
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft // SHARE_OF_OPEN_FILES_LIMIT))


async def _discard(reader: asyncio.StreamReader, limit: int) -> None:
    while limit > 0 and (chunk := await reader.read(65536)):
        limit -= len(chunk)


def _peer(address: object) -> str:
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)


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
