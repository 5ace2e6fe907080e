"""A warm pool: kernels of one launch template, started ahead of demand and handed out once each.

:class:`KernelPool` owns up to ``size`` ready :class:`RemoteKernel` s that nobody has connected to. A background
task keeps it full (at most ``concurrency`` launches at a time, with a back-off after failures, so a broken template
does not launch in a loop); :meth:`KernelPool.claim` hands out one kernel, after checking that it still lives and has
not aged out, and the kernel is the claimer's from then on; :meth:`KernelPool.drain` ends everything the pool holds
or is starting. Whether a given launch may use a pool's kernels is the caller's question (the provisioner facade
compares what the launch asks for with the pool's template); the pool only keeps kernels ready::

    pool = KernelPool("python3 on docker", launch_one, size=4, max_age=3600, concurrency=2)
    pool.start()                      # fills in the background
    kernel = await pool.claim()       # a ready kernel, or None when none is ready: launch a cold one then
    await pool.drain()                # at shutdown: nothing left running

Nothing here waits on a timer to learn about a kernel: pooled kernels' lifecycle events wake the refill task, which
otherwise sleeps until the next kernel ages out or the next retry after a failure.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .errors import ConfigurationError
from .kernel import RemoteKernel
from .lifecycle import KernelPhase
from .logsafe import printable, safe_logger
from .tasks import BackgroundTasks

_log = safe_logger("gateway_provisioners.pool")

#: Seconds a claim waits for a pooled kernel's agent to answer before the kernel is dropped for the next one.
PING_TIMEOUT = 2.0
#: Seconds :meth:`KernelPool.drain` lets launches in flight finish (so that it can end them) before cancelling them.
DRAIN_GRACE = 15.0
#: Back-off after consecutive failed launches: the first retry after this many seconds, doubling up to the maximum.
RETRY_FIRST, RETRY_MAX = 1.0, 60.0


@dataclass(eq=False)
class _Pooled:
    kernel: RemoteKernel
    ready_at: float
    unsubscribe: Callable[[], None] = field(default=lambda: None)


class KernelPool:
    """Pre-started kernels of one launch template.

    Parameters
    ----------
    name:
        For log lines ("python3 [docker]").
    launch:
        Starts one kernel of the template and returns it ready (its :meth:`RemoteKernel.start` has returned), with a
        fresh kernel id, token and key each time. Raises on failure; must leave nothing running then (the core's
        :meth:`RemoteKernel.start` does not).
    size:
        How many ready kernels to keep.
    max_age:
        Seconds a kernel may wait in the pool before it is replaced by a fresh one; 0 = no limit.
    concurrency:
        How many kernels the pool starts at the same time.
    drain_grace:
        Seconds :meth:`drain` lets launches in flight finish, so that it can end them, before it cancels them.
    log:
        Where the pool's lines go (a server passes its own logger); by default ``gateway_provisioners.pool``.
    """

    def __init__(
        self,
        name: str,
        launch: Callable[[], Awaitable[RemoteKernel]],
        *,
        size: int,
        max_age: float = 0.0,
        concurrency: int = 1,
        drain_grace: float = DRAIN_GRACE,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    ) -> None:
        if size < 1 or concurrency < 1 or max_age < 0:
            raise ConfigurationError(f"pool {name}: size and concurrency must be at least 1 and max_age at least 0")
        self.name = printable(name)
        self.size = size
        self.max_age = max_age
        self.concurrency = concurrency
        self._launch = launch
        self.drain_grace = drain_grace
        self._log = log or _log
        self._ready: collections.deque[_Pooled] = collections.deque()
        self._starting = 0
        self._failures = 0
        self._retry_at = 0.0
        self._closed = False
        self._wake = asyncio.Event()  # the refill task's: something to look at
        self._state_changed = asyncio.Event()  # observers': a kernel became ready or went, a launch failed
        self._refill: asyncio.Task[None] | None = None
        self._launches = BackgroundTasks(self._log, f"pool {printable(name)}: a launch")
        self._endings = BackgroundTasks(self._log, f"pool {printable(name)}: ending a pooled kernel")
        self.claimed = 0  # kernels handed out so far (for logs and benchmarks)
        self.replaced = 0  # kernels dropped because they died or aged out
        self.last_error: str = ""  # the reason of the last failed launch, for logs and the docs' troubleshooting

    # --- state ------------------------------------------------------------------------------------------------------

    @property
    def ready(self) -> int:
        """Kernels ready to be claimed now."""
        return len(self._ready)

    @property
    def starting(self) -> int:
        """Kernels being started for the pool."""
        return self._starting

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"<KernelPool {self.name}: {self.ready} ready, {self.starting} starting of {self.size}>"

    async def wait_ready(self, count: int | None = None, timeout: float = 60.0) -> None:
        """Wait until ``count`` (default: ``size``) kernels are ready; for tests, benchmarks and warm-up scripts."""
        want = self.size if count is None else count
        deadline = time.monotonic() + timeout
        while self.ready < want:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closed:
                raise TimeoutError(f"pool {self.name}: {self.ready} of {want} kernels ready ({self.last_error})")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._state_changed.wait(), remaining)

    # --- the pool's life --------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Begin filling the pool in the background (on the running event loop). Idempotent."""
        if self._refill is None and not self._closed:
            self._refill = asyncio.ensure_future(self._run())

    async def claim(self) -> RemoteKernel | None:
        """Take one ready kernel out of the pool, or ``None`` when none is ready (never waits for one to start).

        A kernel that died, lost its agent or aged out is ended and the next one tried: what is handed out is a
        live kernel that nobody was given before. The pool refills behind the claim.
        """
        while self._ready:
            pooled = self._ready.popleft()  # the oldest first: it is the nearest to ageing out
            pooled.unsubscribe()
            self._wake.set()
            reason = self._unusable(pooled)
            if reason is None:
                try:
                    state = await pooled.kernel.ping(PING_TIMEOUT)
                    if state.get("kernel") != "running":
                        reason = "its kernel exited"
                except Exception as exc:  # the agent stopped answering: the next kernel
                    reason = f"its agent did not answer ({exc or type(exc).__name__})"
            if reason is not None:
                self._drop(pooled, reason)
                continue
            self.claimed += 1
            self._log.debug("pool %s: kernel %s claimed (%d left)", self.name, pooled.kernel.launch_id, self.ready)
            return pooled.kernel
        return None

    async def drain(self) -> None:
        """End every kernel the pool holds or is starting and stop refilling. Idempotent; the pool stays closed."""
        if self._closed and self._refill is None and not len(self._launches) and not len(self._endings):
            return
        self._closed = True
        self._notify()
        if self._refill is not None:
            self._refill.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refill
            self._refill = None
        # Launches in flight are let finish (and then ended, see _launch_one) for up to drain_grace seconds: a launch
        # cancelled while the platform creates its resource would not learn of it, and could not remove it.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._launches.join(), self.drain_grace)
        self._launches.cancel()  # what is left: a cancelled start ends what it knows of (RemoteKernel.start)
        await self._launches.join()
        count = len(self._ready)
        while self._ready:
            pooled = self._ready.popleft()
            pooled.unsubscribe()
            self._endings.spawn(pooled.kernel.shutdown(grace=0))
        await self._endings.join()
        if count:
            self._log.info("pool %s: drained, %d pooled kernel(s) ended", self.name, count)

    # --- refilling --------------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._closed:
            self._wake.clear()
            for pooled in list(self._ready):
                reason = self._unusable(pooled)
                if reason is not None:
                    self._ready.remove(pooled)
                    pooled.unsubscribe()
                    self._drop(pooled, reason)
            if time.monotonic() >= self._retry_at:
                while self.ready + self._starting < self.size and self._starting < self.concurrency:
                    self._starting += 1
                    self._launches.spawn(self._launch_one())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._next_deadline())

    def _next_deadline(self) -> float | None:
        """Seconds until the refill task must look again without being woken: an age limit or a retry."""
        now = time.monotonic()
        times = [self._retry_at] if self._retry_at > now else []
        if self.max_age:
            times.extend(p.ready_at + self.max_age for p in self._ready)
        return max(0.0, min(times) - now) + 0.01 if times else None

    async def _launch_one(self) -> None:
        try:
            kernel = await self._launch()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failures += 1
            delay = min(RETRY_MAX, RETRY_FIRST * 2 ** (self._failures - 1))
            self._retry_at = time.monotonic() + delay
            self.last_error = printable(" ".join(str(exc).split()) or type(exc).__name__)
            self._log.warning(
                "pool %s: a pooled launch failed, next try in %g s: %s", self.name, delay, self.last_error
            )
            self._notify()
            return
        finally:
            self._starting -= 1
            self._wake.set()
        self._failures, self._retry_at = 0, 0.0
        if self._closed:  # drained while the launch finished
            await kernel.shutdown(grace=0)
            return
        pooled = _Pooled(kernel, time.monotonic())
        pooled.unsubscribe = kernel.lifecycle.events.subscribe(lambda event: self._wake.set())
        self._ready.append(pooled)
        self._notify()
        if self.ready == self.size:  # once per fill: operators see the pool full, not every kernel
            self._log.info("pool %s: %d of %d kernels ready", self.name, self.ready, self.size)

    def _unusable(self, pooled: _Pooled) -> str | None:
        kernel = pooled.kernel
        if kernel.phase is not KernelPhase.READY or kernel.poll() is not None:
            return f"it is {kernel.phase.value}"
        if not kernel.agent_alive:
            return "its agent is gone"
        if self.max_age and time.monotonic() - pooled.ready_at > self.max_age:
            return f"it waited longer than {self.max_age:g} s"
        return None

    def _drop(self, pooled: _Pooled, reason: str) -> None:
        self.replaced += 1
        self._log.info("pool %s: pooled kernel %s replaced: %s", self.name, pooled.kernel.launch_id, reason)
        self._endings.spawn(pooled.kernel.shutdown(grace=0))
        self._wake.set()
        self._notify()

    def _notify(self) -> None:
        """Wake whoever waits for the pool to change (:meth:`wait_ready`)."""
        self._state_changed.set()
        self._state_changed = asyncio.Event()
