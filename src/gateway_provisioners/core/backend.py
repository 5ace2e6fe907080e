"""The backend port: the small async interface every cluster adapter implements.

An adapter owns one shared observer for all its kernels (a Kubernetes watch, a Docker events stream, one batched
YARN query, the local process table) and pushes what it sees into each kernel's :class:`BackendHandle` with
:meth:`BackendHandle.update`. The core never asks the platform "how is kernel X?": it reads the handle.
"""

from __future__ import annotations

import abc
import asyncio
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import LaunchError
from .launch import ConnectionMode, LaunchSpec


class PlatformState(str, enum.Enum):
    """What the platform says about the agent's process, pod, container or application."""

    PENDING = "pending"  # accepted but not running yet: queued, scheduling, pulling an image
    STARTING = "starting"  # the agent's process exists
    RUNNING = "running"  # the agent runs and (for server-assigned mode) its address is known
    EXITED = "exited"  # the agent's process ended
    FAILED = "failed"  # the platform gave up: image pull failure, unschedulable, application FAILED
    GONE = "gone"  # the platform no longer knows the resource

    @property
    def is_over(self) -> bool:
        return self in (PlatformState.EXITED, PlatformState.FAILED, PlatformState.GONE)


@dataclass(frozen=True)
class Observation:
    """One reading of the platform's state for a kernel."""

    state: PlatformState
    ip: str | None = None  # where the kernel and agent can be reached
    host: str | None = None  # the node, host or container name, for people
    reason: str = ""  # the platform's one-line reason ("ImagePullBackOff", "exit code 1")
    diagnostics: Sequence[str] = ()
    exit_code: int | None = None
    error: LaunchError | None = None  # a typed failure (ImagePullError, Unschedulable, ...) when state is FAILED


@dataclass(eq=False)
class BackendHandle:
    """A backend's reference to one launched kernel, and the cache its shared observer writes into."""

    kernel_id: str
    observation: Observation = field(default_factory=lambda: Observation(PlatformState.PENDING))
    #: Adapter-specific, JSON-serializable identity. The core adds what the agent reported — ``agent_pid``,
    #: ``kernel_pgid``, ``hostname`` — for fallbacks, and ``agent_exited`` once the agent ended after a shutdown
    #: request (then its kernel and log are gone too, and :meth:`Backend.terminate` has only platform resources left).
    data: dict[str, Any] = field(default_factory=dict)
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _payloads: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue, repr=False)
    _listeners: list[Callable[[Observation], None]] = field(default_factory=list, repr=False, compare=False)

    def update(self, observation: Observation) -> None:
        """Called by the adapter's observer with each new reading."""
        self.observation = observation
        self._changed.set()
        for listener in list(self._listeners):
            listener(observation)

    def subscribe(self, listener: Callable[[Observation], None]) -> None:
        """Call ``listener`` with every later reading (synchronously, from :meth:`update`)."""
        self._listeners.append(listener)

    def deliver_payload(self, payload: bytes) -> None:
        """Called by an adapter that reads the agent's output (stdout mode) with a sealed connection payload."""
        self._payloads.put_nowait(payload)
        self._changed.set()

    def take_payload(self) -> bytes | None:
        return None if self._payloads.empty() else self._payloads.get_nowait()

    async def wait_changed(self) -> None:
        """Return at the next observation or payload."""
        await self._changed.wait()
        self._changed.clear()


class Backend(abc.ABC):
    """A cluster (or the local machine) that can run the agent and its kernel.

    Methods are coroutines and must not block the event loop: synchronous SDKs run in a bounded thread pool.
    """

    #: Short name used in logs and in serialized handles.
    name: ClassVar[str] = "backend"
    #: The connection modes this backend supports; the first is its default.
    modes: ClassVar[tuple[ConnectionMode, ...]] = (ConnectionMode.CALLBACK,)
    #: Whether the platform resource this backend observes holds the agent, so that an observation that is over
    #: (exited, failed, gone) after the kernel is ready ends the kernel even while its agent still answers: a Swarm
    #: service removed or a YARN application killed from outside is stopped by the platform only seconds later.
    #: False where the agent outlives what the backend observes (an SSH session).
    kernel_ends_with_resource: ClassVar[bool] = False

    def kernel_uid(self, spec: LaunchSpec) -> int | None:
        """The user id the kernel will really run as, where this backend decides it; None where only the agent on
        the target knows (it refuses uid 0 itself unless ``spec.allow_root``). The core refuses 0 before submitting."""
        return None

    @abc.abstractmethod
    async def submit(self, spec: LaunchSpec) -> BackendHandle:
        """Ask the platform to start the agent for ``spec``; return once the platform accepted the request.

        Returns
        -------
        A handle whose observation the adapter keeps current from its shared observer.
        """

    @abc.abstractmethod
    async def terminate(self, handle: BackendHandle, grace: float = 0.0) -> None:
        """Stop the agent and its kernel and remove what the launch created. No-op if already gone.

        ``grace`` seconds are allowed for a polite stop before the platform's forceful one.
        """

    @abc.abstractmethod
    async def signal(self, handle: BackendHandle, signum: int) -> None:
        """Deliver ``signum`` to the kernel without the agent's help (the fallback when the agent does not answer)."""

    @abc.abstractmethod
    async def log_tail(self, handle: BackendHandle, lines: int = 20) -> list[str]:
        """The last ``lines`` lines of the agent's and kernel's log, for error reports. Empty if unavailable."""

    @abc.abstractmethod
    def serialize(self, handle: BackendHandle) -> dict[str, Any]:
        """A JSON-serializable identity of the launch, enough for :meth:`restore` in another process."""

    @abc.abstractmethod
    async def restore(self, data: dict[str, Any]) -> BackendHandle:
        """Rebuild a handle from :meth:`serialize` output and start observing it."""

    async def route(self, handle: BackendHandle, info: dict[str, Any]) -> dict[str, Any]:
        """Where the server reaches the kernel: rewrite ``ip`` and the ports in ``info`` (the agent's connection info,
        ``ip`` already set to the observed address) when traffic must take another path, e.g. an SSH tunnel.
        The default reaches the kernel directly."""
        return info

    async def list_owned(self) -> list[dict[str, Any]]:
        """Serialized handles of every launch this backend can see that carries this library's owner label."""
        return []

    async def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Stop the shared observer and release clients. Idempotent."""
