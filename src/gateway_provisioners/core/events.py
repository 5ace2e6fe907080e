"""Progress events: one per lifecycle transition.

The same stream serves three readers: users (``"pulling image kernel-py:3.2"``), operators and metrics (per-phase
timings), and error reports (the phase in which a launch failed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("gateway_provisioners")


@dataclass(frozen=True)
class ProgressEvent:
    """A kernel entered ``phase``.

    ``elapsed`` is the time spent in ``previous`` (seconds, monotonic clock); ``since_start`` is the time since the
    lifecycle was created. ``message`` is for people ("queued in 'default'", "pulling image"), never a secret.
    """

    kernel_id: str
    phase: str
    previous: str | None
    elapsed: float
    since_start: float
    message: str = ""
    timestamp: float = field(default_factory=time.time)
    error: BaseException | None = None


EventListener = Callable[[ProgressEvent], None]


class EventLog:
    """Fan-out of progress events to listeners, keeping the history for timing reports."""

    def __init__(self) -> None:
        self._listeners: list[EventListener] = []
        self.history: list[ProgressEvent] = []

    def subscribe(self, listener: EventListener) -> Callable[[], None]:
        """Call ``listener`` for every future event; returns a function that unsubscribes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def emit(self, event: ProgressEvent) -> None:
        self.history.append(event)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a broken listener must not break a launch
                log.exception("progress listener failed for kernel %s", event.kernel_id)
