"""What the Docker and Swarm adapters share: the engine client, its bounded thread pool, the one events stream per
engine and process, labels, the container request both turn into a container or a service, and where the agent's
launch parameters are delivered.

The launch parameters hold the launch token (and, in server-assigned mode, the kernel's HMAC key), so they never go
into anything the engine shows to whoever may inspect containers or services (environment, command, labels). The
agent reads them with ``--params`` from :data:`LAUNCH_PARAMS_FILE`, a 0600 file owned by the kernel's user: written
into the stopped container before it starts (Docker), or a Swarm secret mounted there (Swarm).

The Docker SDK is synchronous. Every call runs in :class:`DockerEngine`'s bounded pool, never on the event loop. The
events stream is one blocking HTTP response per engine, read by one thread that hands each event to the loop with
``call_soon_threadsafe``; it runs only while some kernel is tracked, and after a broken stream it reconnects with
back-off and asks its subscribers to re-read their resources (events missed while disconnected are not trusted to be
replayed).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import json
import logging
import re
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from ..core.backend import Backend, BackendHandle, PlatformState
from ..core.errors import BackendUnavailable, ConfigurationError, LaunchError
from ..core.launch import ConnectionMode, LaunchSpec
from ..per_loop import PerLoop

log = logging.getLogger("gateway_provisioners.docker")

LABEL_PREFIX = "org.jupyter.gp"
KERNEL_ID_LABEL = f"{LABEL_PREFIX}.kernel-id"
OWNER_LABEL = f"{LABEL_PREFIX}.owner"
USERNAME_LABEL = f"{LABEL_PREFIX}.username"
DEFAULT_OWNER = "gateway-provisioners"
DEFAULT_POOL_SIZE = 8

# Where the agent finds its launch parameters inside the container: a directory of its own under /run (not a shared
# temporary directory), passed to the image's entry point as arguments — the same ``--params FILE`` the Kubernetes
# backend gives the agent for its Secret's file.
LAUNCH_DIR = "/run/gateway-provisioners"
LAUNCH_PARAMS_FILE = f"{LAUNCH_DIR}/params.json"
LAUNCH_ARGS = ["--params", LAUNCH_PARAMS_FILE]


def load_docker() -> Any:
    """Import the Docker SDK, or fail with the one line that says how to get it."""
    try:
        import docker
    except ImportError:
        raise ConfigurationError(
            "the Docker provisioners need the Docker SDK: pip install 'gateway_provisioners[docker]'"
        ) from None
    return docker


@dataclass
class ContainerRequest:
    """How the operator wants kernel containers made (from the provisioner's traits and validated KERNEL_* values)."""

    image: str
    network: str = "bridge"
    owner: str = DEFAULT_OWNER
    user: str | None = None  # "uid:gid"
    nano_cpus: int | None = None
    memory: int | None = None  # bytes
    gpus: int | None = None  # device requests; -1 = all
    mounts: list[str] = field(default_factory=list)  # "source:target[:ro|rw]"
    working_dir: str | None = None
    command: list[str] | None = None  # None: the image's ENTRYPOINT/CMD runs the agent
    pull_policy: str = "missing"  # never | missing | always
    host_ip: str = "127.0.0.1"  # where kernels on host networking are reached
    agent_log_level: str = "INFO"  # the agent's stderr, visible in `docker logs` and in error reports
    extra_env: dict[str, str] = field(default_factory=dict)  # operator-set container variables (never the server's)

    def labels(self, kernel_id: str, username: str) -> dict[str, str]:
        return {KERNEL_ID_LABEL: kernel_id, OWNER_LABEL: self.owner, USERNAME_LABEL: username}

    def environment(self) -> dict[str, str]:
        """The container's environment: the operator's few settings, nothing secret.

        The kernel's own environment (the launch spec's filtered env) travels inside the launch parameters, which
        reach the agent as a file (:data:`LAUNCH_PARAMS_FILE`); the server's environment never reaches the container.
        """
        env = dict(self.extra_env)
        env["GP_AGENT_LOG_LEVEL"] = self.agent_log_level
        return env

    def kernel_ids(self, image_user: str = "") -> tuple[int, int]:
        """The numeric (uid, gid) the agent runs as: ``user``, else the image's ``USER`` (none: root).

        The launch parameters file is made readable by this user only, so a user given by name (which only the
        image's /etc/passwd could resolve) is refused with how to fix it.
        """
        text = self.user if self.user is not None else image_user
        uid, _, gid = (text or "0").partition(":")
        if not uid.isdigit() or (gid and not gid.isdigit()):
            raise ConfigurationError(
                f"the kernel's user {text!r} is not numeric: set kernel_uid / kernel_gid (GP_DOCKER_UID / "
                "GP_DOCKER_GID) so the launch parameters can be made readable by that user only"
            )
        return int(uid), int(gid or 0)

    def parsed_mounts(self) -> list[tuple[str, str, bool]]:
        return [parse_mount(text) for text in self.mounts]

    def docker_mounts(self, types: Any) -> list[Any]:
        """The mounts as the SDK's ``types.Mount``: a bind for an absolute source, else a named volume."""
        return [
            types.Mount(target, source, type="bind" if source.startswith("/") else "volume", read_only=read_only)
            for source, target, read_only in self.parsed_mounts()
        ]


def params_json(params: dict[str, Any]) -> bytes:
    return json.dumps(params, separators=(",", ":")).encode("utf-8")


def params_archive(params: dict[str, Any], uid: int, gid: int) -> bytes:
    """A tar of :data:`LAUNCH_DIR` (0700) holding :data:`LAUNCH_PARAMS_FILE` (0600), both owned by ``uid:gid``, to
    extract at ``/`` in a created, not yet started, container (the engine keeps the owners a tar gives)."""
    data = params_json(params)
    now = time.time()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        folder = tarfile.TarInfo(LAUNCH_DIR.lstrip("/"))
        folder.type, folder.mode, folder.uid, folder.gid, folder.mtime = tarfile.DIRTYPE, 0o700, uid, gid, now
        tar.addfile(folder)
        member = tarfile.TarInfo(LAUNCH_PARAMS_FILE.lstrip("/"))
        member.size, member.mode, member.uid, member.gid, member.mtime = len(data), 0o600, uid, gid, now
        tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


async def call_or_undo(engine: DockerEngine, make: Callable[..., Any], undo: Callable[[Any], Any], *args: Any) -> Any:
    """Run ``make`` (an SDK call that creates something) in the pool; if the launch is cancelled meanwhile (its
    timeout), the pool thread still finishes, and ``undo(result)`` then removes what it made, in the pool too."""
    future = asyncio.ensure_future(engine.call(make, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:

        def made(done: asyncio.Future[Any]) -> None:
            if not done.cancelled() and done.exception() is None:
                task = asyncio.ensure_future(engine.call(undo, done.result()))
                task.add_done_callback(lambda t: t.cancelled() or t.exception())

        future.add_done_callback(made)
        raise


def parse_mount(text: str) -> tuple[str, str, bool]:
    """``source:target[:ro|rw]`` → (source, target, read_only). Both paths absolute, or a named volume as source."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise ConfigurationError(f"mount {text!r} is not 'source:target[:ro|rw]'")
    source, target = parts[0], parts[1]
    if not target.startswith("/") or not source or ("/" in source and not source.startswith("/")):
        raise ConfigurationError(f"mount {text!r}: the target must be absolute, the source absolute or a volume name")
    return source, target, len(parts) == 3 and parts[2] == "ro"


_MEMORY = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_memory(raw: str) -> int:
    """``"512m"``, ``"2G"``, ``"1.5GiB"``, ``"1048576"`` → bytes (binary units, as Docker reads them)."""
    match = _MEMORY.fullmatch(str(raw).strip())
    if not match:
        raise ConfigurationError(f"KERNEL_MEMORY={raw!r} is not a size such as 512m or 2g")
    value = float(match[1]) * _UNITS[(match[2] or "")[:1].lower()]
    if value < 6 << 20:
        raise ConfigurationError(f"KERNEL_MEMORY={raw!r} is below Docker's minimum of 6m")
    return int(value)


def parse_id(raw: Any, name: str) -> int:
    """A numeric user or group id; ``"00"`` is 0 (root) too."""
    try:
        value = int(str(raw).strip(), 10)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a numeric id") from None
    if not 0 <= value < 2**31:
        raise ConfigurationError(f"{name}={raw!r} is out of range")
    return value


def tail_text(raw: bytes | str, lines: int) -> list[str]:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return [line for line in text.splitlines() if line.strip()][-lines:]


def engine_message(exc: BaseException) -> str:
    """The engine's own one-line message from an SDK error."""
    explanation = getattr(exc, "explanation", None)
    text = explanation.decode() if isinstance(explanation, bytes) else explanation
    return str(text or exc).strip().splitlines()[0] if str(text or exc).strip() else type(exc).__name__


async def signal_in_container(engine: DockerEngine, container_id: str | None, pgid: int | None, signum: int) -> None:
    """Signal the kernel's process group inside the container (an exec of ``kill``), or, before the agent reported
    the group, the container's main process, the agent. Engine errors are ignored: the container may be ending."""
    if not container_id:
        return
    with contextlib.suppress(engine.docker.errors.APIError):
        if pgid:
            command = ["sh", "-c", f"kill -{int(signum)} -- -{int(pgid)}"]
            exec_id = await engine.call(engine.api.exec_create, container_id, command)
            await engine.call(engine.api.exec_start, exec_id["Id"])
        else:
            await engine.call(engine.api.kill, container_id, signal=int(signum))


class DockerEngine:
    """One engine client, one bounded pool for its calls, and one events stream, shared by all kernels of a loop.

    Parameters
    ----------
    base_url:
        The engine's address (``unix:///var/run/docker.sock``, ``tcp://host:2376``); ``None`` reads DOCKER_HOST.
    pool_size:
        Most SDK calls in flight at once; more wait their turn instead of opening more connections.
    """

    def __init__(self, base_url: str | None = None, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        self.base_url = base_url
        self.pool_size = pool_size
        self.loop = asyncio.get_running_loop()
        self._pool = concurrent.futures.ThreadPoolExecutor(pool_size, thread_name_prefix="gp-docker")
        self._client: Any = None
        self._client_lock = threading.Lock()
        self.docker: Any = None
        self._subscribers: dict[int, tuple[dict[str, Any], Callable[[dict[str, Any]], None], Callable[[], None]]] = {}
        self._next_id = 0
        self._events_thread: threading.Thread | None = None
        self._stream: Any = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._ready = asyncio.Event()
        self._closed = False
        self._holds = 0
        self.state: dict[str, Any] = {}  # per-adapter shared trackers, keyed by adapter name

    def _make_client(self) -> Any:
        """Import the SDK and make the client, off the loop: both take time (the client asks the engine's version)."""
        with self._client_lock:
            if self._client is None:
                docker = load_docker()
                kwargs: dict[str, Any] = {"max_pool_size": self.pool_size}
                if self.base_url:
                    self._client = docker.DockerClient(base_url=self.base_url, **kwargs)
                else:
                    self._client = docker.from_env(**kwargs)
                self.docker = docker
        return self._client

    async def connect(self) -> None:
        """Make the client in the pool (once). Every entry point of an adapter awaits this first."""
        if self._client is None:
            try:
                await self.loop.run_in_executor(self._pool, self._make_client)
            except ConfigurationError:
                raise
            except Exception as exc:
                raise BackendUnavailable(f"cannot reach the Docker engine: {exc}") from exc

    @property
    def client(self) -> Any:
        return self._client if self._client is not None else self._make_client()

    @property
    def api(self) -> Any:
        return self.client.api

    async def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one SDK call in the pool; engine connection errors become :class:`BackendUnavailable`."""
        if self._closed:
            raise BackendUnavailable("the Docker engine client is closed")
        await self.connect()
        try:
            return await self.loop.run_in_executor(self._pool, lambda: function(*args, **kwargs))
        except self.docker.errors.DockerException:
            raise
        except (ConnectionError, OSError) as exc:
            raise BackendUnavailable(f"cannot reach the Docker engine: {exc}") from exc

    # --- the shared events stream -----------------------------------------------------------------------------------

    def subscribe(
        self,
        filters: dict[str, Any],
        on_event: Callable[[dict[str, Any]], None],
        on_resync: Callable[[], None],
    ) -> Callable[[], None]:
        """Deliver matching events to ``on_event`` on the loop; ``on_resync`` after a reconnect. Returns unsubscribe.

        All subscribers share one stream; ``filters`` only select which events each one gets (by type and label).
        """
        self._next_id += 1
        key = self._next_id
        self._subscribers[key] = (filters, on_event, on_resync)
        self._ensure_stream()

        def unsubscribe() -> None:
            self._subscribers.pop(key, None)

        return unsubscribe

    def hold(self) -> None:
        """A kernel is tracked: keep the events stream running."""
        self._holds += 1
        self._ensure_stream()

    def release(self) -> None:
        """A kernel is no longer tracked; with none left, the stream stops (it reopens on the next hold)."""
        self._holds = max(0, self._holds - 1)
        if self._holds == 0 and self._stream is not None:
            self._stop.set()
            stream = self._stream
            self.loop.run_in_executor(None, _close_quietly, stream)

    async def stream_ready(self, timeout: float = 5.0) -> None:
        """Wait until the events stream is connected (so no event of a container created now is missed)."""
        self._ensure_stream()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)

    def _ensure_stream(self) -> None:
        with self._lock:
            if self._stop.is_set() and self._events_thread is not None and not self._closed:
                self._stop.clear()  # a stop that the old thread has not acted on yet: it keeps running
            if self._events_thread is None or not self._events_thread.is_alive():
                self._stop.clear()
                self._events_thread = threading.Thread(target=self._read_events, name="gp-docker-events", daemon=True)
                self._events_thread.start()

    def _read_events(self) -> None:
        """The stream's thread: read events, hand them to the loop; reconnect with back-off; stop when asked."""
        delay = 0.5
        first = True
        while not self._stop.is_set():
            since = time.time() - 1
            try:
                self._make_client()
                # Container and service events from one second ago on (so none is lost while connecting); each
                # subscriber picks its own by label in _dispatch.
                stream = self.api.events(
                    decode=True,
                    since=int(since),
                    filters={"type": ["container", "service"]},
                )
            except Exception as exc:
                log.warning("Docker events stream failed to open (%s); retrying in %.1f s", exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)
                continue
            self._stream = stream
            self._to_loop(self._ready.set)
            if not first:
                self._to_loop(self._resync_all)
            first, delay = False, 0.5
            try:
                for event in stream:
                    if self._stop.is_set():
                        break
                    self._to_loop(self._dispatch, event)
            except Exception as exc:
                if not self._stop.is_set():
                    log.warning("Docker events stream broke (%s); reconnecting", exc)
            finally:
                with contextlib.suppress(Exception):
                    stream.close()
                self._stream = None
                self._to_loop(self._ready.clear)

    def _to_loop(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self._stop.set()

    def _dispatch(self, event: dict[str, Any]) -> None:
        attributes = (event.get("Actor") or {}).get("Attributes") or {}
        for filters, on_event, _ in list(self._subscribers.values()):
            if filters.get("type") and event.get("Type") not in filters["type"]:
                continue
            wanted = filters.get("labels") or {}
            if any(attributes.get(k) != v for k, v in wanted.items()):
                continue
            try:
                on_event(event)
            except Exception:
                log.exception("handling a Docker event failed")

    def _resync_all(self) -> None:
        for _, _, on_resync in list(self._subscribers.values()):
            with contextlib.suppress(Exception):
                on_resync()

    async def close(self) -> None:
        """Stop the events stream and the pool; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):
                await self.loop.run_in_executor(None, stream.close)
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()


def _close_quietly(stream: Any) -> None:
    with contextlib.suppress(Exception):
        stream.close()


_engines: PerLoop[DockerEngine] = PerLoop()


def shared_engine(base_url: str | None = None, pool_size: int = DEFAULT_POOL_SIZE) -> DockerEngine:
    """The process's one :class:`DockerEngine` for ``base_url`` on the running loop."""
    return _engines.get(base_url, lambda: DockerEngine(base_url, pool_size), usable=lambda engine: not engine._closed)


# --- what the Docker and Swarm backends share ---------------------------------------------------------------------


TrackerT = TypeVar("TrackerT", bound="HandleTracker")


class HandleTracker:
    """The base of each backend's shared observer on one engine: kernel id → handle, and the engine's events stream
    held open while any kernel is tracked. One per engine and kind (``key``), kept in ``engine.state``."""

    key: ClassVar[str] = ""

    def __init__(self, engine: DockerEngine) -> None:
        self.engine = engine
        self.handles: dict[str, BackendHandle] = {}

    @classmethod
    def for_engine(cls: type[TrackerT], engine: DockerEngine) -> TrackerT:
        tracker = engine.state.get(cls.key)
        if tracker is None:
            tracker = engine.state[cls.key] = cls(engine)
        return tracker  # type: ignore[no-any-return]

    def track(self, handle: BackendHandle) -> None:
        if handle.kernel_id not in self.handles:
            self.engine.hold()
        self.handles[handle.kernel_id] = handle

    def untrack(self, handle: BackendHandle) -> bool:
        """Stop tracking ``handle``; False when another handle (a relaunch) holds its kernel id now."""
        if self.handles.get(handle.kernel_id) is not handle:
            return False
        del self.handles[handle.kernel_id]
        self.engine.release()
        return True

    async def refresh_restored(self, handle: BackendHandle) -> None:
        """Read a reattached kernel's resource once (the events stream tells only of changes)."""
        raise NotImplementedError


class EngineBackend(Backend):
    """The Docker and Swarm backends' common part: the engine, the provisioner's request, the tracker, and what
    does not depend on whether a kernel is a container or a service."""

    kernel_ends_with_resource: ClassVar[bool] = True  # the container (a service's task) holds the agent
    # Assigned on a network of the server's reach (the engine reports the address); callback on host networking.
    modes: ClassVar[tuple[ConnectionMode, ...]] = (ConnectionMode.ASSIGNED, ConnectionMode.CALLBACK)
    tracker_class: ClassVar[type[HandleTracker]] = HandleTracker
    #: The ``handle.data`` keys that identify a launch in another process (reattach).
    serialized_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, engine: DockerEngine, request: ContainerRequest | None = None) -> None:
        self.engine = engine
        self.request = request  # the default request, for embedders; provisioners decide one per launch
        self.tracker = self.tracker_class.for_engine(engine)

    def request_for(self, spec: LaunchSpec) -> ContainerRequest:
        """The launch's own checked request (decided in the provisioner's pre_launch), else the backend's."""
        request = spec.request if isinstance(spec.request, ContainerRequest) else self.request
        if request is None:
            raise LaunchError(f"this {self.name} backend was made for reattaching only; it has no container request")
        return request

    def owner_filter(self, owner: str | None) -> dict[str, str]:
        """The label filter of what this server's owner (or ``owner``) made."""
        owner = owner or (self.request.owner if self.request else None)
        return {"label": f"{OWNER_LABEL}={owner}" if owner else OWNER_LABEL}

    async def signal(self, handle: BackendHandle, signum: int) -> None:
        """Signal the kernel's process group inside its container, or the agent (the container's main process)."""
        if not handle.observation.state.is_over:
            await signal_in_container(
                self.engine, handle.data.get("container_id"), handle.data.get("kernel_pgid"), signum
            )

    def serialize(self, handle: BackendHandle) -> dict[str, Any]:
        keys = self.serialized_keys
        return {"kernel_id": handle.kernel_id, **{k: handle.data[k] for k in keys if k in handle.data}}

    async def restore(self, data: dict[str, Any]) -> BackendHandle:
        await self.engine.connect()
        handle = BackendHandle(str(data.get("kernel_id", "")), data={k: v for k, v in data.items() if k != "kernel_id"})
        await self.engine.stream_ready()
        self.tracker.track(handle)
        await self.tracker.refresh_restored(handle)
        if handle.observation.state is PlatformState.GONE:
            self.tracker.untrack(handle)
        return handle
