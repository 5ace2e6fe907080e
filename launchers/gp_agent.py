#!/usr/bin/env python3
"""gateway-provisioners kernel agent.

Runs next to a kernel (on an SSH host, in a container, pod or YARN container) and:

* reads its launch parameters (kernel id, launch token, connection mode, the kernel's own argv);
* binds and holds the kernel's five ports and its control port (or takes the ports the server assigned);
* starts the kernel as a child process in its own process group, with a connection file it writes;
* waits until the kernel listens on its ports, or reports at once why it exited;
* sends the sealed connection info back (callback: to the server's response address; stdout: on its own output);
* serves the authenticated control channel: ping, signal, restart in place (same ports), shutdown;
* ends the kernel's whole process group when the kernel or the agent ends (a guardian process does it when the agent
  is killed), so nothing is orphaned;
* ends itself and its kernel when no server has been connected for a while (the watchdog, on by default);
* keeps the kernel's log private: 0600, in a 0700 folder of its own; never writes through a link or into a file it did
  not create; refuses to run a kernel as root unless the server allows it.

Standard library plus ``cryptography`` only; Python 3.9 or newer. The protocol is specified in docs/protocol.md of
gateway-provisioners; this file implements it independently of the server and both pass tests/vectors.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import errno
import functools
import json
import logging
import os
import random
import select
import shutil
import signal
import socket
import stat
import struct
import sys
import tempfile
import time
import uuid
from typing import Any, ClassVar, Dict, List, Optional, Tuple

AGENT_VERSION = "1.0.0"
PROTOCOL_VERSION = 2
SUPPORTED_VERSIONS = (2,)
STDOUT_PREFIX = "GP-CONNECTION-INFO "
AGENT_PID_PREFIX = "GP-AGENT-PID "  # --detach: "<pid>"; --spawner: "<kernel id> <pid>"
AGENT_EXIT_PREFIX = "GP-AGENT-EXIT "  # --spawner: "<kernel id> <exit code>"
AGENT_LOG_PREFIX = "GP-AGENT-LOG "  # "<kernel id> <path of the kernel's log file>"
SPAWNER_READY_PREFIX = "GP-SPAWNER-READY "  # --spawner: "<pid>", once the agent's source has been read
MAX_CONTROL_FRAME_BYTES = 1024 * 1024
PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port")
LOG_TAIL_LINES = 20
EXIT_STARTUP_FAILED = 3
MAX_CONTROL_CONNECTIONS = 8
AUTHENTICATE_WITHIN = 10.0  # seconds a control connection has for the server hello and the first sealed frame
CALLBACK_MIN_SECONDS = 15.0  # callback retries last at least this long: longer than the listener's read deadline
CALLBACK_REFUSALS = 5  # connection refused this many times in a row: nobody listens there, give up
EXIT_BAD_PARAMS = 2
DEFAULT_WATCHDOG = 60.0  # seconds without a connected server before the agent ends itself and its kernel

log = logging.getLogger("gp-agent")


# --- protocol (same rules as gateway_provisioners.core.handshake; checked by the shared test vectors) ---------------


class Protocol:
    """Key derivation, payload sealing and control-frame ciphers. Imports ``cryptography`` on first use."""

    PAYLOAD_INFO = b"gp/2 payload"
    CONTROL_INFO: ClassVar[Dict[str, bytes]] = {"s2a": b"gp/2 control s2a", "a2s": b"gp/2 control a2s"}

    def __init__(self) -> None:
        """Load the cryptography primitives once (imported here, so that ``--help`` works without them)."""
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        self._hkdf_cls, self._sha256, self.AESGCM, self.InvalidTag = HKDF, hashes.SHA256, AESGCM, InvalidTag

    def hkdf(self, token: bytes, info: bytes, salt: Optional[bytes] = None) -> bytes:
        """HKDF-SHA256 of the launch token: one 32-byte key per purpose (``info``)."""
        return self._hkdf_cls(algorithm=self._sha256(), length=32, salt=salt, info=info).derive(token)

    def seal_payload(self, token: bytes, kernel_id: str, info: Dict[str, Any], nonce: Optional[bytes] = None) -> str:
        """The connection payload sealed with AES-256-GCM under the token's payload key, kernel id in the AAD."""
        nonce = os.urandom(12) if nonce is None else nonce
        plaintext = json.dumps(info, sort_keys=True, separators=(",", ":")).encode("utf-8")
        aad = self.PAYLOAD_INFO + b"\0" + kernel_id.encode("utf-8")
        ciphertext = self.AESGCM(self.hkdf(token, self.PAYLOAD_INFO)).encrypt(nonce, plaintext, aad)
        envelope = {
            "gp": PROTOCOL_VERSION,
            "kernel_id": kernel_id,
            "nonce": base64.b64encode(nonce).decode("ascii"),
            "ciphertext": base64.b64encode(ciphertext).decode("ascii"),
        }
        return json.dumps(envelope, separators=(",", ":"))

    def control_keys(self, token: bytes, kernel_id: str, agent_nonce: bytes, server_nonce: bytes) -> Dict[str, bytes]:
        """The control channel's two directional keys, bound to this kernel and both peers' nonces."""
        suffix = b"\0" + kernel_id.encode("utf-8")
        salt = agent_nonce + server_nonce
        return {d: self.hkdf(token, info + suffix, salt) for d, info in self.CONTROL_INFO.items()}

    def cipher(self, keys: Dict[str, bytes]) -> "FrameCipher":
        """A frame cipher for one control connection."""
        return FrameCipher(self, keys)


class FrameCipher:
    """The agent's side of a control connection: seals a2s frames, opens s2a frames, counters strictly +1."""

    def __init__(self, protocol: Protocol, keys: Dict[str, bytes]) -> None:
        """Counters start at zero in each direction; a frame out of sequence is refused."""
        self._protocol = protocol
        self._seal = protocol.AESGCM(keys["a2s"])
        self._open = protocol.AESGCM(keys["s2a"])
        self._send = 0
        self._recv = 0

    def seal(self, message: Dict[str, Any]) -> bytes:
        """One agent-to-server frame: the send counter, then the sealed message."""
        counter = struct.pack(">Q", self._send)
        body = json.dumps(message, separators=(",", ":")).encode("utf-8")
        self._send += 1
        return counter + self._seal.encrypt(b"\0\0\0\0" + counter, body, b"a2s" + counter)

    def open(self, frame: bytes) -> Dict[str, Any]:
        """The message of one server-to-agent frame; a frame out of sequence or forged raises ValueError."""
        if len(frame) < 24 or struct.unpack(">Q", frame[:8])[0] != self._recv:
            raise ValueError("control frame out of sequence or too short")
        counter = frame[:8]
        try:
            body = self._open.decrypt(b"\0\0\0\0" + counter, frame[8:], b"s2a" + counter)
        except self._protocol.InvalidTag:
            raise ValueError("control frame failed authentication") from None
        self._recv += 1
        message = load_json(body)
        if not isinstance(message, dict):
            raise ValueError("control message is not an object")
        return message


