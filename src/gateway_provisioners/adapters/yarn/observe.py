"""From a ResourceManager application report to an :class:`Observation` (pure functions, no I/O)."""

from __future__ import annotations

from typing import Any

from ...core.backend import Observation, PlatformState
from ...core.errors import LaunchError, QueueFull

#: Every application this library submits carries this tag; the shared poller asks the RM for it alone.
LIBRARY_TAG = "gateway-provisioners"
SUBMITTED_STATES = ("NEW", "NEW_SAVING", "SUBMITTED")
FINAL_STATES = ("FINISHED", "FAILED", "KILLED")


def kernel_tag(kernel_id: str) -> str:
    return f"gp-kernel-{kernel_id}".lower()  # YARN lower-cases tags


def launch_tag(launch_id: str) -> str:
    return f"gp-launch-{launch_id}".lower()


def app_tags(app: dict[str, Any]) -> set[str]:
    raw = app.get("applicationTags") or ""
    items = raw if isinstance(raw, list) else str(raw).split(",")
    return {str(t).strip().lower() for t in items if str(t).strip()}


def app_sort_key(app_id: str) -> tuple[int, int]:
    """``application_<cluster ms>_<seq>`` as numbers (string order breaks after sequence 9999)."""
    try:
        _, cluster, seq = app_id.split("_", 2)
        return int(cluster), int(seq)
    except ValueError:
        return (0, 0)


def am_host(app: dict[str, Any]) -> str | None:
    address = app.get("amHostHttpAddress") or ""
    return address.rsplit(":", 1)[0].strip("[]") or None if address else None


def diagnostics_of(app: dict[str, Any]) -> list[str]:
    text = str(app.get("diagnostics") or "").strip()
    return [line.strip() for line in text.splitlines() if line.strip()]


def observe(app: dict[str, Any], ip: str | None = None, callback: str | None = None) -> Observation:
    """What ``app`` means for the kernel's launch. ``ip`` is the AM host's resolved address."""
    app_id, state, queue = app.get("id", "?"), str(app.get("state", "")).upper(), app.get("queue") or "default"
    diagnostics = diagnostics_of(app)
    host = am_host(app)
    said = f": {' '.join(diagnostics)}" if diagnostics else ""
    if state in SUBMITTED_STATES:
        return Observation(PlatformState.PENDING, reason=f"application {app_id} {state.lower()} to queue {queue}")
    if state == "ACCEPTED" and not host:
        return Observation(
            PlatformState.PENDING, reason=f"application {app_id} queued in {queue}{said}", diagnostics=diagnostics
        )
    if state in ("ACCEPTED", "RUNNING"):
        # ACCEPTED with an AM host: the AM container (the agent) runs but has not registered with the RM, which
        # is what an agent submitted through REST looks like; RUNNING: a registered AM (Spark's).
        calls = f"; its agent calls back to {callback}" if callback else ""
        return Observation(
            PlatformState.STARTING,
            ip=ip or host,
            host=host,
            reason=f"application {app_id} {state.lower()} on {host or 'an unknown host'}{calls}",
            diagnostics=diagnostics,
        )
    final = str(app.get("finalStatus") or "").upper()
    if state == "FINISHED" and final in ("SUCCEEDED", "UNDEFINED", ""):
        return Observation(
            PlatformState.EXITED,
            host=host,
            exit_code=0,
            reason=f"application {app_id} finished",
            diagnostics=diagnostics,
        )
    reason = f"YARN application {app_id} {state or 'vanished'} ({final.lower() or 'no final status'}){said}"
    return Observation(
        PlatformState.FAILED,
        host=host,
        exit_code=1,
        reason=reason,
        diagnostics=diagnostics,
        error=LaunchError(reason, diagnostics=diagnostics, hint="See the application's diagnostics and logs in YARN"),
    )


def queue_full(app: dict[str, Any]) -> Observation:
    """The launch deadline passed while ``app`` waited for an AM container."""
    queue = app.get("queue") or "default"
    diagnostics = diagnostics_of(app)
    reason = f"queue {queue} has no room: {' '.join(diagnostics) or 'the application was never given a container'}"
    error = QueueFull(
        reason,
        diagnostics=[f"application {app.get('id')} still {app.get('state')} at the launch deadline", *diagnostics],
        hint="Use another queue (KERNEL_QUEUE), free capacity in this one, or raise the launch timeout",
    )
    return Observation(PlatformState.FAILED, reason=reason, diagnostics=diagnostics, error=error)


def is_final(app: dict[str, Any]) -> bool:
    return str(app.get("state", "")).upper() in FINAL_STATES
