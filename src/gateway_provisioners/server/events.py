"""Start-up progress on jupyter_server's event bus: one event per lifecycle phase, for ``/api/events/subscribe``.

The provisioners already publish a :class:`ProgressEvent` for every phase a kernel enters (``submitted``, ``pending``
with "pulling image ..." or "queued in ...", ``starting``, ``connecting``, ``ready``, ``failed`` with its cause).
This module turns each into a ``jupyter_events`` event of the schema below, so a front end can show "pulling image"
instead of a silent "Connecting…". docs/server.md describes the fields for front-end authors.
"""

from __future__ import annotations

from typing import Any

from ..core.events import ProgressEvent

PHASES = ("submitted", "pending", "starting", "connecting", "ready", "restarting", "exited", "terminating",
          "terminated", "failed")  # fmt: skip
SCHEMA_ID = "https://events.jupyter.org/gateway_provisioners/kernel_progress/v1"

SCHEMA: dict[str, Any] = {
    "$id": SCHEMA_ID,
    "version": "1",
    "title": "Remote kernel lifecycle progress",
    "personal-data": False,
    "description": "A remote kernel (gateway-provisioners) entered a lifecycle phase.",
    "type": "object",
    "required": ["kernel_id", "phase", "backend", "message", "elapsed", "since_start"],
    "properties": {
        "kernel_id": {"type": "string", "description": "The kernel's id, as in /api/kernels."},
        "kernel_name": {"type": "string", "description": "The kernel spec's name."},
        "backend": {"type": "string", "description": "Where the kernel runs: local, ssh, docker, kubernetes, ..."},
        "phase": {
            "enum": list(PHASES),
            "description": "The phase the kernel entered.",
        },
        "previous": {"type": ["string", "null"], "description": "The phase it left."},
        "message": {"type": "string", "description": "For people: why, or what happens now (never a secret)."},
        "elapsed": {"type": "number", "description": "Seconds spent in the previous phase."},
        "since_start": {"type": "number", "description": "Seconds since this launch (or reattach) began."},
        "error": {"type": "string", "description": "Only for 'failed': the error's class, e.g. LaunchTimeout."},
    },
}


def event_data(event: ProgressEvent, backend: str, kernel_name: str) -> dict[str, Any]:
    """The event's fields as the schema has them."""
    data: dict[str, Any] = {
        "kernel_id": event.kernel_id,
        "kernel_name": kernel_name,
        "backend": backend,
        "phase": str(event.phase),
        "previous": str(event.previous) if event.previous is not None else None,
        "message": event.message,
        "elapsed": round(event.elapsed, 6),
        "since_start": round(event.since_start, 6),
    }
    if event.error is not None:
        data["error"] = type(event.error).__name__
    return data
