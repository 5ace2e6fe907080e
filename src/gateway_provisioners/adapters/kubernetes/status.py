"""What a pod's status means for a kernel launch: a pure function from a pod dict to an :class:`Observation`.

The shared watch calls :func:`observe` for every change it sees, so the launch follows the pod without asking the API
anything. Terminal states are recognized as early as Kubernetes shows them, so a launch fails at once with the reason
rather than at the end of ``launch_timeout``: an image that cannot be pulled (ErrImagePull, ImagePullBackOff, ...),
a crash loop, a container that cannot be created, a pod that failed, and a pod that stayed unschedulable past a grace
period (a cluster autoscaler may still add a node, so the grace is the operator's to choose).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...core.backend import Observation, PlatformState
from ...core.errors import ImagePullError, KernelExited, LaunchError, Unschedulable

IMAGE_PULL_FAILURES = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "RegistryUnavailable"}
)
CREATE_FAILURES = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError"})


@dataclass(frozen=True)
class Reading:
    """An observation and, for a pod still inside its unschedulable grace, when to look again (seconds)."""

    observation: Observation
    recheck_in: float | None = None


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    status = pod.get("status") or {}
    return list(status.get("initContainerStatuses") or []) + list(status.get("containerStatuses") or [])


def _condition(pod: dict[str, Any], kind: str) -> dict[str, Any]:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return condition
    return {}


def _exit(pod: dict[str, Any]) -> tuple[int | None, str]:
    for container in _containers(pod):
        terminated = (container.get("state") or {}).get("terminated") or (container.get("lastState") or {}).get(
            "terminated"
        )
        if terminated:
            reason = terminated.get("reason") or ""
            message = (terminated.get("message") or "").strip()
            return terminated.get("exitCode"), f"{reason}: {message}" if message else reason
    return None, ""


def observe(pod: dict[str, Any] | None, unschedulable_for: float = 0.0, unschedulable_grace: float = 30.0) -> Reading:
    """Map ``pod`` (None: deleted) to an observation.

    ``unschedulable_for`` is how long this adapter has seen the pod unschedulable (measured on the server's clock, so
    clock skew with the cluster does not matter).
    """
    if pod is None:
        return Reading(Observation(PlatformState.GONE, reason="the pod was deleted"))
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    name = meta.get("name", "?")
    ip, node = status.get("podIP"), (pod.get("spec") or {}).get("nodeName") or status.get("nominatedNodeName")
    phase = status.get("phase") or "Pending"
    if phase == "Succeeded":
        code, why = _exit(pod)
        return Reading(Observation(PlatformState.EXITED, ip, node, why or "pod succeeded", exit_code=code or 0))
    if phase == "Failed":
        code, why = _exit(pod)
        reason = f"pod {name} failed ({status.get('reason') or why or 'no reason given'})"
        if code is not None:
            reason += f" with exit code {code}"
        return _failed(KernelExited(reason, exit_code=code), ip, node, code)
    for container in _containers(pod):
        waiting = (container.get("state") or {}).get("waiting") or {}
        why, message = waiting.get("reason") or "", (waiting.get("message") or "").strip()
        if why in IMAGE_PULL_FAILURES:
            image = container.get("image") or "?"
            return _failed(ImagePullError(f"cannot pull image {image} ({why}: {message or 'no message'})"), ip, node)
        if why == "CrashLoopBackOff":
            code, exit_why = _exit(pod)
            error: LaunchError = KernelExited(
                f"the kernel container keeps crashing (CrashLoopBackOff; last exit {code}: {exit_why or 'unknown'})",
                exit_code=code,
            )
            return _failed(error, ip, node, code)
        if why in CREATE_FAILURES:
            error = LaunchError(
                f"the kernel container cannot be created ({why}: {message})",
                hint="Check the pod's env, volumes, secrets and security context",
            )
            return _failed(error, ip, node)
    scheduled = _condition(pod, "PodScheduled")
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        message = scheduled.get("message") or "no node fits the pod"
        if unschedulable_for >= unschedulable_grace:
            error = Unschedulable(
                f"pod {name} is unschedulable after {unschedulable_grace:g} s: {message}",
                hint="Lower KERNEL_CPUS/KERNEL_MEMORY/KERNEL_GPUS, check node selectors and tolerations, or add nodes",
            )
            return _failed(error, ip, node)
        reading = Observation(PlatformState.PENDING, ip, node, f"unschedulable: {message}")
        return Reading(reading, recheck_in=unschedulable_grace - unschedulable_for)
    if meta.get("deletionTimestamp"):
        return Reading(Observation(PlatformState.EXITED, ip, node, "the pod is being deleted"))
    if phase == "Running":
        running = any("running" in (c.get("state") or {}) for c in status.get("containerStatuses") or [])
        if ip and running:
            return Reading(Observation(PlatformState.RUNNING, ip, node, f"pod running on {node or '?'} at {ip}"))
        return Reading(Observation(PlatformState.STARTING, ip, node, "pod running, waiting for its address"))
    if scheduled.get("status") == "True":
        waiting = [((c.get("state") or {}).get("waiting") or {}).get("reason") for c in _containers(pod)]
        detail = next((w for w in waiting if w), "ContainerCreating")
        return Reading(Observation(PlatformState.PENDING, ip, node, f"scheduled on {node or '?'}: {detail}"))
    return Reading(Observation(PlatformState.PENDING, ip, node, "waiting to be scheduled"))


def is_unschedulable(pod: dict[str, Any] | None) -> bool:
    scheduled = _condition(pod or {}, "PodScheduled")
    return scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable"


def _failed(error: LaunchError, ip: str | None, node: str | None, code: int | None = None) -> Reading:
    return Reading(Observation(PlatformState.FAILED, ip, node, error.reason, exit_code=code, error=error))


def event_lines(events: list[dict[str, Any]], limit: int = 10) -> list[str]:
    """The pod's recent events as one line each, oldest first, for error reports."""

    def when(event: dict[str, Any]) -> str:
        return str(event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp") or "")

    lines = []
    for event in sorted(events, key=when)[-limit:]:
        message = " ".join(str(event.get("message") or "").split())
        lines.append(f"event {event.get('type', 'Normal')} {event.get('reason', '')}: {message}")
    return lines
