"""Unit tests of ``RemoteKernel`` with a scripted backend that the test drives by hand.

The library's :class:`~gateway_provisioners.testing.ScriptedBackend` stands in for a cluster: it returns a
:class:`BackendHandle` from ``submit`` and the test pushes the platform's observations (or the agent's stdout payload)
into that handle, exactly as an adapter's shared observer would. The whole success path with the real agent is in
tests/integration/test_kernel_local_backend.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from typing import Any

import pytest

from gateway_provisioners.core.backend import BackendHandle, Observation, PlatformState
from gateway_provisioners.core.control import ControlConnection
from gateway_provisioners.core.errors import (
    ConfigurationError,
    HandshakeRejected,
    ImagePullError,
    KernelExited,
    LaunchError,
    LaunchTimeout,
    NotAuthorized,
    ProtocolError,
    Unschedulable,
)
from gateway_provisioners.core.events import ProgressEvent
from gateway_provisioners.core.handshake import encode_token, new_token, seal_payload
from gateway_provisioners.core.kernel import RemoteKernel
from gateway_provisioners.core.launch import ConnectionMode, LaunchSpec
from gateway_provisioners.core.lifecycle import KernelPhase
from gateway_provisioners.testing import ScriptedBackend

KERNEL_ID = "0c6e2f52-kernel-under-test"
LOG_TAIL = ["agent: starting kernel", "kernel: ImportError: no module named foo"]
FAILED_PAYLOAD = {
    "status": "failed",
    "exit_code": 7,
    "reason": "the kernel exited during start-up with code 7",
    "log_tail": ["Traceback (most recent call last):", "ModuleNotFoundError: No module named 'ipykernel'"],
}


def scripted_backend(initial: PlatformState = PlatformState.PENDING) -> ScriptedBackend:
    """The library's scripted backend, answering ``log_tail`` with :data:`LOG_TAIL`."""
    return ScriptedBackend(initial=initial, log_lines=LOG_TAIL)


class Launch:
    """A ``RemoteKernel.start`` running in a task, with its backend and the progress events it emitted."""

    def __init__(self, backend: ScriptedBackend, spec: LaunchSpec, kernel: RemoteKernel | None = None) -> None:
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
        return await self.backend.next_handle()

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
    launch = Launch(scripted_backend(), make_spec(launch_timeout=60))
    handle = await launch.handle()
    error = ImagePullError("cannot pull image 'kernel-py:nope'", diagnostics=["Back-off pulling image"])
    handle.update(Observation(PlatformState.FAILED, reason="ImagePullBackOff", error=error))
    assert await launch.failure(ImagePullError) is error
    assert error.phase == "pending"
    assert launch.phases == ["submitted", "pending", "failed"]
    assert_cleaned_up(launch, handle, error)


async def test_platform_failure_without_a_typed_error() -> None:
    launch = Launch(scripted_backend(), make_spec())
    handle = await launch.handle()
    handle.update(Observation(PlatformState.FAILED, reason="application FAILED", diagnostics=["queue: default"]))
    error = await launch.failure(LaunchError)
    assert type(error) is LaunchError
    assert error.reason == "application FAILED"
    assert error.diagnostics == ["queue: default"]
    assert_cleaned_up(launch, handle, error)


async def test_platform_failure_already_known_at_submit() -> None:
    backend = scripted_backend()
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
    launch = Launch(scripted_backend(initial=PlatformState.STARTING), make_spec())
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
    launch = Launch(scripted_backend(initial=PlatformState.STARTING), make_spec())
    handle = await launch.handle()
    handle.update(Observation(PlatformState.EXITED, exit_code=1))
    error = await launch.failure(KernelExited)
    assert error.diagnostics == LOG_TAIL
    assert error.exit_code == 1 and "1" in error.reason
    assert LOG_TAIL[1] in error.details()


async def test_platform_phases_are_mirrored_into_the_lifecycle() -> None:
    launch = Launch(scripted_backend(), make_spec())
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
    launch = Launch(scripted_backend(initial=PlatformState.STARTING), make_spec(mode=ConnectionMode.STDOUT))
    handle = await launch.handle()
    handle.deliver_payload(seal_payload(launch.spec.token, KERNEL_ID, FAILED_PAYLOAD).encode())
    error = await launch.failure(KernelExited)
    assert error.exit_code == 7
    assert error.diagnostics == FAILED_PAYLOAD["log_tail"]
    assert error.reason == FAILED_PAYLOAD["reason"]
    assert_cleaned_up(launch, handle, error)


