"""The kernel lifecycle: one explicit state machine per kernel.

::

    NEW → SUBMITTED → PENDING → STARTING → CONNECTING → READY ⇄ RESTARTING
                                                          ↓  ↖      ↑
                                                        EXITED ─────┘
    any non-final phase → TERMINATING → TERMINATED
    any non-final phase → FAILED(reason)

``EXITED`` means the kernel process ended while its agent (and its pod, container or host slot) is still there, so a
restart can reuse them. ``TERMINATED`` and ``FAILED`` are final. Illegal transitions raise, so a bug in an adapter
shows up as an error instead of a kernel in an impossible state.
"""

from __future__ import annotations

import asyncio
import enum
import time

from .errors import GatewayProvisionersError, LaunchError
from .events import EventLog, ProgressEvent


class KernelPhase(str, enum.Enum):
    NEW = "new"
    SUBMITTED = "submitted"  # the platform accepted the request
    PENDING = "pending"  # queued, scheduling, pulling an image
    STARTING = "starting"  # the agent runs; the kernel process is starting
    CONNECTING = "connecting"  # awaiting the handshake (connection info)
    READY = "ready"  # connection info known, kernel running
    RESTARTING = "restarting"  # the agent restarts the kernel in place
    EXITED = "exited"  # the kernel process ended; its agent remains
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in (KernelPhase.TERMINATED, KernelPhase.FAILED)

    def __str__(self) -> str:
        return self.value


P = KernelPhase
_STARTUP = (P.SUBMITTED, P.PENDING, P.STARTING, P.CONNECTING)
LEGAL_TRANSITIONS: dict[KernelPhase, frozenset[KernelPhase]] = {
    P.NEW: frozenset({P.SUBMITTED, P.STARTING, P.CONNECTING, P.READY}),
    P.SUBMITTED: frozenset({P.PENDING, P.STARTING, P.CONNECTING}),
    P.PENDING: frozenset({P.STARTING, P.CONNECTING}),
    P.STARTING: frozenset({P.CONNECTING}),
    P.CONNECTING: frozenset({P.READY}),
    P.READY: frozenset({P.RESTARTING, P.EXITED}),
    P.RESTARTING: frozenset({P.CONNECTING, P.READY, P.EXITED}),
    P.EXITED: frozenset({P.RESTARTING, P.READY}),
    P.TERMINATING: frozenset({P.TERMINATED}),
    P.TERMINATED: frozenset(),
    P.FAILED: frozenset(),
}
# TERMINATING and FAILED are reachable from every phase that is not final.
for _phase, _targets in LEGAL_TRANSITIONS.items():
    if not _phase.is_final and _phase is not P.TERMINATING:
        LEGAL_TRANSITIONS[_phase] = _targets | {P.TERMINATING, P.FAILED}
LEGAL_TRANSITIONS[P.TERMINATING] |= {P.FAILED}


class IllegalTransition(GatewayProvisionersError):
    """A transition the state machine does not allow, e.g. READY → PENDING."""


class KernelLifecycle:
    """The phase of one kernel, its transitions and the progress events they emit.

    ``wait_for`` lets a launch await a phase without polling; every transition wakes the waiters.
    """

    def __init__(self, kernel_id: str, events: EventLog | None = None) -> None:
        self.kernel_id = kernel_id
        self.events = events or EventLog()
        self.phase = KernelPhase.NEW
        self.error: BaseException | None = None
        self._created = time.monotonic()
        self._entered = self._created
        self._changed = asyncio.Event() if _has_loop() else None

    def can_move_to(self, phase: KernelPhase) -> bool:
        return phase in LEGAL_TRANSITIONS[self.phase]

    def move_to(self, phase: KernelPhase, message: str = "", error: BaseException | None = None) -> ProgressEvent:
        """Enter ``phase``, emitting a progress event. Raises :class:`IllegalTransition` if not allowed."""
        if not self.can_move_to(phase):
            raise IllegalTransition(f"kernel {self.kernel_id}: cannot go from {self.phase} to {phase}")
        now = time.monotonic()
        event = ProgressEvent(
            kernel_id=self.kernel_id,
            phase=phase.value,
            previous=self.phase.value,
            elapsed=now - self._entered,
            since_start=now - self._created,
            message=message,
            error=error,
        )
        self.phase, self._entered = phase, now
        if phase is KernelPhase.FAILED:
            self.error = error
        self.events.emit(event)
        self._wake()
        return event

    def fail(self, error: BaseException) -> None:
        """Enter FAILED with ``error`` (no-op if already final). A :class:`LaunchError` learns its phase."""
        if self.phase.is_final:
            return
        if isinstance(error, LaunchError) and error.phase is None:
            error.phase = self.phase.value
        self.move_to(KernelPhase.FAILED, message=str(error), error=error)

    def restart_from_new(self) -> None:
        """Start a fresh launch after a final phase (a restart that needs a new agent)."""
        if not self.phase.is_final:
            raise IllegalTransition(f"kernel {self.kernel_id}: cannot start over from {self.phase}")
        self.phase, self.error = KernelPhase.NEW, None
        self._created = self._entered = time.monotonic()

    async def wait_changed(self) -> None:
        """Return at the next transition."""
        if self._changed is None:
            self._changed = asyncio.Event()
        self._changed.clear()
        await self._changed.wait()

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()

    def timings(self) -> dict[str, float]:
        """Seconds spent in each phase so far (from the event history), for benchmarks and logs."""
        spent: dict[str, float] = {}
        for event in self.events.history:
            if event.kernel_id == self.kernel_id and event.previous is not None:
                spent[event.previous] = spent.get(event.previous, 0.0) + event.elapsed
        return spent


def _has_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
