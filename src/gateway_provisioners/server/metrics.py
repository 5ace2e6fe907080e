"""Prometheus metrics of remote kernels, served by jupyter_server's own ``/metrics`` (prometheus_client's registry).

Labels stay few and bounded: the backend (``local``, ``ssh``, ``docker`` ...), the phase, the kernel spec's name and
the failure's error class; never a kernel id or a user name.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LAUNCHES = Counter(
    "gateway_provisioners_kernel_launches_total", "Kernel launches started, by backend.", ["backend", "kernel_name"]
)
LAUNCH_SECONDS = Histogram(
    "gateway_provisioners_kernel_launch_duration_seconds",
    "Seconds from a launch's start until the kernel was ready, by backend.",
    ["backend"],
    buckets=(0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120, 300, float("inf")),
)
FAILURES = Counter(
    "gateway_provisioners_kernel_failures_total",
    "Kernel starts that failed, by backend and reason (the error's class).",
    ["backend", "reason"],
)
KERNELS = Gauge(
    "gateway_provisioners_kernels", "Kernels this server manages, by backend and lifecycle phase.", ["backend", "phase"]
)
REATTACHED = Counter(
    "gateway_provisioners_kernels_reattached_total",
    "Stored kernels reattached at server start-up, by backend.",
    ["backend"],
)
ORPHANED = Counter(
    "gateway_provisioners_kernels_orphaned_total",
    "Stored kernels found gone at server start-up (record deleted, resources removed), by backend.",
    ["backend"],
)


class PhaseGauge:
    """Keeps :data:`KERNELS` right: each kernel counts once, in its latest phase, until it reaches a final phase."""

    def __init__(self) -> None:
        self._phase: dict[str, tuple[str, str]] = {}  # kernel id -> (backend, phase)

    def move(self, kernel_id: str, backend: str, phase: str, final: bool) -> None:
        old = self._phase.pop(kernel_id, None)
        if old is not None:
            KERNELS.labels(*old).dec()
        if not final:
            self._phase[kernel_id] = (backend, phase)
            KERNELS.labels(backend, phase).inc()

    def forget(self, kernel_id: str) -> None:
        old = self._phase.pop(kernel_id, None)
        if old is not None:
            KERNELS.labels(*old).dec()
