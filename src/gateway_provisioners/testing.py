"""A backend whose platform is its caller, for testing code built on the core without any cluster.

:class:`ScriptedBackend` implements the backend port (:class:`~gateway_provisioners.core.backend.Backend`) and
records what the core asks of it; the caller plays the platform by pushing observations (or the agent's sealed
payload) into the handles it hands out. An embedder tests its own gateway logic — timeouts, failure reporting,
progress events — against it exactly as the library's unit tests test :class:`~gateway_provisioners.core.kernel.
RemoteKernel`::

    backend = ScriptedBackend()
    kernel = RemoteKernel(backend, spec.kernel_id)
    start = asyncio.ensure_future(kernel.start(spec))
    handle = await backend.next_handle()
    handle.update(Observation(PlatformState.FAILED, reason="ImagePullBackOff"))
    await start  # raises LaunchError("ImagePullBackOff")

docs/adding-a-backend.md walks through the port with this class as its example.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, ClassVar

from .core.backend import Backend, BackendHandle, Observation, PlatformState
from .core.launch import ConnectionMode, LaunchSpec


class ScriptedBackend(Backend):
    """Every request is recorded; every platform reading comes from the caller through the handles."""

    name: ClassVar[str] = "scripted"
    modes: ClassVar[tuple[ConnectionMode, ...]] = (ConnectionMode.STDOUT, ConnectionMode.CALLBACK)

    def __init__(self, initial: PlatformState = PlatformState.PENDING, log_lines: Sequence[str] = ()) -> None:
        self.initial = initial  # the first observation of every new launch
        self.log_lines = list(log_lines)  # what log_tail() answers
        self.handles: asyncio.Queue[BackendHandle] = asyncio.Queue()  # each submitted launch, in order
        self.submitted: list[LaunchSpec] = []
        self.terminated: list[tuple[BackendHandle, float]] = []  # (handle, grace) of each terminate()
        self.signals: list[int] = []  # what the core sent through the platform instead of the agent

    async def next_handle(self, timeout: float = 5.0) -> BackendHandle:
        """The handle of the next submitted launch, once the core has submitted it."""
        return await asyncio.wait_for(self.handles.get(), timeout)

    async def submit(self, spec: LaunchSpec) -> BackendHandle:
        self.submitted.append(spec)
        handle = BackendHandle(spec.kernel_id, data={"launch": len(self.submitted)})
        handle.update(Observation(self.initial, reason=f"scripted {self.initial.value}"))
        self.handles.put_nowait(handle)
        return handle

    async def terminate(self, handle: BackendHandle, grace: float = 0.0) -> None:
        self.terminated.append((handle, grace))
        handle.update(Observation(PlatformState.GONE, reason="terminated"))

    async def signal(self, handle: BackendHandle, signum: int) -> None:
        self.signals.append(signum)

    async def log_tail(self, handle: BackendHandle, lines: int = 20) -> list[str]:
        return self.log_lines[-lines:]

    def serialize(self, handle: BackendHandle) -> dict[str, Any]:
        return {"kernel_id": handle.kernel_id, **handle.data}

    async def restore(self, data: dict[str, Any]) -> BackendHandle:
        fields = dict(data)
        return BackendHandle(str(fields.pop("kernel_id")), data=fields)