async def test_callback_failed_payload_is_kernel_exited() -> None:
    spec = make_spec(mode=ConnectionMode.CALLBACK, response_address="127.0.0.1:8877")
    launch = Launch(scripted_backend(initial=PlatformState.STARTING), spec)
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
    launch = Launch(scripted_backend(initial=PlatformState.STARTING), make_spec(mode=ConnectionMode.STDOUT))
    handle = await launch.handle()
    sealing_token = launch.spec.token if token == "own" else new_token()
    handle.deliver_payload(seal_payload(sealing_token, kernel_id, {"status": "ready", "ip": "1.2.3.4"}).encode())
    error = await launch.failure(HandshakeRejected)
    assert code in str(error)
    assert_cleaned_up(launch, handle, error)


async def test_garbage_on_stdout_is_handshake_rejected() -> None:
    launch = Launch(scripted_backend(initial=PlatformState.STARTING), make_spec())
    handle = await launch.handle()
    handle.deliver_payload(b"GP-CONNECTION-INFO but not an envelope")
    error = await launch.failure(HandshakeRejected)
    assert "malformed" in str(error)


# --- deadlines and configuration ------------------------------------------------------------------------------------


async def test_launch_timeout() -> None:
    launch = Launch(scripted_backend(), make_spec(launch_timeout=0.3))
    handle = await launch.handle()
    loop = asyncio.get_running_loop()
    began = loop.time()
    error = await launch.failure(LaunchTimeout, timeout=5)  # the deadline, not the test's own wait, ended it
    assert loop.time() - began >= 0.3
    assert "0.3 s" in error.reason
    assert error.diagnostics[0].startswith("platform state: pending")
    assert error.diagnostics[1:] == LOG_TAIL
    assert error.phase == "pending"
    assert_cleaned_up(launch, handle, error)


async def test_launch_timeout_ignores_unrelated_wakeups() -> None:
    launch = Launch(scripted_backend(), make_spec(launch_timeout=0.3))
    handle = await launch.handle()
    handle.update(Observation(PlatformState.PENDING, reason="still queued"))
    await launch.failure(LaunchTimeout)
    assert launch.phases == ["submitted", "pending", "failed"]


class UnresponsiveHost(ScriptedBackend):
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


class RootBackend(ScriptedBackend):
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
    backend = scripted_backend()
    kernel = RemoteKernel(backend, KERNEL_ID)
    with pytest.raises(ConfigurationError, match="response address"):
        await kernel.start(make_spec(mode=ConnectionMode.CALLBACK))
    assert backend.submitted == [] and backend.terminated == []
    assert kernel.phase is KernelPhase.NEW
    assert not kernel.broker.is_waiting(KERNEL_ID)


async def test_cancelled_start_leaves_nothing_running() -> None:
    launch = Launch(scripted_backend(initial=PlatformState.STARTING), make_spec())
    handle = await launch.handle()
    launch.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(launch.task, 5)
    assert launch.backend.terminated == [(handle, 0)]
    assert launch.kernel.phase is KernelPhase.FAILED
    assert "cancelled" in str(launch.kernel.lifecycle.error)
    assert not launch.kernel.broker.is_waiting(KERNEL_ID)


async def test_start_again_after_a_failed_start_starts_over() -> None:
    backend = scripted_backend(initial=PlatformState.STARTING)
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
    launch = Launch(scripted_backend(), make_spec())
    handle = await launch.handle()
    handle.update(Observation(PlatformState.FAILED, reason="nope"))
    await launch.failure(LaunchError)
    await launch.kernel.shutdown(grace=0)
    await launch.kernel.shutdown(grace=0)
    assert launch.kernel.phase is KernelPhase.FAILED
    assert launch.kernel.handle is None
    with pytest.raises(LaunchError, match="not running"):
        launch.kernel.serialize()


# --- a rogue process on the agent's port (issue 11) ---------------------------------------------------------------


