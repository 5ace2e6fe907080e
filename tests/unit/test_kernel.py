"""Unit tests of ``RemoteKernel`` with an in-test fake backend that the test drives by hand.

The fake stands in for a cluster: it returns a :class:`BackendHandle` from ``submit`` and the test pushes the
platform's observations (or the agent's stdout payload) into that handle, exactly as an adapter's shared observer
would. One further test runs the whole success path with the real agent through the local backend.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

from gateway_provisioners.core.backend import Backend, BackendHandle, Observation, PlatformState
from gateway_provisioners.core.errors import (
    ConfigurationError,
    HandshakeRejected,
    ImagePullError,
    KernelExited,
    LaunchError,
    LaunchTimeout,
    NotAuthorized,
    Unschedulable,
)
from gateway_provisioners.core.events import ProgressEvent
from gateway_provisioners.core.handshake import new_token, seal_payload
from gateway_provisioners.core.kernel import RemoteKernel
from gateway_provisioners.core.launch import ConnectionMode, LaunchSpec
from gateway_provisioners.core.lifecycle import KernelPhase

from ..conftest import AS_ROOT

KERNEL_ID = "0c6e2f52-kernel-under-test"
LOG_TAIL = ["agent: starting kernel", "kernel: ImportError: no module named foo"]
FAILED_PAYLOAD = {
    "status": "failed",
    "exit_code": 7,
    "reason": "the kernel exited during start-up with code 7",
    "log_tail": ["Traceback (most recent call last):", "ModuleNotFoundError: No module named 'ipykernel'"],
}


class FakeBackend(Backend):
    """A backend whose platform is the test: ``submit`` hands the new handle to the test through ``handles``."""

    name: ClassVar[str] = "fake"
    modes: ClassVar[tuple[ConnectionMode, ...]] = (ConnectionMode.STDOUT, ConnectionMode.CALLBACK)

    def __init__(self, initial: PlatformState = PlatformState.PENDING) -> None:
        self.initial = initial
        self.handles: asyncio.Queue[BackendHandle] = asyncio.Queue()
        self.submitted: list[LaunchSpec] = []
        self.terminated: list[tuple[BackendHandle, float]] = []
        self.signals: list[int] = []

    async def submit(self, spec: LaunchSpec) -> BackendHandle:
        self.submitted.append(spec)
        handle = BackendHandle(spec.kernel_id, data={"launch": len(self.submitted)})
        handle.update(Observation(self.initial, reason=f"fake {self.initial.value}"))
        self.handles.put_nowait(handle)
        return handle

    async def terminate(self, handle: BackendHandle, grace: float = 0.0) -> None:
        self.terminated.append((handle, grace))
        handle.update(Observation(PlatformState.GONE, reason="terminated"))

    async def signal(self, handle: BackendHandle, signum: int) -> None:
        self.signals.append(signum)

    async def log_tail(self, handle: BackendHandle, lines: int = 20) -> list[str]:
        return list(LOG_TAIL)

    def serialize(self, handle: BackendHandle) -> dict[str, Any]:
        return dict(handle.data)

    async def restore(self, data: dict[str, Any]) -> BackendHandle:
        return BackendHandle(KERNEL_ID, data=dict(data))


class Launch:
    """A ``RemoteKernel.start`` running in a task, with its backend and the progress events it emitted."""

    def __init__(self, backend: FakeBackend, spec: LaunchSpec, kernel: RemoteKernel | None = None) -> None:
        self.backend, self.spec = backend, spec
        self.kernel = kernel or RemoteKernel(backend, spec.kernel_id)
        self.events: list[ProgressEvent] = []
        self.kernel.lifecycle.events.subscribe(self.events.append)
        self.task = asyncio.ensure_future(self.kernel.start(spec))

    def reached(self, phase: KernelPhase) -> asyncio.Future[ProgressEvent]:
        """A future resolved by the progress event that enters ``phase``."""
        future: asyncio.Future[ProgressEvent] = asyncio.get_running_loop().create_future()

        def listener(event: ProgressEvent) -> None:
            if event.phase == phase.value and not future.done():
                future.set_result(event)

        self.kernel.lifecycle.events.subscribe(listener)
        return future

    async def handle(self) -> BackendHandle:
        return await asyncio.wait_for(self.backend.handles.get(), 5)

    async def failure(self, expected: type[BaseException], timeout: float = 5) -> Any:
        with pytest.raises(expected) as caught:
            await asyncio.wait_for(self.task, timeout)
        return caught.value

    @property
    def phases(self) -> list[str]:
        return [event.phase for event in self.events]


def make_spec(**kwargs: Any) -> LaunchSpec:
    kwargs.setdefault("launch_timeout", 30.0)
    return LaunchSpec(KERNEL_ID, ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"], **kwargs)


def assert_cleaned_up(launch: Launch, handle: BackendHandle, error: BaseException) -> None:
    """After a failed start: nothing left running, the lifecycle FAILED with this error, no launch waiting."""
    assert launch.backend.terminated == [(handle, 0)]
    assert launch.kernel.phase is KernelPhase.FAILED
    assert launch.kernel.lifecycle.error is error
    assert launch.phases[-1] == "failed" and launch.events[-1].error is error
    assert not launch.kernel.broker.is_waiting(KERNEL_ID)
    assert launch.kernel.poll() is not None


# --- failures reported by the platform ------------------------------------------------------------------------------


async def test_platform_failure_fails_start_at_once_with_its_error() -> None:
    launch = Launch(FakeBackend(), make_spec(launch_timeout=60))
    handle = await launch.handle()
    error = ImagePullError("cannot pull image 'kernel-py:nope'", diagnostics=["Back-off pulling image"])
    handle.update(Observation(PlatformState.FAILED, reason="ImagePullBackOff", error=error))
    assert await launch.failure(ImagePullError) is error
    assert error.phase == "pending"
    assert launch.phases == ["submitted", "pending", "failed"]
    assert_cleaned_up(launch, handle, error)


async def test_platform_failure_without_a_typed_error() -> None:
    launch = Launch(FakeBackend(), make_spec())
    handle = await launch.handle()
    handle.update(Observation(PlatformState.FAILED, reason="application FAILED", diagnostics=["queue: default"]))
    error = await launch.failure(LaunchError)
    assert type(error) is LaunchError
    assert error.reason == "application FAILED"
    assert error.diagnostics == ["queue: default"]
    assert_cleaned_up(launch, handle, error)


async def test_platform_failure_already_known_at_submit() -> None:
    backend = FakeBackend()
    kernel = RemoteKernel(backend, KERNEL_ID)
    error = Unschedulable("0/3 nodes are available: insufficient memory")

    async def failing_submit(spec: LaunchSpec) -> BackendHandle:
        handle = BackendHandle(spec.kernel_id)
        handle.update(Observation(PlatformState.FAILED, error=error))
        backend.handles.put_nowait(handle)
        return handle

    backend.submit = failing_submit  # type: ignore[method-assign]
    with pytest.raises(Unschedulable):
        await asyncio.wait_for(kernel.start(make_spec()), 5)
    assert error.phase == "submitted"
    assert len(backend.terminated) == 1 and kernel.phase is KernelPhase.FAILED


@pytest.mark.parametrize("state", [PlatformState.EXITED, PlatformState.GONE])
async def test_agent_ending_during_start_is_kernel_exited_with_diagnostics(state: PlatformState) -> None:
    launch = Launch(FakeBackend(initial=PlatformState.STARTING), make_spec())
    handle = await launch.handle()
    handle.update(Observation(state, exit_code=2, reason="agent exit code 2", diagnostics=["Traceback", "SyntaxError"]))
    error = await launch.failure(KernelExited)
    assert error.exit_code == 2
    assert error.diagnostics == ["Traceback", "SyntaxError"]
    assert "agent exit code 2" in error.reason
    assert error.phase == "starting"
    assert launch.phases == ["submitted", "starting", "failed"]
    assert_cleaned_up(launch, handle, error)


async def test_agent_ending_without_diagnostics_reports_the_log_tail() -> None:
    launch = Launch(FakeBackend(initial=PlatformState.STARTING), make_spec())
    handle = await launch.handle()
    handle.update(Observation(PlatformState.EXITED, exit_code=1))
    error = await launch.failure(KernelExited)
    assert error.diagnostics == LOG_TAIL
    assert error.exit_code == 1 and "1" in error.reason
    assert LOG_TAIL[1] in error.details()


async def test_platform_phases_are_mirrored_into_the_lifecycle() -> None:
    launch = Launch(FakeBackend(), make_spec())
    handle = await launch.handle()
    starting = launch.reached(KernelPhase.STARTING)
    handle.update(Observation(PlatformState.STARTING, reason="container started"))
    assert (await asyncio.wait_for(starting, 5)).message == "container started"
    handle.update(Observation(PlatformState.RUNNING))  # still STARTING for the lifecycle: no payload yet
    handle.update(Observation(PlatformState.EXITED, exit_code=0))
    await launch.failure(KernelExited)
    assert launch.phases == ["submitted", "pending", "starting", "failed"]


# --- failures reported by the agent ---------------------------------------------------------------------------------


async def test_stdout_failed_payload_is_kernel_exited_with_exit_code_and_log_tail() -> None:
    launch = Launch(FakeBackend(initial=PlatformState.STARTING), make_spec(mode=ConnectionMode.STDOUT))
    handle = await launch.handle()
    handle.deliver_payload(seal_payload(launch.spec.token, KERNEL_ID, FAILED_PAYLOAD).encode())
    error = await launch.failure(KernelExited)
    assert error.exit_code == 7
    assert error.diagnostics == FAILED_PAYLOAD["log_tail"]
    assert error.reason == FAILED_PAYLOAD["reason"]
    assert_cleaned_up(launch, handle, error)


async def test_callback_failed_payload_is_kernel_exited() -> None:
    spec = make_spec(mode=ConnectionMode.CALLBACK, response_address="127.0.0.1:8877")
    launch = Launch(FakeBackend(initial=PlatformState.STARTING), spec)
    handle = await launch.handle()
    payload = {"status": "failed", "exit_code": 3, "log_tail": ["boom"]}
    assert launch.kernel.broker.accept(seal_payload(spec.token, KERNEL_ID, payload), peer="test") == ("accepted", "")
    error = await launch.failure(KernelExited)
    assert error.exit_code == 3
    assert error.diagnostics == ["boom"]
    assert "code 3" in error.reason
    assert_cleaned_up(launch, handle, error)


@pytest.mark.parametrize(
    ("kernel_id", "token", "code"),
    [(KERNEL_ID, None, "bad-seal"), ("another-kernel", "own", "unknown-kernel")],
    ids=["wrong-token", "another-kernel"],
)
async def test_rejected_stdout_payload_is_handshake_rejected(kernel_id: str, token: str | None, code: str) -> None:
    launch = Launch(FakeBackend(initial=PlatformState.STARTING), make_spec(mode=ConnectionMode.STDOUT))
    handle = await launch.handle()
    sealing_token = launch.spec.token if token == "own" else new_token()
    handle.deliver_payload(seal_payload(sealing_token, kernel_id, {"status": "ready", "ip": "1.2.3.4"}).encode())
    error = await launch.failure(HandshakeRejected)
    assert code in str(error)
    assert_cleaned_up(launch, handle, error)


async def test_garbage_on_stdout_is_handshake_rejected() -> None:
    launch = Launch(FakeBackend(initial=PlatformState.STARTING), make_spec())
    handle = await launch.handle()
    handle.deliver_payload(b"GP-CONNECTION-INFO but not an envelope")
    error = await launch.failure(HandshakeRejected)
    assert "malformed" in str(error)


# --- deadlines and configuration ------------------------------------------------------------------------------------


async def test_launch_timeout() -> None:
    launch = Launch(FakeBackend(), make_spec(launch_timeout=0.3))
    handle = await launch.handle()
    loop = asyncio.get_running_loop()
    began = loop.time()
    error = await launch.failure(LaunchTimeout, timeout=5)
    assert loop.time() - began < 3
    assert "0.3 s" in error.reason
    assert error.diagnostics[0].startswith("platform state: pending")
    assert error.diagnostics[1:] == LOG_TAIL
    assert error.phase == "pending"
    assert_cleaned_up(launch, handle, error)


async def test_launch_timeout_ignores_unrelated_wakeups() -> None:
    launch = Launch(FakeBackend(), make_spec(launch_timeout=0.3))
    handle = await launch.handle()
    handle.update(Observation(PlatformState.PENDING, reason="still queued"))
    await launch.failure(LaunchTimeout)
    assert launch.phases == ["submitted", "pending", "failed"]


class UnresponsiveHost(FakeBackend):
    """A platform that stopped answering: its log tail and its clean-up wait until the test lets them go."""

    def __init__(self) -> None:
        super().__init__()
        self.cleanup_started = asyncio.Event()
        self.cleanup_done = asyncio.Event()
        self.answers = asyncio.Event()

    async def log_tail(self, handle: BackendHandle, lines: int = 20) -> list[str]:
        await self.answers.wait()
        return []

    async def terminate(self, handle: BackendHandle, grace: float = 0.0) -> None:
        self.cleanup_started.set()
        await self.answers.wait()
        self.cleanup_done.set()


async def test_launch_timeout_is_not_extended_by_clean_up_on_an_unresponsive_host() -> None:
    backend = UnresponsiveHost()
    launch = Launch(backend, make_spec(launch_timeout=1.0))
    loop = asyncio.get_running_loop()
    began = loop.time()
    await launch.handle()
    error = await launch.failure(LaunchTimeout, timeout=10)
    assert loop.time() - began <= 1.0 + 1.0, f"the error came {loop.time() - began:.2f} s after the launch"
    assert error.diagnostics[0].startswith("platform state: pending")
    assert backend.cleanup_started.is_set(), "the clean-up must have begun (it goes on in the background)"
    assert launch.kernel.phase is KernelPhase.FAILED
    backend.answers.set()  # the host answers again: the clean-up that went on in the background completes
    await asyncio.wait_for(backend.cleanup_done.wait(), 5)


class RootBackend(FakeBackend):
    def kernel_uid(self, spec: LaunchSpec) -> int | None:
        return 0  # e.g. the local backend of a server that runs as root


async def test_a_kernel_that_would_run_as_root_is_refused_whatever_name_is_claimed() -> None:
    backend = RootBackend()
    kernel = RemoteKernel(backend, KERNEL_ID)
    with pytest.raises(NotAuthorized, match=r"uid 0.*allow_root_kernels \(GP_ALLOW_ROOT_KERNELS\)") as caught:
        await kernel.start(make_spec(username="alice"))
    assert "\n" not in str(caught.value)
    assert backend.submitted == [], "nothing may start"


async def test_root_kernels_start_when_the_operator_allows_them() -> None:
    launch = Launch(RootBackend(), make_spec(allow_root=True, launch_timeout=0.3))
    await launch.handle()
    await launch.failure(LaunchTimeout)  # got as far as the platform: the uid check let it through
    assert launch.backend.submitted[0].agent_params()["allow_root"] is True


async def test_callback_mode_needs_a_response_address() -> None:
    backend = FakeBackend()
    kernel = RemoteKernel(backend, KERNEL_ID)
    with pytest.raises(ConfigurationError, match="response address"):
        await kernel.start(make_spec(mode=ConnectionMode.CALLBACK))
    assert backend.submitted == [] and backend.terminated == []
    assert kernel.phase is KernelPhase.NEW
    assert not kernel.broker.is_waiting(KERNEL_ID)


async def test_cancelled_start_leaves_nothing_running() -> None:
    launch = Launch(FakeBackend(initial=PlatformState.STARTING), make_spec())
    handle = await launch.handle()
    launch.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(launch.task, 5)
    assert launch.backend.terminated == [(handle, 0)]
    assert launch.kernel.phase is KernelPhase.FAILED
    assert "cancelled" in str(launch.kernel.lifecycle.error)
    assert not launch.kernel.broker.is_waiting(KERNEL_ID)


async def test_start_again_after_a_failed_start_starts_over() -> None:
    backend = FakeBackend(initial=PlatformState.STARTING)
    first = Launch(backend, make_spec())
    (await first.handle()).update(Observation(PlatformState.EXITED, exit_code=1))
    await first.failure(KernelExited)
    second = Launch(backend, make_spec(), kernel=first.kernel)
    handle = await second.handle()
    assert second.kernel.phase is not KernelPhase.FAILED
    handle.update(Observation(PlatformState.EXITED, exit_code=4))
    error = await second.failure(KernelExited)
    assert error.exit_code == 4
    assert [(e.previous, e.phase) for e in second.events] == [
        ("new", "submitted"),
        ("submitted", "starting"),
        ("starting", "failed"),
    ]
    assert len(backend.submitted) == 2


async def test_shutdown_after_a_failed_start_is_safe() -> None:
    launch = Launch(FakeBackend(), make_spec())
    handle = await launch.handle()
    handle.update(Observation(PlatformState.FAILED, reason="nope"))
    await launch.failure(LaunchError)
    await launch.kernel.shutdown(grace=0)
    await launch.kernel.shutdown(grace=0)
    assert launch.kernel.phase is KernelPhase.FAILED
    assert launch.kernel.handle is None
    with pytest.raises(LaunchError, match="not running"):
        launch.kernel.serialize()


# --- the whole success path with the real agent ---------------------------------------------------------------------


def ipykernel_spec(kernel_id: str, home: Path) -> LaunchSpec:
    """A real ipykernel of this interpreter, on loopback."""
    return LaunchSpec(
        kernel_id,
        [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", str(home))},
        kernel_ip="127.0.0.1",
        launch_timeout=60,
        allow_root=AS_ROOT,
    )


@pytest.mark.integration
async def test_real_agent_through_the_local_backend(tmp_path: Path) -> None:
    from gateway_provisioners.adapters.local import LocalBackend

    backend = LocalBackend(log_dir=str(tmp_path))
    kernel = RemoteKernel(backend, "local-success")
    spec = ipykernel_spec("local-success", tmp_path)
    try:
        info = await kernel.start(spec)
        assert kernel.phase is KernelPhase.READY
        assert info["ip"] == "127.0.0.1" and info["transport"] == "tcp" and info["key"]
        ports = [info[name] for name in ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port")]
        assert len(set(ports)) == 5
        assert kernel.poll() is None and kernel.agent_alive
        first_pid = kernel.kernel_pid
        assert first_pid and os.getpgid(first_pid) == first_pid  # the kernel leads its own process group

        await kernel.signal(0)
        await kernel.interrupt()  # ipykernel ignores SIGINT while idle
        assert kernel.poll() is None and kernel.phase is KernelPhase.READY

        await kernel.kill_kernel()
        assert await asyncio.wait_for(kernel.wait(), 30) == -signal.SIGKILL
        assert kernel.phase is KernelPhase.EXITED and kernel.agent_alive

        assert await kernel.restart(grace=1) == info  # same ports, same key
        assert kernel.phase is KernelPhase.READY and kernel.poll() is None
        assert kernel.kernel_pid not in (None, first_pid)
    finally:
        await kernel.shutdown(grace=1)
        await backend.close()
    assert kernel.phase is KernelPhase.TERMINATED
    assert kernel.poll() is not None
    assert kernel.handle is None


@pytest.mark.integration
@pytest.mark.parametrize("ends_with_resource", [True, False])
async def test_platform_ending_the_resource_ends_a_ready_kernel(tmp_path: Path, ends_with_resource: bool) -> None:
    from gateway_provisioners.adapters.local import LocalBackend

    class Backend(LocalBackend):
        kernel_ends_with_resource = ends_with_resource

    backend = Backend(log_dir=str(tmp_path))
    kernel = RemoteKernel(backend, "platform-ends")
    spec = ipykernel_spec("platform-ends", tmp_path)
    await kernel.start(spec)
    handle = kernel.handle
    assert handle is not None
    try:
        # The platform says the resource is gone (a service removed from outside) while the agent still answers.
        handle.update(Observation(PlatformState.GONE, reason="service removed", exit_code=137))
        if ends_with_resource:
            assert kernel.phase is KernelPhase.FAILED and kernel.poll() == 137
            assert not kernel.agent_alive, "a restart must not reuse an agent whose resource is going away"
            assert "service removed" in str(kernel.lifecycle.error)
        else:
            assert kernel.phase is KernelPhase.READY and kernel.poll() is None and kernel.agent_alive
    finally:
        await kernel.shutdown(grace=1)  # the agent still ends on the shutdown request
        while handle.observation.state is not PlatformState.EXITED:  # the backend sees the agent process end
            await asyncio.wait_for(handle.wait_changed(), 10)
        await backend.close()
    assert kernel.handle is None
