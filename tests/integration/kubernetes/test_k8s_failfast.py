"""Pod states a real cluster cannot be made to show on demand fail the launch at once, with their reason, the pod's
events and its last log lines: CrashLoopBackOff (the kubelet's back-off takes minutes to reach it) and a pod that the
platform itself marks Failed. Client values are checked before anything is created (no cluster involved). Image
pulls, kernels that exit at start and unschedulable pods are tested on the real cluster (real/)."""

from __future__ import annotations

import time

import pytest
from jupyter_client.manager import AsyncKernelManager

from gateway_provisioners.core.errors import KernelExited, LaunchError, NotAuthorized

from .conftest import NAMESPACE
from .emulator import KubeEmulator
from .kubelet import Kubelet

pytestmark = pytest.mark.integration

TIMEOUT = 60  # the launch deadline; every failure below must come long before it
# Fail-fast means "not waiting for the deadline": a quarter of it leaves room for a loaded machine (they take about
# 1 s here) and still tells a fail-fast path from a timeout.
FAIL_FAST = TIMEOUT / 4


async def start_failing(k8s_spec, image: str, **config) -> tuple[LaunchError, float, str]:  # type: ignore[no-untyped-def]
    km = AsyncKernelManager(kernel_name=k8s_spec(image_name=image, launch_timeout=TIMEOUT, **config))
    started = time.monotonic()
    with pytest.raises(LaunchError) as info:
        await km.start_kernel()
    return info.value, time.monotonic() - started, f"kernel-{km.kernel_id}"


async def test_crash_loop(kube: KubeEmulator, kubelet: Kubelet, k8s_spec) -> None:
    error, elapsed, pod = await start_failing(k8s_spec, "gpt/kernel:crash")
    assert isinstance(error, KernelExited) and "CrashLoopBackOff" in error.reason
    assert any("ModuleNotFoundError" in line for line in error.diagnostics), error.diagnostics
    assert any("BackOff" in line for line in error.diagnostics)
    assert elapsed < FAIL_FAST, f"reported after {elapsed:.1f} s"
    assert kube.get("pods", NAMESPACE, pod) is None


async def test_pod_failed(kube: KubeEmulator, kubelet: Kubelet, k8s_spec) -> None:
    error, elapsed, _ = await start_failing(k8s_spec, "gpt/kernel:fail")
    assert isinstance(error, KernelExited) and error.exit_code == 2
    assert "failed" in error.reason and "exit code 2" in error.reason
    assert any("cannot start the kernel" in line for line in error.diagnostics), error.diagnostics
    assert elapsed < FAIL_FAST, f"reported after {elapsed:.1f} s"


async def test_client_values_are_checked_before_anything_is_created(kube: KubeEmulator, k8s_spec, monkeypatch) -> None:
    name = k8s_spec()
    mark = kube.mark()
    for variable, value, error in [
        ("KERNEL_NAMESPACE", "kube-system", NotAuthorized),
        ("KERNEL_CPUS", "1; rm -rf /", ValueError),
        ("KERNEL_MEMORY", "2Gi\nprivileged: true", ValueError),
        ("KERNEL_UID", "0", NotAuthorized),
        ("KERNEL_UID", "000", NotAuthorized),
        ("KERNEL_SERVICE_ACCOUNT_NAME", "cluster-admin", NotAuthorized),
        ("KERNEL_IMAGE", "attacker/miner:latest", NotAuthorized),  # allowed_images is closed by default
        ("KERNEL_VOLUMES", '[{"name": "host", "hostPath": {"path": "/"}}]', NotAuthorized),
    ]:
        monkeypatch.setenv(variable, value)
        km = AsyncKernelManager(kernel_name=name)
        with pytest.raises(error) as info:
            await km.start_kernel()
        assert variable in str(info.value) or "allowed" in str(info.value), str(info.value)
        monkeypatch.delenv(variable)
    assert [r for r in kube.requests_since(mark) if r.method != "GET"] == []
