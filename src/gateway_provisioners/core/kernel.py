"""One remote kernel: launch it on a backend, learn its connection info, control it, end it.

:class:`RemoteKernel` is the core's public face. The jupyter_client facades are thin wrappers around it, and a custom
gateway can use it directly (``docs/embedding.md``)::

    kernel = RemoteKernel(LocalBackend(), kernel_id)
    info = await kernel.start(LaunchSpec(kernel_id, argv))   # connection info: ip, ports, key
    await kernel.interrupt(); await kernel.restart(); await kernel.shutdown()

Everything here waits on events (handle updates, control-channel events, the broker's future); nothing polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import Any

from .backend import Backend, BackendHandle, Observation, PlatformState
from .broker import ConnectionBroker
from .control import ControlChannelClosed, ControlConnection
from .errors import (
    ConfigurationError,
    HandshakeRejected,
    KernelExited,
    LaunchError,
    LaunchTimeout,
    ProtocolError,
)
from .events import EventLog
from .handshake import Reply, decode_token, encode_token, new_token
from .launch import ConnectionMode, LaunchSpec, check_kernel_uid
from .lifecycle import KernelLifecycle, KernelPhase
from .logsafe import safe_logger
from .tasks import BackgroundTasks

log = safe_logger("gateway_provisioners.kernel")

#: After a launch timed out, the error is raised within this many seconds: diagnostics and clean-up that wait on a
#: host that stopped answering go on in the background (the agent's watchdog ends what they cannot reach).
CLEANUP_AFTER_TIMEOUT = 0.5
_cleanups = BackgroundTasks(log, "clean-up after a failed launch")  # still running after their launch failed

#: Seconds a restart's reply may take beyond the kernel's grace and ready timeout, which the agent spends in full.
RESTART_REPLY_MARGIN = 5.0
#: How long :meth:`RemoteKernel.restore` tries to reach a restored kernel's agent by default. A kernel known to be gone
#: (its platform resource is over, or nothing listens at its agent's address) is reported at once instead.
REATTACH_TIMEOUT = 10.0

CONNECTION_KEYS = (
    "ip", "transport", "signature_scheme", "kernel_name", "key",
    "shell_port", "iopub_port", "stdin_port", "hb_port", "control_port",
)  # fmt: skip
_PLATFORM_PHASES = {
    PlatformState.PENDING: KernelPhase.PENDING,
    PlatformState.STARTING: KernelPhase.STARTING,
    PlatformState.RUNNING: KernelPhase.STARTING,
}


class RemoteKernel:
    """The lifecycle of one kernel on one backend.

    Parameters
    ----------
    backend:
        Where the kernel runs.
    kernel_id:
        The kernel's id (jupyter_client's, or any unique string).
    broker:
        Where callback- and stdout-mode payloads are matched to launches; one per server process is typical.
    events:
        The progress-event log; subscribe to it for per-phase progress and timings.
    """

    def __init__(
        self,
        backend: Backend,
        kernel_id: str,
        *,
        broker: ConnectionBroker | None = None,
        events: EventLog | None = None,
    ) -> None:
        self.backend = backend
        self.kernel_id = kernel_id
        #: The id the agent and the platform know the kernel by: ``kernel_id`` unless the kernel was launched for a
        #: pool under an id of its own and then claimed (:meth:`claim_as`). Control-channel keys are bound to it.
        self.launch_id = kernel_id
        self.broker = broker or ConnectionBroker()
        self.lifecycle = KernelLifecycle(kernel_id, events)
        self.handle: BackendHandle | None = None
        self.spec: LaunchSpec | None = None
        self.connection_info: dict[str, Any] = {}
        self.exit_code: int | None = None
        self.agent_address: tuple[str, int] | None = None
        self.kernel_pid: int | None = None
        self._token: bytes | None = None
        self._control: ControlConnection | None = None
        self._exit_diagnostics: list[str] = []
        self._platform_ended = False  # the platform ended the agent's resource: no restart in place

    # --- state ------------------------------------------------------------------------------------------------------

    @property
    def phase(self) -> KernelPhase:
        return self.lifecycle.phase

    @property
    def agent_alive(self) -> bool:
        """The agent still answers, so the kernel can be restarted in place."""
        return not self._platform_ended and self._control is not None and self._control.is_open

    def poll(self) -> int | None:
        """``None`` while the kernel process runs (or is starting), else its exit code. A cache read."""
        if self.phase in (KernelPhase.EXITED, KernelPhase.TERMINATED, KernelPhase.FAILED):
            return self.exit_code if self.exit_code is not None else 1
        return None

    async def wait(self) -> int:
        """Wait until the kernel process is not running; returns :meth:`poll`'s exit code."""
        while (code := self.poll()) is None:
            await self.lifecycle.wait_changed()
        return code

    # --- start ------------------------------------------------------------------------------------------------------

    async def start(self, spec: LaunchSpec) -> dict[str, Any]:
        """Launch the kernel and return its connection info (``key`` as text), within ``spec.launch_timeout``.

        Raises a :class:`LaunchError` subclass with reason, diagnostics and hint; on failure nothing is left running
        (after a timeout, clean-up that waits on an unresponsive platform finishes in the background).
        """
        if spec.mode not in self.backend.modes:
            modes = ", ".join(mode.value for mode in self.backend.modes)
            raise ConfigurationError(f"the {self.backend.name} backend supports {modes}, not {spec.mode.value}")
        if spec.mode is ConnectionMode.CALLBACK and not spec.response_address:
            raise ConfigurationError("callback mode needs a response address (GP_RESPONSE_IP / GP_RESPONSE_PORT)")
        check_kernel_uid(self.backend.kernel_uid(spec), spec.allow_root, f" on the {self.backend.name} backend")
        if self.lifecycle.phase.is_final:
            self.lifecycle.restart_from_new()
        self.spec, self._token, self.exit_code, self._platform_ended = spec, spec.token, None, False
        self.launch_id = spec.kernel_id
        deadline = time.monotonic() + spec.launch_timeout
        needs_payload = spec.mode in (ConnectionMode.CALLBACK, ConnectionMode.STDOUT)
        payload = self.broker.expect(self.launch_id, spec.token) if needs_payload else None
        try:
            self.handle = await asyncio.wait_for(self.backend.submit(spec), spec.launch_timeout)
            self.lifecycle.move_to(KernelPhase.SUBMITTED, f"submitted to {self.backend.name}")
            info = await self._await_connection(payload, deadline)
            await self._open_control(info, deadline)
        except BaseException as exc:
            error = await self._abort_launch(exc)
            if error is not exc:
                raise error from exc
            raise
        finally:
            self.broker.forget(self.launch_id)
        self.lifecycle.move_to(KernelPhase.READY, f"kernel ready at {self.connection_info['ip']}")
        self._follow_platform()
        return dict(self.connection_info)

    async def _await_connection(
        self, payload: asyncio.Future[dict[str, Any]] | None, deadline: float
    ) -> dict[str, Any]:
        """Follow the platform's observations until the agent's connection info is known."""
        assert self.handle is not None and self.spec is not None
        handle = self.handle
        while True:
            if payload is not None and payload.done():
                return self._check_payload(payload.result())
            while (data := handle.take_payload()) is not None:
                code, detail = self.broker.accept(data, peer=f"{self.backend.name} output")
                if code != Reply.ACCEPTED:
                    # The agent's own output channel is trusted and the agent does not retry: fail now.
                    raise HandshakeRejected(f"the agent's connection payload was rejected: {code} ({detail})")
            if payload is not None and payload.done():
                continue
            await self._follow(handle.observation)
            if self.spec.mode is ConnectionMode.ASSIGNED and handle.observation.state is PlatformState.RUNNING:
                return self._assigned_info(handle.observation)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LaunchTimeout(f"kernel not ready after {self.spec.launch_timeout:g} s")
            waiters = [asyncio.ensure_future(handle.wait_changed())]
            if payload is not None:
                waiters.append(payload)  # type: ignore[arg-type]
            await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            waiters[0].cancel()

    async def _follow(self, observation: Observation) -> None:
        """Mirror the platform's state into the lifecycle during start-up; fail at once on a terminal state."""
        phase = _PLATFORM_PHASES.get(observation.state)
        if phase is not None and phase is not self.phase and self.lifecycle.can_move_to(phase):
            if not (phase is KernelPhase.PENDING and self.phase is not KernelPhase.SUBMITTED):
                self.lifecycle.move_to(phase, observation.reason)
        if observation.state is PlatformState.FAILED:
            raise observation.error or LaunchError(
                observation.reason or "the platform failed the launch", diagnostics=observation.diagnostics
            )
        if observation.state.is_over:
            tail = list(observation.diagnostics) or await self._log_tail()
            raise KernelExited(
                f"the kernel's agent ended during start-up ({observation.reason or f'exit {observation.exit_code}'})",
                exit_code=observation.exit_code,
                diagnostics=tail,
            )

    def _check_payload(self, info: dict[str, Any]) -> dict[str, Any]:
        if info.get("status") == "failed":
            code = info.get("exit_code")
            raise KernelExited(
                info.get("reason") or f"the kernel exited during start-up with code {code}",
                exit_code=code,
                diagnostics=info.get("log_tail") or [],
            )
        # Sealed with the token, so from the agent; still bytes from the network: what the server uses must be typed.
        bad = [name for name in ("agent_port", *PORT_KEYS) if not _is_port(info.get(name))]
        if bad or not isinstance(info.get("key"), str) or not isinstance(info.get("ip", ""), str):
            raise HandshakeRejected(
                f"the agent's connection info is not usable: {', '.join(bad) or 'key or ip'} missing or mistyped",
                hint="Install the agent that matches the server's gateway-provisioners",
            )
        if self.phase is not KernelPhase.CONNECTING:
            self.lifecycle.move_to(KernelPhase.CONNECTING, "connection info received")
        return info

    def _assigned_info(self, observation: Observation) -> dict[str, Any]:
        assert self.spec is not None
        info = {**self.spec.assign_connection(), "ip": observation.ip, "transport": "tcp"}
        info.setdefault("signature_scheme", "hmac-sha256")
        info.setdefault("kernel_name", self.spec.kernel_name)
        self.lifecycle.move_to(KernelPhase.CONNECTING, f"agent at {observation.ip}")
        return info

    async def _open_control(self, info: dict[str, Any], deadline: float) -> None:
        assert self.handle is not None and self._token is not None
        # The platform's word first (pod or container IP, SSH host); then the agent's own; then where it called from.
        ip = self.handle.observation.ip or info.get("ip") or ""
        peer_ip = self.broker.take_peer(self.launch_id)
        if ip in ("", "0.0.0.0", "::"):
            ip = peer_ip or "127.0.0.1"
        self.kernel_pid = info.get("pid")
        # For the backend's fallbacks (signals, clean-up) when the agent does not answer.
        self.handle.data.update({k: info[k] for k in ("agent_pid", "hostname") if info.get(k)})
        if info.get("pgid"):
            self.handle.data["kernel_pgid"] = info["pgid"]
        info = await self.backend.route(self.handle, {**info, "ip": ip})
        self.agent_address = (info["ip"], int(info["agent_port"]))
        self.connection_info = {k: info[k] for k in CONNECTION_KEYS if k in info}
        if self.spec is not None and self.spec.curve_keys:
            # The keys the server chose, never ones an agent reports: they authenticate the kernel to its clients.
            self.connection_info.update(
                curve_publickey=self.spec.curve_keys[0], curve_secretkey=self.spec.curve_keys[1]
            )
        await self._connect_control(deadline)

    async def _connect_control(self, deadline: float, reattaching: bool = False) -> None:
        assert self.agent_address is not None and self._token is not None
        control = ControlConnection(self.launch_id, self._token, on_event=self._on_agent_event)
        while True:
            try:
                state = await control.open(*self.agent_address, timeout=max(0.1, deadline - time.monotonic()))
                break
            except (ProtocolError, asyncio.IncompleteReadError) as exc:
                raise HandshakeRejected(
                    f"the agent at {self.agent_address[0]}:{self.agent_address[1]} refused the control channel: {exc}"
                ) from None
            except asyncio.CancelledError:
                await control.close()  # cancelled after it connected (a reattach that learnt the kernel is gone)
                raise
            except ConnectionRefusedError as exc:
                if reattaching:  # the agent listened on this address until it ended: nothing to wait for
                    raise KernelExited(
                        f"nothing listens at the agent's address {self.agent_address[0]}:{self.agent_address[1]} "
                        f"any more ({exc.strerror or exc}): the agent is gone",
                        hint="",
                    ) from None
                await self._connect_retry(exc, deadline)
            except OSError as exc:
                # Server-assigned mode: the agent listens once its kernel is ready; until then, connections are
                # refused (or, when its container just died, find no route). Follow the platform — a kernel that
                # died fails the launch at once, with its reason — and try again shortly.
                await self._connect_retry(exc, deadline)
        self._control = control
        if state.get("kernel") == "exited":
            self.exit_code = state.get("exit_code")

    async def _connect_retry(self, exc: OSError, deadline: float) -> None:
        """Before another try at the agent's control port: the deadline, and the platform's word on the kernel."""
        assert self.agent_address is not None
        if time.monotonic() >= deadline:
            raise LaunchTimeout(
                f"the agent at {self.agent_address[0]}:{self.agent_address[1]} never listened ({exc})"
            ) from None
        if self.handle is not None and self.lifecycle.phase is KernelPhase.CONNECTING:
            await self._follow(self.handle.observation)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.handle.wait_changed(), 0.05)
        else:
            await asyncio.sleep(0.05)

    async def _reattach_control(self, deadline: float) -> None:
        """Open the control connection to a restored kernel's agent, failing as soon as the kernel is known gone.

        Unlike at a launch nothing is still coming up: when the platform says the resource that holds the agent is
        over, or nothing listens at the agent's address any more, waiting for the deadline only delays a server's
        start-up (every stored kernel is reattached then). The platform's word is checked before connecting and at
        each of its later observations, while a connection attempt may still be waiting on an unresponsive address.
        """
        assert self.handle is not None
        handle = self.handle
        self._check_not_over(handle.observation)
        connecting = asyncio.ensure_future(self._connect_control(deadline, reattaching=True))
        try:
            while not connecting.done():
                changed = asyncio.ensure_future(handle.wait_changed())
                await asyncio.wait({connecting, changed}, return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
                if not connecting.done():
                    self._check_not_over(handle.observation)
            connecting.result()
        finally:
            if not connecting.done():
                connecting.cancel()  # the attempt closes what it opened
                await asyncio.wait({connecting})
            if not connecting.cancelled():
                connecting.exception()  # retrieved: the error raised is the platform's word

    def _check_not_over(self, observation: Observation) -> None:
        """Raise :class:`KernelExited` when ``observation`` ends the kernel (see ``Backend.kernel_ends_with_resource``;
        elsewhere the platform's resource is not the agent, and only the agent's address tells)."""
        if observation.state.is_over and self.backend.kernel_ends_with_resource:
            raise KernelExited(
                f"the kernel's {self.backend.name} resource is {observation.state.value}"
                + (f" ({observation.reason})" if observation.reason else ""),
                exit_code=observation.exit_code,
                diagnostics=list(observation.diagnostics),
                hint="",
            )

    async def _abort_launch(self, exc: BaseException) -> BaseException:
        """Leave nothing running after a failed or cancelled launch, record why, and return the error to raise."""
        if isinstance(exc, asyncio.TimeoutError) and not isinstance(exc, LaunchError):
            exc = LaunchTimeout(f"kernel not ready after {self.spec.launch_timeout if self.spec else 0:g} s")
        timed_out = isinstance(exc, LaunchTimeout)
        budget_end = time.monotonic() + CLEANUP_AFTER_TIMEOUT
        if isinstance(exc, LaunchTimeout) and not exc.diagnostics:
            if self.handle is not None:
                obs = self.handle.observation
                exc.diagnostics.append(f"platform state: {obs.state.value} {obs.reason}".rstrip())
            exc.diagnostics.extend(await self._log_tail(CLEANUP_AFTER_TIMEOUT / 2))
        await self._close_control()
        if self.handle is not None:
            cleanup = _cleanups.spawn(self.backend.terminate(self.handle, grace=0))
            # A timed-out launch may be waiting on a host that stopped answering: report at once, clean up meanwhile.
            await asyncio.wait({cleanup}, timeout=max(0.0, budget_end - time.monotonic()) if timed_out else None)
            self.handle = None
        self.lifecycle.fail(exc if isinstance(exc, Exception) else LaunchError("launch cancelled"))
        if isinstance(exc, LaunchError):
            # details() escapes every line it quotes and its line breaks are ours: it goes into the format string,
            # which the log's escaping filter leaves alone (it escapes the arguments).
            details = exc.details().replace("%", "%%")
            log.warning(f"kernel %s on %s failed: {details}", self.kernel_id, self.backend.name)
        return exc

    async def _log_tail(self, timeout: float = 5.0) -> list[str]:
        if self.handle is None:
            return []
        try:
            return await asyncio.wait_for(self.backend.log_tail(self.handle), timeout)
        except Exception:
            return []

    # --- the running kernel -----------------------------------------------------------------------------------------

    def _follow_platform(self) -> None:
        """Once ready, let the platform end the kernel where its resource holds the agent (see the Backend's
        ``kernel_ends_with_resource``). Elsewhere the agent's control connection alone says whether the kernel lives."""
        handle = self.handle
        if handle is None or not self.backend.kernel_ends_with_resource:
            return

        def on_observation(observation: Observation) -> None:
            if handle is not self.handle or not observation.state.is_over:
                return
            if self.phase not in (KernelPhase.READY, KernelPhase.EXITED):
                return  # starting, restarting or shutting down: those paths follow the platform themselves
            self._platform_ended = True
            if self.exit_code is None:
                self.exit_code = observation.exit_code if observation.exit_code is not None else -int(signal.SIGKILL)
            self.lifecycle.fail(
                KernelExited(
                    f"the platform ended the kernel's {self.backend.name} resource "
                    f"({observation.reason or observation.state.value})",
                    hint="",
                    exit_code=self.exit_code,
                    diagnostics=self._exit_diagnostics,
                )
            )

        handle.subscribe(on_observation)
        on_observation(handle.observation)

    def _on_agent_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "kernel-exited":
            self.exit_code = event.get("exit_code")
            self._exit_diagnostics = list(event.get("log_tail") or [])
            if self.lifecycle.can_move_to(KernelPhase.EXITED) and self.phase is not KernelPhase.RESTARTING:
                self.lifecycle.move_to(KernelPhase.EXITED, f"kernel exited with code {self.exit_code}")
        elif kind == "disconnected" and self.phase not in (KernelPhase.TERMINATING,) and not self.phase.is_final:
            if self.phase in (KernelPhase.READY, KernelPhase.EXITED, KernelPhase.RESTARTING):
                if self.exit_code is None:
                    self.exit_code = -int(signal.SIGKILL)
                self.lifecycle.fail(
                    KernelExited(
                        f"the kernel's agent is gone ({event.get('reason', '')})",
                        hint="",
                        exit_code=self.exit_code,
                        diagnostics=self._exit_diagnostics,
                    )
                )

    async def _request(self, op: str, timeout: float = 10.0, **args: Any) -> dict[str, Any]:
        if self._control is None:
            raise ControlChannelClosed(f"kernel {self.kernel_id} has no agent connection")
        reply = await self._control.request(op, timeout=timeout, **args)
        if not reply.get("ok", False):
            error = LaunchTimeout if reply.get("timed_out") is True else LaunchError
            raise error(
                f"agent refused {op}: {reply.get('error', 'no reason given')}", diagnostics=reply.get("log_tail") or []
            )
        return reply

    async def ping(self, timeout: float = 5.0) -> dict[str, Any]:
        """Ask the agent how the kernel is: ``{"kernel": "running" | "exited", "pid": ..., "exit_code": ...}``."""
        return await self._request("ping", timeout=timeout)

    async def signal(self, signum: int) -> None:
        """Send ``signum`` to the kernel's process group, through the agent or, failing that, the backend."""
        if signum == 0:
            return
        try:
            await self._request("signal", signum=int(signum))
        except (ControlChannelClosed, asyncio.TimeoutError):
            if self.handle is not None:
                await self.backend.signal(self.handle, signum)

    async def interrupt(self) -> None:
        await self.signal(signal.SIGINT)

    async def restart(self, grace: float = 5.0) -> dict[str, Any]:
        """Restart the kernel in place: same agent, ports and key. Without a live agent, launch anew."""
        assert self.spec is not None
        if not self.agent_alive:
            await self.shutdown(grace=0)
            self.spec.token = new_token()
            return await self.start(self.spec)
        if self.phase is not KernelPhase.RESTARTING:
            self.lifecycle.move_to(KernelPhase.RESTARTING, "restarting in place")
        try:
            # The agent stops the kernel (up to grace), starts it, and waits up to ready_timeout: its answer, a
            # timeout included, comes after both; a few seconds more for the rest of its work and the network.
            reply = await self._request(
                "restart",
                timeout=self.spec.launch_timeout + grace + RESTART_REPLY_MARGIN,
                grace=grace,
                ready_timeout=self.spec.launch_timeout,
            )
        except (LaunchError, asyncio.TimeoutError) as exc:
            # The agent stopped the new kernel (or, silent past the deadline, will): the kernel is not running. A
            # timeout stays one, so that a client gets the same status for it as for a launch that timed out.
            error: LaunchError
            if isinstance(exc, LaunchTimeout):
                error = LaunchTimeout(f"kernel not ready after a restart: {exc.reason}", diagnostics=exc.diagnostics)
            elif not isinstance(exc, LaunchError):
                waited = self.spec.launch_timeout + grace + RESTART_REPLY_MARGIN
                error = LaunchTimeout(f"the agent did not answer the restart within {waited:g} s")
            else:
                error = KernelExited(exc.reason, diagnostics=exc.diagnostics)
            self.exit_code = 1
            self.lifecycle.move_to(KernelPhase.EXITED, str(error))
            raise error from None
        self.exit_code, self.kernel_pid = None, reply.get("pid")
        self.lifecycle.move_to(KernelPhase.READY, "kernel restarted in place")
        return dict(self.connection_info)

    async def kill_kernel(self) -> None:
        """SIGKILL the kernel's process group but keep the agent, so a restart reuses it."""
        await self.signal(signal.SIGKILL)

    async def shutdown(self, grace: float = 5.0) -> None:
        """End the kernel and its agent and remove what the launch created. Idempotent.

        The kernel gets ``grace`` seconds to exit on its own (after a shutdown request), then SIGTERM, then SIGKILL.
        """
        if self.phase.is_final and self.handle is None:
            return
        if not self.phase.is_final:
            self.lifecycle.move_to(KernelPhase.TERMINATING, "shutting down")
        if self._control is not None and self._control.is_open:
            with contextlib.suppress(ControlChannelClosed, LaunchError, asyncio.TimeoutError):
                reply = await self._request("shutdown", timeout=grace + 5, grace=grace)
                if reply.get("exit_code") is not None:
                    self.exit_code = reply["exit_code"]
                # The agent exits right after its reply; once it has, the backend has nothing left to stop.
                if self.handle is not None and await self._control.wait_closed_by_agent(timeout=2.0):
                    self.handle.data["agent_exited"] = True
        await self._close_control()
        if self.handle is not None:
            await self.backend.terminate(self.handle, grace=grace)
            self.handle = None
        if self.phase is KernelPhase.TERMINATING:
            self.lifecycle.move_to(KernelPhase.TERMINATED, "kernel and agent ended")

    async def _close_control(self) -> None:
        if self._control is not None:
            await self._control.close()
            self._control = None

    def claim_as(self, kernel_id: str) -> None:
        """A pooled kernel becomes ``kernel_id``'s: its progress events and log lines carry that id from now on.

        The agent and the platform keep knowing it by :attr:`launch_id` (its pod, container or application name, the
        control channel's keys); nothing about the running kernel changes.
        """
        self.kernel_id = kernel_id
        self.lifecycle.kernel_id = kernel_id

    # --- persistence ------------------------------------------------------------------------------------------------

    def serialize(self) -> dict[str, Any]:
        """What another process needs to take over this kernel. Holds the launch token: store it like the HMAC key."""
        if self.handle is None or self._token is None or self.agent_address is None:
            raise LaunchError(f"kernel {self.kernel_id} is not running; there is nothing to serialize")
        return {
            "kernel_id": self.kernel_id,
            "launch_id": self.launch_id,
            "backend": self.backend.name,
            "handle": self.backend.serialize(self.handle),
            "token": encode_token(self._token),
            "agent_address": list(self.agent_address),
            "connection_info": dict(self.connection_info),
            "spec": {
                "argv": self.spec.argv if self.spec else [],
                "launch_timeout": self.spec.launch_timeout if self.spec else 30,
            },
        }

    @classmethod
    async def restore(
        cls,
        backend: Backend,
        data: dict[str, Any],
        *,
        broker: ConnectionBroker | None = None,
        events: EventLog | None = None,
        timeout: float = REATTACH_TIMEOUT,
    ) -> RemoteKernel:
        """Reattach to a kernel serialized by another process. A kernel that is gone polls as dead: at once when the
        backend's observation says its resource is over or nothing listens at its agent's address, else after
        ``timeout`` seconds of trying to reach its agent."""
        if data.get("backend") != backend.name:
            raise LaunchError(
                f"kernel {data.get('kernel_id')} was launched by backend {data.get('backend')!r}, not {backend.name!r}"
            )
        kernel = cls(backend, data["kernel_id"], broker=broker, events=events)
        kernel.launch_id = str(data.get("launch_id") or kernel.kernel_id)
        kernel._token = decode_token(data["token"])
        kernel.connection_info = dict(data["connection_info"])
        kernel.agent_address = (data["agent_address"][0], int(data["agent_address"][1]))
        spec_data = data.get("spec") or {}
        kernel.spec = LaunchSpec(
            kernel.launch_id,
            spec_data.get("argv") or ["restored"],
            token=kernel._token,
            launch_timeout=float(spec_data.get("launch_timeout", 30)),
        )
        if kernel.connection_info.get("curve_publickey") and kernel.connection_info.get("curve_secretkey"):
            kernel.spec.curve_keys = (
                kernel.connection_info["curve_publickey"],
                kernel.connection_info["curve_secretkey"],
            )
        kernel.handle = await backend.restore(data["handle"])
        try:
            await kernel._reattach_control(time.monotonic() + timeout)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ProtocolError, LaunchError) as exc:
            kernel.exit_code = 1
            kernel.lifecycle.move_to(KernelPhase.FAILED, f"cannot reattach: {exc}", error=exc)
            return kernel
        kernel.lifecycle.move_to(KernelPhase.READY, "reattached")
        if kernel.exit_code is not None:
            kernel.lifecycle.move_to(KernelPhase.EXITED, f"kernel exited with code {kernel.exit_code}")
        kernel._follow_platform()
        return kernel


PORT_KEYS = ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port")


def _is_port(value: Any) -> bool:
    return type(value) is int and 0 < value < 65536