def load_json(data: Any) -> Any:
    """``json.loads`` for bytes from outside: a nesting too deep for the parser is a ValueError like any bad JSON."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def printable(value: Any, limit: int = 200) -> str:
    """A value from the network, fit for one log line: scalars only, control characters escaped, length bounded."""
    if isinstance(value, list) and all(isinstance(item, (int, float, bool, type(None))) for item in value[:10]):
        return "[" + ", ".join(printable(item) for item in value[:10]) + "]"  # e.g. a reply's "supported"
    if not isinstance(value, (str, int, float, bool, type(None))):
        return f"a JSON {'array' if isinstance(value, list) else 'object'}"
    text = value[:limit] if isinstance(value, str) else repr(value)[:limit]
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def pack_frame(data: bytes) -> bytes:
    """``data`` with its 4-byte big-endian length in front, as the control channel frames it."""
    return struct.pack(">I", len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """The next length-prefixed frame; a length above the protocol's cap is refused before reading it."""
    (length,) = struct.unpack(">I", await reader.readexactly(4))
    if length > MAX_CONTROL_FRAME_BYTES:
        raise ValueError("control frame too large")
    return await reader.readexactly(length)


# --- ports ------------------------------------------------------------------------------------------------------------


def parse_port_range(text: str) -> Tuple[int, int]:
    """``"lower..upper"`` as two ports; ``"0..0"`` or empty means any port."""
    text = (text or "0..0").strip()
    parts = text.split("..")
    if len(parts) != 2:
        raise ValueError(f"port_range {text!r} is not 'lower..upper'")
    lower, upper = int(parts[0]), int(parts[1])
    if (lower, upper) != (0, 0) and not (1024 <= lower <= upper <= 65535 and upper - lower + 1 >= 6):
        raise ValueError(f"port_range {text!r} must be 0..0 or at least 6 ports within 1024..65535")
    return lower, upper


def bind_port(ip: str, port: int, reuse: bool = False) -> socket.socket:
    """Bind (not listen) a TCP socket. ``reuse`` only for re-holding our own kernel's ports after it exited: two
    non-listening sockets with SO_REUSEADDR may share a port, so fresh allocations never set it."""
    sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
    try:
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ip, port))
    except OSError:
        sock.close()
        raise
    return sock


def hold_ports(count: int, ip: str, port_range: Tuple[int, int], retries: int = 5) -> List[socket.socket]:
    """Bind ``count`` distinct ports and keep them bound so no one else can take them before the kernel does.

    Inside a range, distinct candidates are tried in random order; up to ``retries`` taken ports per wanted port.
    """
    held: List[socket.socket] = []
    try:
        if port_range == (0, 0):
            held = [bind_port(ip, 0) for _ in range(count)]
            return held
        lower, upper = port_range
        candidates = random.sample(range(lower, upper + 1), min(upper - lower + 1, count * (retries + 1)))
        failures = 0
        for port in candidates:
            if len(held) == count or failures >= count * retries:
                break
            try:
                held.append(bind_port(ip, port))
            except OSError:
                failures += 1
        if len(held) < count:
            raise OSError(
                f"no free port on {ip} in {lower}..{upper}: {count} needed, {len(held)} found, {failures} taken"
            )
    except BaseException:
        for sock in held:
            sock.close()
        raise
    return held


def listening_socket_inodes(ports: List[int]) -> Optional[Dict[int, set]]:
    """Inodes of the listening TCP sockets on each of ``ports`` (Linux /proc), or None where /proc has no such table."""
    wanted = {port: set() for port in ports}  # type: Dict[int, set]
    found = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                lines = handle.readlines()[1:]
        except OSError:
            continue
        found = True
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A":  # 0A: LISTEN
                port = int(fields[1].rsplit(":", 1)[1], 16)
                if port in wanted:
                    wanted[port].add(fields[9])
    return wanted if found else None


def group_members(pgid: int) -> List[int]:
    """Processes of process group ``pgid`` (Linux /proc)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.getpgid(int(entry)) == pgid:
                    members.append(int(entry))
    return members


def socket_inodes(pid: int) -> set:
    """Inodes of the sockets process ``pid`` holds open."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


async def port_answers(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at ``host:port`` within a second."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    return True


def connect_ip(ip: str) -> str:
    """Where to connect to reach a socket bound on ``ip`` (a wildcard address means this host's loopback)."""
    return "127.0.0.1" if ip in ("0.0.0.0", "") else ("::1" if ip == "::" else ip)


# --- process helpers --------------------------------------------------------------------------------------------------


def _die_with_parent(agent_pid: int) -> None:
    """In the kernel child: get SIGKILL if the agent dies, so a killed agent never leaves an orphaned kernel. The
    agent may have died before prctl took effect: then the parent is already someone else.

    SIGINT goes back to its default: an agent started in the background of a shell inherits it ignored, a kernel would
    inherit that, and a JVM (Apache Toree) cannot install its interrupt handler over an ignored signal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    if os.getppid() != agent_pid:
        os._exit(1)


def start_guardian() -> int:
    """Fork a guardian that SIGKILLs the kernel's process group once the agent is gone, however it ended.

    PR_SET_PDEATHSIG reaches only the kernel itself, not what the kernel started. The guardian reads "+pgid" / "-pgid"
    lines on a pipe whose only writer is the agent; end of file means the agent died (kill -9 included), and every
    group still listed is killed. It runs in a session of its own, so signals to the agent's group do not reach it.
    Forked before the agent holds any port or thread. Returns the pipe's write end.
    """
    read_fd, write_fd = os.pipe()
    if os.fork():
        os.close(read_fd)
        return write_fd
    try:  # the guardian: nothing from the agent but this pipe
        os.setsid()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        null_fd = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null_fd, fd)
        os.closerange(3, read_fd)
        os.closerange(read_fd + 1, 1 << 16)
        groups, pending = set(), b""
        while True:
            data = os.read(read_fd, 4096)
            if not data:
                break
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line[:1] == b"+":
                    groups.add(int(line[1:]))
                elif line[:1] == b"-":
                    groups.discard(int(line[1:]))
        for pgid in groups:
            kill_group(pgid, signal.SIGKILL)
    finally:
        os._exit(0)


def set_keepalive(sock: Any, seconds: float) -> None:
    """Find a vanished server within about ``seconds`` (an unreachable host never closes the connection), so the
    watchdog can count from then: keepalive probes while the connection is idle, and TCP_USER_TIMEOUT while data we
    sent is unacknowledged (then keepalive does not probe, and retransmissions would go on for many minutes)."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, int(seconds / 3)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, int(seconds / 9)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, max(1000, int(seconds * 1000 * 2 / 3)))


def private_dir(base: Optional[str], kernel_id: str) -> str:
    """A new folder only this user can enter, with an unpredictable name (mkdtemp), in ``base`` (default: the temporary
    folder). Checked after creation: a directory, ours, mode 0700."""
    if base:
        os.makedirs(base, mode=0o700, exist_ok=True)
    safe_id = "".join(c for c in kernel_id if c.isalnum() or c == "-")[:40]
    path = tempfile.mkdtemp(prefix=f"gp-kernel-{safe_id}-", dir=base or None)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise OSError(f"{path} is not a private folder of this user")
    return path


def open_private_log(path: str) -> int:
    """Create ``path`` (0600) and return a descriptor to append to it. Refuses a path that exists (a planted file or
    link) and a folder that others may write to or that is not ours: the agent writes only into files it created."""
    folder = os.path.dirname(os.path.abspath(path))
    st = os.stat(folder)
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise OSError(
            f"log file {path}: its folder {folder} is not owned by this user or others may write to it; "
            "choose a private folder (or leave --log-file out)"
        )
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        return os.open(path, flags, 0o600)
    except FileExistsError:
        raise OSError(f"log file {path} exists already: the agent writes only into a file it creates") from None


def kill_group(pgid: Optional[int], signum: int) -> None:
    """Send ``signum`` to a process group that may already be gone."""
    if pgid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signum)


