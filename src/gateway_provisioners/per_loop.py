"""Objects shared by the kernels of one event loop: the response listener, a Docker engine, a Kubernetes hub, a YARN
client and poller, the SSH connections.

Such objects hold sockets, tasks and futures bound to the loop that made them, so each loop gets its own. A process
may run several loops one after another (every ``asyncio.run``, every test); the entries of a loop that has closed
are dropped at the next lookup, and a new loop never receives an object of an old loop that happened to have the same
``id()``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    """A cache of ``T`` per running event loop and key.

    Parameters
    ----------
    release:
        Called with each object of a loop that has closed, when it is dropped (for example to close its listening
        sockets, which a closed loop still lets go). Its errors are ignored: the loop is gone.
    """

    def __init__(self, release: Callable[[T], None] | None = None) -> None:
        self._entries: dict[tuple[int, Hashable], tuple[asyncio.AbstractEventLoop, T]] = {}
        self._release = release

    def get(self, key: Hashable, make: Callable[[], T], usable: Callable[[T], bool] | None = None) -> T:
        """The running loop's object for ``key``; made by ``make`` when there is none (or it is not ``usable``)."""
        loop = asyncio.get_running_loop()
        self._drop_closed_loops()
        entry = self._entries.get((id(loop), key))
        if entry is not None and entry[0] is loop and (usable is None or usable(entry[1])):
            return entry[1]
        value = make()
        self._entries[(id(loop), key)] = (loop, value)
        return value

    def find(self, key: Hashable) -> T | None:
        """The running loop's object for ``key``, or None (nothing is made)."""
        loop = asyncio.get_running_loop()
        self._drop_closed_loops()
        entry = self._entries.get((id(loop), key))
        return entry[1] if entry is not None and entry[0] is loop else None

    def running(self) -> list[T]:
        """Every object of the running loop."""
        loop = asyncio.get_running_loop()
        return [value for owner, value in self._entries.values() if owner is loop]

    def pop_running(self) -> list[T]:
        """Remove and return every object of the running loop (for its owner to close)."""
        loop = asyncio.get_running_loop()
        mine = [key for key, (owner, _) in self._entries.items() if owner is loop]
        return [self._entries.pop(key)[1] for key in mine]

    def _drop_closed_loops(self) -> None:
        for key, (loop, value) in list(self._entries.items()):
            if loop.is_closed():
                del self._entries[key]
                if self._release is not None:
                    with contextlib.suppress(Exception):
                        self._release(value)