async def rogue_agent_port(hello: bytes) -> tuple[asyncio.AbstractServer, int]:
    """A loopback server that answers every connection with ``hello`` as its first frame, as a squatter could."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(struct.pack(">I", len(hello)) + hello)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
            await reader.read()  # until the server gives up on us
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def saved_kernel(port: int) -> dict[str, Any]:
    return {
        "kernel_id": KERNEL_ID,
        "backend": "scripted",
        "handle": {"kernel_id": KERNEL_ID},
        "token": encode_token(new_token()),
        "agent_address": ["127.0.0.1", port],
        "connection_info": {"ip": "127.0.0.1", "shell_port": 1, "key": "k"},
        "spec": {"argv": ["python"], "launch_timeout": 5},
    }


ROGUE_HELLOS = {
    "nonce-is-a-number": {"gp": 2, "kernel_id": KERNEL_ID, "nonce": 123},
    "nonce-missing": {"gp": 2, "kernel_id": KERNEL_ID},
    "nonce-not-base64": {"gp": 2, "kernel_id": KERNEL_ID, "nonce": "!!"},
    "nonce-wrong-length": {"gp": 2, "kernel_id": KERNEL_ID, "nonce": "AAAA"},
    "not-an-object": [1, 2],
    "other-kernel": {"gp": 2, "kernel_id": "someone-else", "nonce": "AAAAAAAAAAAAAAAAAAAAAA=="},
    "other-version": {"gp": 3, "kernel_id": KERNEL_ID, "nonce": "AAAAAAAAAAAAAAAAAAAAAA=="},
}


@pytest.mark.parametrize(
    "hello",
    [json.dumps(hello).encode() for hello in ROGUE_HELLOS.values()] + [b"\xff not json", b"[" * 60_000],
    ids=[*ROGUE_HELLOS, "not-json", "deep-nesting"],
)
async def test_reattach_to_a_rogue_port_reports_the_kernel_dead(hello: bytes) -> None:
    server, port = await rogue_agent_port(hello)
    try:
        kernel = await asyncio.wait_for(RemoteKernel.restore(scripted_backend(), saved_kernel(port), timeout=3), 10)
    finally:
        server.close()
    assert kernel.phase is KernelPhase.FAILED
    assert kernel.poll() is not None
    assert isinstance(kernel.lifecycle.error, (ProtocolError, LaunchError)), repr(kernel.lifecycle.error)


async def test_fuzzed_agent_hellos_raise_only_typed_errors() -> None:
    from .mutate import mutations

    valid = json.dumps({"gp": 2, "kernel_id": KERNEL_ID, "nonce": "AAECAwQFBgcICQoLDA0ODw==", "agent_version": "0.1.0"})
    hellos = iter(mutations([valid.encode()], 150, seed=13))
    current: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hello = current[-1]
        writer.write(struct.pack(">I", len(hello)) + hello)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()  # then hang up: a valid-looking hello still never gets its ping answered

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for hello in hellos:
            current.append(hello)
            control = ControlConnection(KERNEL_ID, new_token())
            try:
                await control.open("127.0.0.1", port, timeout=2)
            except (ProtocolError, ConnectionError, asyncio.IncompleteReadError):
                pass  # typed: a protocol error, or the peer hung up
            else:
                raise AssertionError(f"a rogue hello was accepted: {hello[:200]!r}")
            finally:
                await control.close()
    finally:
        server.close()


async def test_a_kernels_output_cannot_forge_server_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    # A kernel user prints what they like; the agent's failed payload carries it into the server's log.
    forged = "2026-01-01 00:00:00 INFO kernel admin-kernel started as root"
    tail = [f"x\r\n{forged}", "\x1b[2J"]
    payload = {"status": "failed", "exit_code": 1, "reason": f"boom\n{forged}", "log_tail": tail}
    launch = Launch(scripted_backend(initial=PlatformState.STARTING), make_spec(mode=ConnectionMode.STDOUT))
    handle = await launch.handle()
    handle.deliver_payload(seal_payload(launch.spec.token, KERNEL_ID, payload).encode())
    error = await launch.failure(KernelExited)
    assert "\n" not in str(error)
    assert len(error.details().splitlines()) == 1 + len(payload["log_tail"])  # one line each, escaped
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert forged in logged  # still said, but never at the start of a line
    assert not [line for line in logged.splitlines() if line.startswith(forged)]
    assert "\x1b" not in logged
    (failure,) = [record.getMessage() for record in caplog.records if "failed:" in record.getMessage()]
    assert failure.count("\n  | ") == len(tail)  # the diagnostics stay one per line, each escaped


@pytest.mark.parametrize("changes", [{"agent_port": [1]}, {"agent_port": "x"}, {"shell_port": None}, {"key": 5}])
async def test_mistyped_ready_payload_is_handshake_rejected(changes: dict[str, Any]) -> None:
    ready = {"status": "ready", "ip": "127.0.0.1", "key": "k", "agent_port": 40000}
    ready.update({name: 40001 + i for i, name in enumerate(("shell_port", "iopub_port", "stdin_port", "hb_port"))})
    ready.update(control_port=40005, **changes)
    launch = Launch(scripted_backend(initial=PlatformState.STARTING), make_spec(mode=ConnectionMode.STDOUT))
    handle = await launch.handle()
    handle.deliver_payload(seal_payload(launch.spec.token, KERNEL_ID, ready).encode())
    error = await launch.failure(HandshakeRejected)
    assert "not usable" in str(error)
    assert_cleaned_up(launch, handle, error)


# --- reattaching a kernel that is gone: known at once, not at the deadline (issue 14) ------------------------------

REATTACH_TIMEOUT = 30.0  # restore's deadline in these tests; a gone kernel must be known well within it


class RestoringBackend(ScriptedBackend):
    """A backend whose restored handles start with the observation ``restored`` (what its observer read)."""

    def __init__(self, restored: PlatformState, *, ends_with_resource: bool = True) -> None:
        super().__init__()
        self.restored_state = restored
        self.kernel_ends_with_resource = ends_with_resource  # type: ignore[misc]
        self.restored: list[BackendHandle] = []

    async def restore(self, data: dict[str, Any]) -> BackendHandle:
        handle = await super().restore(data)
        handle.update(Observation(self.restored_state, reason=f"scripted {self.restored_state.value}", exit_code=3))
        self.restored.append(handle)
        return handle


async def silent_agent_port(on_connect: Any = None) -> tuple[asyncio.AbstractServer, int, list[int]]:
    """A port that accepts connections and never says hello (an agent's host that stopped answering): a connection
    attempt to it waits for its whole timeout. Returns the server, its port and a list counting connections."""
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        if on_connect is not None:
            on_connect()
        with contextlib.suppress(ConnectionError):
            await reader.read()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], connections


async def restore_within(backend: ScriptedBackend, port: int, share: float = 1 / 3) -> RemoteKernel:
    """``RemoteKernel.restore`` with :data:`REATTACH_TIMEOUT`, which must return within ``share`` of it."""
    restoring = RemoteKernel.restore(backend, saved_kernel(port), timeout=REATTACH_TIMEOUT)
    return await asyncio.wait_for(restoring, REATTACH_TIMEOUT * share)


@pytest.mark.parametrize("state", [PlatformState.EXITED, PlatformState.FAILED, PlatformState.GONE])
async def test_reattach_fails_at_once_when_the_platform_says_the_kernel_is_over(state: PlatformState) -> None:
    server, port, connections = await silent_agent_port()
    try:
        kernel = await restore_within(RestoringBackend(state), port)
    finally:
        server.close()
    assert kernel.phase is KernelPhase.FAILED and kernel.poll() is not None
    error = kernel.lifecycle.error
    assert isinstance(error, KernelExited) and f"resource is {state.value}" in str(error), repr(error)
    assert error.exit_code == 3
    assert connections == [], "a kernel the platform says is over must not be waited for at its agent's address"


async def test_reattach_fails_at_once_when_the_platform_reports_the_end_while_connecting() -> None:
    backend = RestoringBackend(PlatformState.RUNNING)

    def platform_ends_it() -> None:  # the observer's next reading arrives while the connection waits for a hello
        backend.restored[0].update(Observation(PlatformState.GONE, reason="pod deleted"))

    server, port, connections = await silent_agent_port(on_connect=platform_ends_it)
    try:
        kernel = await restore_within(backend, port)
    finally:
        server.close()
    assert connections == [1]
    assert kernel.phase is KernelPhase.FAILED
    assert isinstance(kernel.lifecycle.error, KernelExited) and "pod deleted" in str(kernel.lifecycle.error)
    assert kernel._control is None, "the abandoned connection attempt must not be left open"


async def test_reattach_fails_at_once_when_nothing_listens_at_the_agents_address() -> None:
    import socket

    with socket.socket() as bound:  # bound, not listening: connections are refused, and the port stays ours
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        kernel = await restore_within(RestoringBackend(PlatformState.RUNNING, ends_with_resource=False), port)
    assert kernel.phase is KernelPhase.FAILED
    error = kernel.lifecycle.error
    assert isinstance(error, KernelExited) and "nothing listens" in str(error), repr(error)


async def test_reattach_keeps_trying_where_the_agent_outlives_what_the_platform_observes() -> None:
    """An SSH session (say) that ended says nothing about its detached agent: only the agent's address tells."""
    server, port, connections = await silent_agent_port()
    try:
        backend = RestoringBackend(PlatformState.EXITED, ends_with_resource=False)
        kernel = await asyncio.wait_for(RemoteKernel.restore(backend, saved_kernel(port), timeout=1), 10)
    finally:
        server.close()
    assert connections, "the agent's address must be tried"
    assert kernel.phase is KernelPhase.FAILED
    assert not isinstance(kernel.lifecycle.error, KernelExited), repr(kernel.lifecycle.error)