def tail_lines(path: Optional[str], lines: int = LOG_TAIL_LINES) -> List[str]:
    """The last ``lines`` lines of a log file, for failure reports (empty if there is none)."""
    if not path or not os.path.exists(path):
        return []
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - 16384))
        text = handle.read().decode("utf-8", "replace")
    return [line for line in text.splitlines() if line.strip()][-lines:]


# --- the agent --------------------------------------------------------------------------------------------------------


class Agent:
    """One kernel's agent: starts and supervises the kernel, reports its connection info, serves the control channel."""

    def __init__(self, params: Dict[str, Any], opts: argparse.Namespace) -> None:
        """Hold the checked launch parameters and options; nothing starts until :meth:`run`."""
        self.params = params
        self.opts = opts
        self.kernel_id: str = params["kernel_id"]
        self.token: bytes = decode_token(params["token"])
        self.mode: str = params.get("mode", "stdout")
        self.kernel_ip: str = params.get("kernel_ip") or "0.0.0.0"
        # The kernel's log and connection file live in a private folder of our own (see open_private_log).
        self.workdir = private_dir(params.get("log_dir"), self.kernel_id)
        self.log_file: str = opts.log_file or params.get("log_file") or os.path.join(self.workdir, "kernel.log")
        try:
            self.log_fd = open_private_log(self.log_file)  # one descriptor for every kernel start
        except OSError:
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise
        watchdog = params.get("watchdog", getattr(opts, "watchdog", None))  # the server's setting wins
        self.watchdog_seconds = DEFAULT_WATCHDOG if watchdog is None else float(watchdog)
        self.guardian_fd: Optional[int] = None  # start_guardian's pipe
        self.connection_file = os.path.join(self.workdir, "kernel.json")
        self.connection: Dict[str, Any] = {}
        self.agent_port = 0
        self.held: List[socket.socket] = []
        self.proc: Optional[asyncio.subprocess.Process] = None
        self.pgid: Optional[int] = None
        self.exit_code: Optional[int] = None
        self.protocol: Optional[Protocol] = None
        self.clients: Dict[int, Tuple[asyncio.StreamWriter, FrameCipher]] = {}  # authenticated connections
        self.connections: set = set()  # all open control connections, authenticated or not
        self.unauthenticated: Dict[int, asyncio.StreamWriter] = {}  # oldest first: the first to make room
        self.last_client_seen = time.monotonic()
        self.reported = False  # the connection info went out; from now on the server drives us
        self.busy = False  # a restart or shutdown is in progress: a kernel exit is expected
        self.done: asyncio.Event  # made in run(): on Python 3.9 an Event binds to the loop current at creation
        self.result = 0
        self._exit_watch: Optional["asyncio.Task[None]"] = None
        self._watchdog: Optional["asyncio.Task[None]"] = None
        self.detached = False  # started by --detach or --spawner: leave their pipes once reported
        self.detach_fd: Optional[int] = None  # --detach: the pipe to the parent waiting for our report
        self.clean_shutdown = False  # the server asked us to end: nothing left to diagnose

    # -- set-up ------------------------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Choose and hold the ports, write the connection file."""
        if self.mode == "assigned":
            given = self.params.get("connection") or {}
            missing = [f"connection.{name}" for name in (*PORT_NAMES, "key") if not given.get(name)]
            missing += [] if self.params.get("agent_port") else ["agent_port"]
            if missing:
                raise ValueError(f"assigned mode needs {', '.join(missing)} in the launch parameters")
            ports = [int(given[name]) for name in PORT_NAMES]
            self.agent_port = int(self.params["agent_port"])
            self.held = [bind_port(self.kernel_ip, self.agent_port)] + [bind_port(self.kernel_ip, p) for p in ports]
            key = str(given["key"])
        else:
            self.held = hold_ports(6, self.kernel_ip, parse_port_range(self.params.get("port_range", "0..0")))
            self.agent_port = self.held[0].getsockname()[1]
            ports = [sock.getsockname()[1] for sock in self.held[1:]]
            key = str(uuid.uuid4())
        self.connection = dict(zip(PORT_NAMES, ports))
        self.connection.update(
            ip=self.kernel_ip,
            key=key,
            transport="tcp",
            signature_scheme=self.params.get("signature_scheme", "hmac-sha256"),
            kernel_name=self.params.get("kernel_name", ""),
        )
        curve = self.params.get("curve")
        if curve:  # CurveZMQ: the kernel's sockets become Curve servers with the key pair the server chose
            keys = [curve.get(name) for name in ("publickey", "secretkey")] if isinstance(curve, dict) else []
            if not all(isinstance(key, str) and len(key) == 40 for key in keys) or len(keys) != 2:
                raise ValueError("curve needs publickey and secretkey, each 40 Z85 characters")
            self.connection.update(curve_publickey=keys[0], curve_secretkey=keys[1])
        self.write_connection_file()

    def write_connection_file(self) -> None:
        """Write the kernel's connection file (0600, never through a link) in the agent's private folder."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)  # in our private folder
        fd = os.open(self.connection_file, flags, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(self.connection, handle)

    def new_kernel_ports(self) -> None:
        """Another process took a port between our release and the kernel's bind: hold five fresh ones."""
        for sock in self.held[1:]:
            sock.close()
        fresh = hold_ports(5, self.kernel_ip, parse_port_range(self.params.get("port_range", "0..0")))
        self.held[1:] = fresh
        self.connection.update(zip(PORT_NAMES, (sock.getsockname()[1] for sock in fresh)))
        self.write_connection_file()

    def kernel_argv(self) -> List[str]:
        """The kernel's own command, with the connection file filled in and a bare python replaced by the agent's."""
        argv = [str(arg).replace("{connection_file}", self.connection_file) for arg in self.params["argv"]]
        if argv and argv[0] in ("python", "python3") and self.params.get("python"):
            argv[0] = self.params["python"]
        return argv

    def kernel_env(self) -> Dict[str, str]:
        """The kernel's environment: the agent's, less its launch secrets, plus what the server sent."""
        env = dict(os.environ)
        for name in ("GP_LAUNCH_PARAMS", "GP_LAUNCH_TOKEN"):
            env.pop(name, None)  # the launch secret stays with the agent
        env.update({str(k): str(v) for k, v in (self.params.get("env") or {}).items()})
        env["KERNEL_ID"] = self.kernel_id
        env["JPY_PARENT_PID"] = str(os.getpid())
        return env

    # -- the kernel process ------------------------------------------------------------------------------------------

    async def start_kernel(self) -> None:
        """Hand the held kernel ports over to a new kernel process."""
        for sock in self.held[1:]:
            sock.close()
        del self.held[1:]
        self.exit_code = None
        self.proc = await asyncio.create_subprocess_exec(
            *self.kernel_argv(),
            env=self.kernel_env(),
            cwd=self.params.get("cwd") or None,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self.log_fd,
            stderr=self.log_fd,
            start_new_session=True,
            preexec_fn=functools.partial(_die_with_parent, os.getpid()),
        )
        self.pgid = self.proc.pid
        self.tell_guardian(f"+{self.pgid}")
        log.info("kernel %s started as pid %d", self.kernel_id, self.proc.pid)
        self._exit_watch = asyncio.ensure_future(self._watch_exit(self.proc))

    async def _watch_exit(self, proc: asyncio.subprocess.Process) -> None:
        """Wait for a kernel process to end, end its group, and tell the server (a restart's old kernel excepted)."""
        code = await proc.wait()
        kill_group(proc.pid, signal.SIGKILL)  # whatever the kernel started ends with it
        self.tell_guardian(f"-{proc.pid}")
        if proc is not self.proc:
            return
        self.exit_code = code
        log.info("kernel %s exited with code %s", self.kernel_id, code)
        with contextlib.suppress(OSError):
            # Hold the ports again, so a restart in place gets them back.
            for name in PORT_NAMES:
                self.held.append(bind_port(self.kernel_ip, self.connection[name], reuse=True))
        await self.broadcast({"event": "kernel-exited", "exit_code": code, "log_tail": tail_lines(self.log_file)})
        if self.reported and not self.clients and not self.busy:
            log.info("kernel %s ended and no server is connected: agent exits", self.kernel_id)
            self.done.set()

    def tell_guardian(self, line: str) -> None:
        """Tell the guardian process which groups to end if the agent dies (``+pgid`` / ``-pgid``)."""
        if self.guardian_fd is not None:
            with contextlib.suppress(OSError):
                os.write(self.guardian_fd, (line + "\n").encode())

    @property
    def kernel_running(self) -> bool:
        """Whether the kernel process runs (started and not yet ended)."""
        return self.proc is not None and self.exit_code is None and self.proc.returncode is None

    async def wait_ready(self, timeout: float) -> str:
        """Wait until the kernel listens on all its ports: "ready", "exited" (first), or "stolen".

        Between our release of a port and the kernel's bind (its import time), another process may bind it. So once
        every port answers — and every half second meanwhile — the listening sockets are checked to be the kernel's
        own (Linux /proc; elsewhere an answering port is taken as the kernel's): a kernel is never reported with
        another's port.
        """
        deadline = time.monotonic() + timeout
        host = connect_ip(self.kernel_ip)
        pending = [self.connection[name] for name in PORT_NAMES]
        interval, next_ownership_check = 0.01, time.monotonic() + 2.0
        while True:
            if not self.kernel_running:
                return "exited"
            while pending and await port_answers(host, pending[0]):
                pending.pop(0)
            if not pending or time.monotonic() > next_ownership_check:
                if self.ports_stolen():
                    return "stolen"
                if not pending:
                    return "ready"
                next_ownership_check = time.monotonic() + 2.0
            if time.monotonic() > deadline:
                raise TimeoutError(f"kernel did not listen on port {pending[0]} within {timeout:g} s")
            # The kernel gives no signal when it has bound its ports: re-check, first often (a kernel that starts
            # fast is seen at once), then less (many kernels starting on a busy host must not spin their agents).
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, 0.05)

    def ports_stolen(self) -> bool:
        """Whether another process holds one of the kernel's ports (Linux /proc; False where that cannot be told)."""
        owners = listening_socket_inodes([self.connection[name] for name in PORT_NAMES])
        if owners is None or self.proc is None:
            return False
        mine = set()  # type: set
        for pid in group_members(self.pgid or self.proc.pid):  # a kernel may bind from a child of its own
            mine |= socket_inodes(pid)
        for port, inodes in owners.items():
            if inodes and not inodes & mine:
                log.warning("port %d was taken by another process before kernel %s bound it", port, self.kernel_id)
                return True
        return False

    async def stop_kernel(self, grace: float) -> Optional[int]:
        """SIGTERM the kernel's process group, SIGKILL it after ``grace`` s (at once when ``grace`` is 0).

        In jupyter_client's flows the kernel has usually exited already, after its shutdown request.
        """
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return self.exit_code
        kill_group(proc.pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), grace if grace > 0 else 5.0)
        except asyncio.TimeoutError:
            kill_group(proc.pid, signal.SIGKILL)
            await proc.wait()
        if self._exit_watch is not None:
            await asyncio.shield(self._exit_watch)
        return self.exit_code

    # -- reporting the connection info -------------------------------------------------------------------------------

    def payload(self, ready: bool, reason: str = "") -> Dict[str, Any]:
        """What the agent reports: the connection info and its control port, or a failure with the log's tail."""
        if not ready:
            # Short lines, few enough that the whole payload stays one atomic pipe write (PIPE_BUF) in spawner mode.
            return {
                "status": "failed",
                "exit_code": self.exit_code,
                "reason": reason[:300],
                "log_tail": [line[:150] for line in tail_lines(self.log_file, 12)],
            }
        info = {k: v for k, v in self.connection.items() if not k.startswith("curve_")}  # the server has them
        info.update(
            status="ready",
            ip=self.params.get("advertise_ip") or self.kernel_ip,
            agent_port=self.agent_port,
            pid=self.proc.pid if self.proc else None,
            pgid=self.pgid,
            agent_pid=os.getpid(),
            hostname=socket.gethostname(),
            agent_version=AGENT_VERSION,
        )
        return info

    async def report(self, info: Dict[str, Any]) -> None:
        """Deliver the sealed payload: on standard output, or to the server's response listener with retries."""
        assert self.protocol is not None
        envelope = self.protocol.seal_payload(self.token, self.kernel_id, info)
        if self.mode == "stdout":
            sys.stdout.write(STDOUT_PREFIX + envelope + "\n")
            sys.stdout.flush()
        elif self.mode == "callback":
            await self.call_back(envelope)
        self.reported = True

    async def call_back(self, envelope: str) -> None:
        """Deliver the envelope to the server's response listener; retry what may pass (busy, timeout, no reply).

        Retries go on with growing pauses for ``ready_timeout`` (the server's launch deadline), and at least
        CALLBACK_MIN_SECONDS: longer than the listener holds an idle connection, so peers that fill its slots
        cannot make the agent give up while its launch still waits. Only when nothing listens at the address
        (refused or unreachable CALLBACK_REFUSALS times in a row) does it give up early. Values from the reply are
        escaped before they reach an error message (and so the log).
        """
        address = self.params.get("response_address") or ""
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"response_address {address!r} is not host:port")
        host = host.strip("[]")
        seconds = max(CALLBACK_MIN_SECONDS, float(self.params.get("ready_timeout", 120)))
        deadline = time.monotonic() + seconds
        last_error, attempt, pause, refusals = "no attempt", 0, 0.2, 0
        while time.monotonic() < deadline and refusals < CALLBACK_REFUSALS:
            attempt += 1
            try:
                remaining = max(0.5, deadline - time.monotonic())
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), min(10, remaining))
                try:
                    writer.write(envelope.encode("utf-8") + b"\n")
                    await writer.drain()
                    line = await asyncio.wait_for(reader.readline(), min(15, remaining))
                finally:
                    writer.close()
                reply = load_json(line) if line.strip() else {}
            except (OSError, asyncio.TimeoutError, ValueError) as exc:
                reply, last_error = None, f"{type(exc).__name__}: {printable(str(exc))}"
                unreachable = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH)
                refusals = refusals + 1 if isinstance(exc, OSError) and exc.errno in unreachable else 0
            else:
                refusals = 0
            if isinstance(reply, dict):
                reason = reply.get("reason", "no reply")
                if reply.get("status") == "accepted" or (reason == "replayed" and attempt > 1):
                    # "replayed" after a retry: an earlier attempt got through and only its reply was lost.
                    log.info("connection info accepted by %s", address)
                    return
                if reason == "unsupported-version":
                    raise RuntimeError(
                        f"server at {address} speaks protocol {printable(reply.get('supported'))}, this agent speaks "
                        f"{PROTOCOL_VERSION}: install matching versions of gateway-provisioners and the agent"
                    )
                if reason not in ("busy", "timeout", "no reply"):
                    raise RuntimeError(
                        f"server at {address} rejected the connection info: {printable(reason)} "
                        f"{printable(reply.get('detail', ''))}"
                    )
                last_error = str(reason)
            elif reply is not None:
                last_error = "unreadable reply"
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 1.5, 2.0)
        raise RuntimeError(f"cannot deliver the connection info to {address} ({attempt} attempts): {last_error}")

    # -- control channel ---------------------------------------------------------------------------------------------

    async def serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One control connection: the handshake, then sealed requests answered in order until it closes."""
        assert self.protocol is not None
        peer = writer.get_extra_info("peername")
        if self.watchdog_seconds > 0:  # a server on a host that became unreachable must count as gone
            set_keepalive(writer.get_extra_info("socket"), self.watchdog_seconds)
        agent_nonce = os.urandom(16)
        hello = {
            "gp": PROTOCOL_VERSION,
            "kernel_id": self.kernel_id,
            "nonce": base64.b64encode(agent_nonce).decode(),
            "agent_version": AGENT_VERSION,
        }
        client_id = id(writer)
        if len(self.connections) >= MAX_CONTROL_CONNECTIONS:
            if not self.unauthenticated:
                writer.close()  # every slot holds an authenticated server: more are someone probing
                return
            # Make room: the connection waiting longest to authenticate goes, so that peers who only connect cannot
            # keep the server out (it authenticates within milliseconds of connecting).
            oldest = next(iter(self.unauthenticated))
            self.unauthenticated.pop(oldest).transport.abort()
            self.connections.discard(oldest)
        self.connections.add(client_id)
        self.unauthenticated[client_id] = writer
        until = time.monotonic() + AUTHENTICATE_WITHIN  # for the hello and the first frame together
        try:
            writer.write(pack_frame(json.dumps(hello).encode()))
            server_hello = load_json(await asyncio.wait_for(read_frame(reader), AUTHENTICATE_WITHIN))
            if not isinstance(server_hello, dict):
                raise ValueError("server hello is not a JSON object")
            if server_hello.get("gp") not in SUPPORTED_VERSIONS:
                log.error(
                    "server at %s speaks protocol %s, this agent speaks %s",
                    peer,
                    printable(server_hello.get("gp")),
                    PROTOCOL_VERSION,
                )
                return
            if not isinstance(server_hello.get("nonce"), str):
                raise ValueError("server hello has no nonce string")
            server_nonce = base64.b64decode(server_hello["nonce"], validate=True)
            if len(server_nonce) != 16:
                raise ValueError("server nonce must be 16 bytes")
            keys = self.protocol.control_keys(self.token, self.kernel_id, agent_nonce, server_nonce)
            cipher = self.protocol.cipher(keys)
            first = True
            while True:
                # Until it authenticates, a peer has until ``until``; then the server may stay idle as it likes.
                reading = read_frame(reader)
                frame = await (asyncio.wait_for(reading, max(0.1, until - time.monotonic())) if first else reading)
                message = cipher.open(frame)
                if first:  # authenticated: the peer holds the token
                    self.clients[client_id] = (writer, cipher)
                    self.unauthenticated.pop(client_id, None)
                    first = False
                reply = await self.handle(message)
                reply["reply"] = message.get("id")
                if client_id in self.clients:
                    writer.write(pack_frame(cipher.seal(reply)))
                    await writer.drain()
                if message.get("op") == "shutdown":
                    self.done.set()
        except (asyncio.IncompleteReadError, OSError, asyncio.TimeoutError, asyncio.CancelledError):
            pass  # the server went away (OSError: also keepalive's ETIMEDOUT), or the agent is ending
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            log.warning("control connection from %s dropped: %s", peer, printable(str(exc)))
        finally:
            self.connections.discard(client_id)
            self.unauthenticated.pop(client_id, None)
            if self.clients.pop(client_id, None) is not None:
                self.last_client_seen = time.monotonic()  # only a server that authenticated counts for the watchdog
            writer.close()
            if self.reported and not self.clients and not self.kernel_running and not self.busy:
                self.done.set()

    async def broadcast(self, event: Dict[str, Any]) -> None:
        """Push an event (e.g. kernel-exited) to every authenticated server."""
        for writer, cipher in list(self.clients.values()):
            with contextlib.suppress(ConnectionError, RuntimeError):
                writer.write(pack_frame(cipher.seal(event)))
                await writer.drain()

    def state(self) -> Dict[str, Any]:
        """The answer to a ping: whether the kernel runs, its pid and exit code."""
        return {
            "ok": True,
            "kernel": "running" if self.kernel_running else "exited",
            "pid": self.proc.pid if self.proc else None,
            "exit_code": self.exit_code,
        }

    async def handle(self, message: Dict[str, Any]) -> Dict[str, Any]:
        """Answer one control request (ping, signal, restart, shutdown)."""
        op = message.get("op")
        if op == "ping":
            return self.state()
        if op == "signal":
            try:
                number = int(message.get("signum", 0))
                signum = signal.Signals(number) if number else None
            except (ValueError, TypeError):
                return {"ok": False, "error": f"signal {message.get('signum')!r} is unknown on this host"}
            if self.kernel_running and signum:
                kill_group(self.pgid, signum)
                log.info("sent %s to kernel %s", signum.name, self.kernel_id)
            return self.state()
        if op == "restart":
            return await self.restart(float(message.get("grace", 5)), float(message.get("ready_timeout", 60)))
        if op == "shutdown":
            self.busy = True
            self.clean_shutdown = True
            code = await self.stop_kernel(float(message.get("grace", 0)))
            return {"ok": True, "exit_code": code}
        return {"ok": False, "error": f"unknown op {op!r}"}

    async def restart(self, grace: float, ready_timeout: float) -> Dict[str, Any]:
        """Restart the kernel in place: same ports and key, a new process."""
        self.busy = True
        try:
            await self.stop_kernel(grace)
            await self.start_kernel()
            if await self.wait_ready(ready_timeout) != "ready":
                await self.stop_kernel(0)  # exited, or lost a port it must keep: clients know these ports
                return {
                    "ok": False,
                    "error": f"kernel exited at once with code {self.exit_code}",
                    "log_tail": tail_lines(self.log_file),
                }
            return {"ok": True, "pid": self.proc.pid if self.proc else None}
        except (OSError, TimeoutError) as exc:
            await self.stop_kernel(0)  # a kernel that never became ready must not linger
            reply = {"ok": False, "error": str(exc), "log_tail": tail_lines(self.log_file)}
            if isinstance(exc, TimeoutError):
                reply["timed_out"] = True  # the server reports a timeout as such (HTTP 504), not as a kernel exit
            return reply
        finally:
            self.busy = False

    async def watchdog(self, seconds: float) -> None:
        """End everything when no server has been connected for ``seconds``."""
        while not self.done.is_set():
            await asyncio.sleep(max(0.5, seconds / 4))
            if not self.clients and time.monotonic() - self.last_client_seen > seconds:
                log.warning("no server connected for %g s: ending kernel %s (watchdog)", seconds, self.kernel_id)
                self.clean_shutdown = True  # no server will come for the log: leave nothing behind
                self.done.set()

    # -- main --------------------------------------------------------------------------------------------------------

    async def run(self) -> int:
        """Start the kernel, report, serve the control channel until shutdown or the watchdog; the exit status."""
        loop = asyncio.get_running_loop()
        self.done = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, self.done.set)
        server: Optional[asyncio.AbstractServer] = None
        try:
            self.prepare()
            failure = await self.start_until_ready()
            if self.protocol is None:
                self.protocol = Protocol()
            if failure is None:
                # Listen only once the kernel is ready: in server-assigned mode, a server that can connect knows
                # the kernel is up; until then its connection attempts are refused.
                control_sock = self.held[0]
                control_sock.listen(8)
                server = await asyncio.start_server(self.serve_client, sock=control_sock)
            else:
                log.error("%s", failure)  # the kernel's own lines are above it in the log file; and for platforms
                # that only show the agent's output (container logs), on standard error too:
                print("\n".join(tail_lines(self.log_file)), file=sys.stderr, flush=True)
            if self.mode != "assigned":
                await self.report(self.payload(failure is None, failure or ""))
            self.reported = True
            self.detach_done(failure is None)
            if failure is not None:
                return EXIT_STARTUP_FAILED
            if self.watchdog_seconds > 0:
                self.last_client_seen = time.monotonic()  # the server's grace to connect starts now
                self._watchdog = asyncio.ensure_future(self.watchdog(self.watchdog_seconds))
            await self.done.wait()
            return self.result
        finally:
            for signum in (signal.SIGTERM, signal.SIGHUP):
                # Already ending: a late SIGTERM (the server's fallback) must not interrupt the clean-up below.
                loop.remove_signal_handler(signum)
                signal.signal(signum, signal.SIG_IGN)
            if server is not None:
                server.close()
            self.busy = True
            await self.stop_kernel(0)
            for writer, _ in list(self.clients.values()):
                writer.close()
            for sock in self.held:
                sock.close()
            self.detach_done(False)
            with contextlib.suppress(OSError):
                os.remove(self.connection_file)  # it holds the HMAC key
            keep = self.opts.keep_log or not self.clean_shutdown  # after a failure the log stays, for diagnostics
            if not keep:
                with contextlib.suppress(OSError):
                    os.remove(self.log_file)
            if not (keep and os.path.dirname(self.log_file) == self.workdir):
                shutil.rmtree(self.workdir, ignore_errors=True)

    async def start_until_ready(self, attempts: int = 3) -> Optional[str]:
        """Start the kernel until it listens on its ports; returns why it could not, or None.

        A kernel that lost a port to another process (it exits with "Address already in use", or we saw the port
        taken) is started again on fresh ports, up to ``attempts`` times, unless the server assigned the ports.
        """
        timeout = float(self.params.get("ready_timeout", 120))
        if os.geteuid() == 0 and not self.params.get("allow_root"):  # the real uid, whatever name a client claimed
            return (
                f"refusing to run kernel {self.kernel_id} as root (uid 0) on {socket.gethostname()}: run the agent "
                "as another user, or allow root kernels on the server (allow_root_kernels, GP_ALLOW_ROOT_KERNELS)"
            )
        for attempt in range(1, attempts + 1):
            try:
                await self.start_kernel()  # before loading the crypto library, so the kernel's start-up overlaps it
            except OSError as exc:
                return f"cannot start the kernel {self.kernel_argv()[0]!r}: {exc.strerror or exc}"
            if self.protocol is None:
                self.protocol = Protocol()
            status = await self.wait_ready(timeout)
            if status == "ready":
                return None
            await self.stop_kernel(0)
            conflict = status == "stolen" or any("Address already in use" in line for line in tail_lines(self.log_file))
            if not conflict or self.mode == "assigned" or attempt == attempts:
                if status == "stolen":
                    return "another process took one of the kernel's ports"
                return f"the kernel exited during start-up with code {self.exit_code}"
            log.warning("kernel %s lost a port to another process; starting it again on new ports", self.kernel_id)
            self.new_kernel_ports()
        return None

    def detach_done(self, ok: bool) -> None:
        """Detached agents (``--detach``, ``--spawner``): once reported, let go of the launching channel's pipes and
        tell a waiting parent how it went."""
        if not self.detached:
            return
        self.detached = False
        null_fd = os.open(os.devnull, os.O_RDONLY)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(null_fd, 0)
        os.dup2(self.log_fd, 1)
        os.dup2(self.log_fd, 2)
        os.close(null_fd)
        for handler in list(log.handlers):
            if not getattr(handler, "gp_log_file", False):
                log.removeHandler(handler)  # the log file has every line already
        if self.detach_fd is not None:
            os.write(self.detach_fd, b"0" if ok else b"1")
            os.close(self.detach_fd)
            self.detach_fd = None


def detach() -> int:
    """Fork; the parent prints the child's pid and exits once the child reports (see Agent.detach_done).

    The child starts a new session, so it and its kernel outlive the channel that launched them (an SSH session
    holds one of a connection's few session slots only while the agent starts up).
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        sys.stdout.write(f"{AGENT_PID_PREFIX}{pid}\n")
        sys.stdout.flush()
        status = os.read(read_fd, 1)
        os._exit(0 if status == b"0" else EXIT_STARTUP_FAILED)
    os.close(read_fd)
    os.setsid()
    return write_fd


def decode_token(text: str) -> bytes:
    """The 32-byte launch token from its base64url text."""
    token = base64.urlsafe_b64decode(str(text).strip().encode("ascii"))
    if len(token) != 32:
        raise ValueError("launch token must be 32 bytes")
    return token


def read_params(opts: argparse.Namespace) -> Dict[str, Any]:
    """The launch parameters from standard input, a file or the environment, checked; a bad one exits 2."""
    if opts.params == "-":
        text = sys.stdin.readline()
    elif opts.params:
        with open(opts.params) as handle:
            text = handle.read()
    else:
        text = os.environ.get("GP_LAUNCH_PARAMS", "")
    if not text.strip():
        raise ValueError("no launch parameters: pass --params FILE, --params - (stdin) or set GP_LAUNCH_PARAMS")
    params = load_json(text)
    if not isinstance(params, dict):
        raise ValueError("launch parameters must be a JSON object")
    token_file = opts.token_file or os.environ.get("GP_LAUNCH_TOKEN_FILE")
    if token_file:
        with open(token_file) as handle:
            params["token"] = handle.read().strip()
    elif os.environ.get("GP_LAUNCH_TOKEN"):
        params["token"] = os.environ["GP_LAUNCH_TOKEN"]
    return check_params(params)


def check_params(params: Any) -> Dict[str, Any]:
    """Raise ValueError with a one-line reason unless ``params`` are launch parameters this agent understands."""
    if not isinstance(params, dict):
        raise ValueError("launch parameters must be a JSON object")
    if params.get("gp") not in SUPPORTED_VERSIONS:
        raise ValueError(
            f"the server speaks protocol {params.get('gp')!r}, this agent ({AGENT_VERSION}) speaks {PROTOCOL_VERSION}: "
            "install the agent that matches the server's gateway-provisioners"
        )
    for name in ("kernel_id", "token", "argv"):
        if not params.get(name):
            raise ValueError(f"launch parameters lack {name!r}")
    if params.get("mode", "stdout") not in ("stdout", "callback", "assigned"):
        raise ValueError(f"unknown connection mode {params.get('mode')!r}")
    return params


def build_parser() -> argparse.ArgumentParser:
    """The agent's command line (docs/configuration.md, "The agent")."""
    parser = argparse.ArgumentParser(
        prog="gp_agent.py",
        description="Start a Jupyter kernel next to this agent and connect it to a gateway-provisioners server.",
    )
    parser.add_argument(
        "--params",
        default=None,
        metavar="FILE",
        help="launch parameters as JSON: a file path, or '-' for one line on standard input "
        "(default: the GP_LAUNCH_PARAMS environment variable)",
    )
    parser.add_argument(
        "--token-file",
        default=None,
        metavar="FILE",
        help="read the launch token from FILE (e.g. a mounted Kubernetes Secret) instead of the "
        "parameters (default: GP_LAUNCH_TOKEN_FILE, then GP_LAUNCH_TOKEN)",
    )
    parser.add_argument(
        "--log-file",
        default=None,
        metavar="FILE",
        help="write the kernel's output and the agent's log here; the file must not exist and its folder must "
        "be this user's and not writable by others (default: kernel.log in a new private folder)",
    )
    parser.add_argument("--keep-log", action="store_true", help="do not remove the log file when the agent exits")
    parser.add_argument(
        "--spawner",
        action="store_true",
        help="read one launch request per line on standard input and start a detached agent for each "
        "(one long-lived SSH session per host serves every launch)",
    )
    parser.add_argument(
        "--detach",
        action="store_true",
        help="after reporting, leave the launching session: the first process prints the agent's "
        f"pid ('{AGENT_PID_PREFIX}N') and exits; the agent and kernel go on in a new session",
    )
    parser.add_argument(
        "--watchdog",
        type=float,
        default=os.environ.get("GP_AGENT_WATCHDOG") or str(DEFAULT_WATCHDOG),
        metavar="SECONDS",
        help="end the kernel when no server has been connected for SECONDS; 0 = never (default "
        f"{DEFAULT_WATCHDOG:g}; env GP_AGENT_WATCHDOG; a 'watchdog' in the launch parameters wins)",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("GP_AGENT_LOG_LEVEL", "WARNING"),
        help="the agent's own log level on standard error (default WARNING; env GP_AGENT_LOG_LEVEL)",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {AGENT_VERSION} (protocol {PROTOCOL_VERSION})"
    )
    return parser


def setup_logging(level: str) -> logging.Formatter:
    """Log to standard error (and later the kernel's log file) with time and level on every line."""
    formatter = logging.Formatter("%(asctime)s gp-agent %(levelname)s %(message)s")
    to_stderr = logging.StreamHandler(sys.stderr)
    to_stderr.setFormatter(formatter)
    to_stderr.setLevel(level.upper())
    for handler in list(log.handlers):
        log.removeHandler(handler)
    log.addHandler(to_stderr)
    log.setLevel(logging.INFO)
    log.propagate = False
    return formatter


def run_agent(params: Dict[str, Any], opts: argparse.Namespace, spawned: bool = False) -> int:
    """Run one agent for ``params`` in this process until it ends; returns its exit code.

    ``spawned``: forked by a spawner, so already detached from it; it only has to let go of the spawner's pipes.
    """
    formatter = setup_logging(opts.log_level)
    try:
        agent = Agent(params, opts)
    except (ValueError, OSError, KeyError, TypeError) as exc:
        print(f"gp-agent: {exc}", file=sys.stderr)
        return EXIT_BAD_PARAMS
    file_log = logging.StreamHandler(open(agent.log_fd, "a", closefd=False))  # lives as long as we do
    file_log.gp_log_file = True  # type: ignore[attr-defined]
    file_log.setFormatter(formatter)
    log.addHandler(file_log)
    emit(f"{AGENT_LOG_PREFIX}{agent.kernel_id} {agent.log_file}")  # for the server's diagnostics and clean-up
    if opts.detach or spawned:
        agent.detached = True
        agent.detach_fd = None if spawned else detach()
    try:
        agent.guardian_fd = start_guardian()
    except OSError as exc:  # no process to spare: the kernel still dies with us (PDEATHSIG), its children may not
        log.warning("no guardian for kernel %s's process group: %s", agent.kernel_id, exc)
    try:
        return asyncio.run(agent.run())
    except Exception as exc:  # one line for the operator, the traceback in the log file
        log.error("agent failed: %s", exc, exc_info=True)
        print(f"gp-agent: {exc}", file=sys.stderr)
        return EXIT_STARTUP_FAILED


def emit(line: str) -> None:
    """One whole line on standard output in one write: lines from a spawner and its agents never interleave."""
    os.write(1, (line + "\n").encode("utf-8"))


def spawner(opts: argparse.Namespace) -> int:
    """``--spawner``: start one detached agent per line of standard input, each ``{"params": ..., "args": [...]}``.

    A server keeps one spawner per host connection, so a launch costs a fork instead of an SSH session, a shell and
    a Python start-up. For each launch it prints ``GP-AGENT-PID <kernel id> <pid>``; each agent prints its own
    ``GP-CONNECTION-INFO`` line; when an agent ends the spawner prints ``GP-AGENT-EXIT <kernel id> <exit code>``.
    It ends at the end of its input (the server went away); its agents go on.
    """
    with contextlib.suppress(ImportError):
        Protocol()  # import the crypto library once, here: every forked agent then has it loaded already
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select() through the wakeup fd
    children: Dict[int, str] = {}
    emit(f"{SPAWNER_READY_PREFIX}{os.getpid()}")
    pending = b""
    while True:
        try:
            readable, _, _ = select.select([0, wake_read], [], [])
        except InterruptedError:
            continue
        if wake_read in readable:
            os.read(wake_read, 4096)
            reap(children)
        if 0 in readable:
            data = os.read(0, 65536)
            if not data:
                return 0
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if line.strip():
                    spawn(line, opts, children, (wake_read, wake_write))


def reap(children: Dict[int, str]) -> None:
    """Spawner mode: collect ended agents and report each one's exit on standard output."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        emit(f"{AGENT_EXIT_PREFIX}{children.pop(pid, '?')} {os.waitstatus_to_exitcode(status)}")


def spawn(line: bytes, opts: argparse.Namespace, children: Dict[int, str], wake: Tuple[int, int]) -> None:
    """Spawner mode: fork one detached agent for the request on ``line``."""
    try:
        request = load_json(line)
        params = check_params(request["params"])
        child_opts = build_parser().parse_args([*request.get("args", []), "--log-level", opts.log_level])
    except (ValueError, KeyError, TypeError, SystemExit) as exc:
        print(f"gp-agent spawner: bad launch request: {exc}", file=sys.stderr, flush=True)
        with contextlib.suppress(Exception):  # tell the server at once, if it said which kernel this was for
            emit(f"{AGENT_EXIT_PREFIX}{json.loads(line)['params']['kernel_id']} {EXIT_BAD_PARAMS}")
        return
    pid = os.fork()
    if pid == 0:  # the agent: its own session, default signal handling, no spawner plumbing
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in wake:
            os.close(fd)
        os.setsid()
        code = 1
        try:
            code = run_agent(params, child_opts, spawned=True)
        finally:
            os._exit(code)
    children[pid] = str(params["kernel_id"])
    emit(f"{AGENT_PID_PREFIX}{params['kernel_id']} {pid}")


def main(argv: Optional[List[str]] = None) -> int:
    """Run as an agent, or as a spawner of agents (``--spawner``)."""
    opts = build_parser().parse_args(argv)
    if opts.spawner:
        return spawner(opts)
    setup_logging(opts.log_level)
    try:
        params = read_params(opts)
    except (ValueError, OSError, KeyError, TypeError) as exc:
        print(f"gp-agent: {exc}", file=sys.stderr)
        return EXIT_BAD_PARAMS
    return run_agent(params, opts)


if __name__ == "__main__":
    sys.exit(main())
