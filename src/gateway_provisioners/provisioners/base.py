"""The jupyter_client facade: :class:`RemoteProvisionerBase` maps each provisioner hook onto :class:`RemoteKernel`.

A concrete provisioner adds its traits and says which :class:`Backend` it uses (:meth:`make_backend`); everything
else — the handshake, the lifecycle, restart in place, reattaching — is the core's.

jupyter_client drives a kernel like this (hooks in order)::

    start:     pre_launch → launch_kernel → post_launch
    running:   poll (by the restarter, every few seconds), send_signal (interrupt)
    shutdown:  shutdown_requested → poll/wait → [terminate → kill] → cleanup
    restart:   shutdown(restart=True) as above, then pre_launch → launch_kernel again on this same instance
"""

from __future__ import annotations

import difflib
import getpass
import os
import signal
import time
from collections.abc import Callable
from typing import Any, ClassVar, cast

import zmq
from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from traitlets import TraitError

from ..core.backend import Backend
from ..core.errors import ConfigurationError
from ..core.events import ProgressEvent
from ..core.kernel import RemoteKernel
from ..core.launch import (
    COMMON_PARAMS,
    ConnectionMode,
    LaunchSpec,
    Param,
    build_kernel_env,
    check_user,
    parse_user_list,
    split_list,
    validate_kernel_values,
)
from ..core.logsafe import printable
from ..core.port_range import PortRange
from ..listener import DEFAULT_PORT, shared_broker, shared_listener
from . import pooling
from .legacy import refuse_legacy_spec
from .settings import Flag, Integer, NameList, NameSet, Number, Ports, Text, setting, trait_error


class RemoteProvisionerBase(KernelProvisionerBase):  # type: ignore[misc]
    """Base of every gateway-provisioners provisioner. Subclasses implement :meth:`make_backend`."""

    launch_timeout = setting(
        Number, "GP_LAUNCH_TIMEOUT", "KERNEL_LAUNCH_TIMEOUT", default=30.0, minimum=1, maximum=3600,
        help="""Seconds from launch until the kernel must be ready, end to end; a launch that fails earlier fails at
        once. A client's KERNEL_LAUNCH_TIMEOUT overrides it per launch.""",
    )  # fmt: skip
    authorized_users = setting(
        NameSet, "GP_AUTHORIZED_USERS", default=set(), default_doc="empty: everyone not denied",
        help="Users allowed to start kernels (KERNEL_USERNAME, else the server's user); empty allows everyone not "
        "in unauthorized_users.",
    )  # fmt: skip
    unauthorized_users = setting(
        NameSet, "GP_UNAUTHORIZED_USERS", default={"root"}, empty_is_set=True,
        limits_doc="the variable set but empty denies nobody",
        help="Users never allowed to start kernels; checked before authorized_users.",
    )  # fmt: skip
    allow_root_kernels = setting(
        Flag, "GP_ALLOW_ROOT_KERNELS", default=False,
        help="Allow kernels that really run as root (uid 0). Off: a launch whose kernel would run as uid 0 is refused, "
        "whatever KERNEL_USERNAME a client sends — by the server where it knows the uid (the local backend: the "
        "server's own), by the agent on the target elsewhere.",
    )  # fmt: skip
    agent_watchdog = setting(
        Number, "GP_AGENT_WATCHDOG", default=60.0, minimum=0, maximum=7 * 24 * 3600,
        help="Seconds an agent waits without a connected server (a failed launch, a lost connection, a server that "
        "ended) before it ends its kernel and itself; 0 = never. Sent to every agent with its launch parameters. A "
        "server that restarts must reattach within this time.",
    )  # fmt: skip
    port_range = setting(
        Ports, "GP_PORT_RANGE", default=PortRange(),
        limits_doc="`0..0` or empty (any port), else 1024 ≤ lower ≤ upper ≤ 65535 with at least 6 ports",
        help="Ports the kernel and its agent may use on the kernel's host.",
    )  # fmt: skip
    env_allowlist = setting(
        NameList, "GP_ENV_ALLOWLIST", default=[],
        help="Names of server environment variables passed to kernels besides KERNEL_* values and the kernel spec's "
        "env; the server's environment is otherwise never copied into a kernel.",
    )  # fmt: skip
    connection_mode = setting(
        Text, "GP_CONNECTION_MODE", default=lambda p: p.backend_modes()[0].value,
        default_doc="the provisioner's preferred mode", check=lambda v, name, p: p.check_mode(v, name),
        limits_doc="one of the provisioner's modes",
        help="How the kernel's connection info comes back: 'callback' (the agent connects to the response "
        "listener), 'stdout' (on the channel that started it) or 'assigned' (the server chooses the ports).",
    )  # fmt: skip
    response_ip = setting(
        Text, "GP_RESPONSE_IP", default=lambda p: p.default_response_ip(), default_doc="per provisioner",
        help="Address agents call back to in callback mode, and that the response listener binds.",
    )  # fmt: skip
    response_port = setting(
        Integer, "GP_RESPONSE_PORT", default=DEFAULT_PORT, minimum=0, maximum=65535,
        help="First port tried for the response listener; 0 = any.",
    )  # fmt: skip
    response_port_retries = setting(
        Integer, "GP_RESPONSE_PORT_RETRIES", default=10, minimum=0, maximum=1000,
        help="Further ports tried when the response port is taken.",
    )  # fmt: skip
    response_addr_any = setting(
        Flag, "GP_RESPONSE_ADDR_ANY", default=False,
        help="Bind the response listener on all interfaces, still advertising response_ip.",
    )  # fmt: skip

    pool_size = setting(
        Integer, "GP_POOL_SIZE", default=0, minimum=0, maximum=1000,
        help="Kernels of this kernel spec kept started and ready, so that a launch that can use one is ready at once "
        "(docs/pools.md says which launches can); 0 = no pool.",
    )  # fmt: skip
    pool_max_age = setting(
        Number, "GP_POOL_MAX_AGE", default=3600.0, minimum=0, maximum=30 * 24 * 3600,
        help="Seconds a pooled kernel may wait unclaimed before it is replaced by a fresh one; 0 = no limit.",
    )  # fmt: skip
    pool_refill_concurrency = setting(
        Integer, "GP_POOL_REFILL_CONCURRENCY", default=2, minimum=1, maximum=100,
        help="Pooled kernels started at the same time while the pool refills (in the background; a failing launch "
        "is retried after a growing pause).",
    )  # fmt: skip

    #: Whether a launch's working directory can be given to a running pooled Python kernel (``os.chdir``). False where
    #: the directory changes how the kernel is started (a container's mounts).
    working_dir_applies_late: ClassVar[bool] = True

    #: Per-launch values this provisioner accepts from clients, checked before anything starts.
    param_schema: ClassVar[tuple[Param, ...]] = COMMON_PARAMS

    #: Called with ``(provisioner, event)`` for every progress event of every kernel (the server extension publishes
    #: them and counts them). Class-level because jupyter_client, not the observer, makes each provisioner.
    progress_observers: ClassVar[list[Callable[[RemoteProvisionerBase, ProgressEvent], None]]] = []

    def check_mode(self, value: str, name: str = "connection_mode") -> str:
        allowed = [mode.value for mode in self.backend_modes()]
        if value not in allowed:
            raise ConfigurationError(f"{name} {value!r} is not one of {', '.join(allowed)} for this provisioner")
        return str(value)

    def default_response_ip(self) -> str:
        """``response_ip`` when neither configured nor in the environment."""
        return first_public_ip()

    def __init__(self, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(self.class_trait_names()) - {"parent", "config"})
        if unknown:  # a kernel spec's misspelled setting would otherwise be dropped without a word
            refuse_legacy_spec(kwargs.get("kernel_spec"))  # an older spec's settings: say how to convert it instead
            raise TraitError(unknown_settings(type(self), unknown))
        super().__init__(**kwargs)
        self.kernel: RemoteKernel | None = None
        self._spec: LaunchSpec | None = None
        self._late: pooling.LateValues | None = None  # what a claimed pooled kernel was given at claim time
        self._kernel_name = ""  # a pool template's kernel spec name (it has no kernel manager to ask)

    # --- what subclasses provide ------------------------------------------------------------------------------------

    def make_backend(self) -> Backend:
        """The backend this provisioner launches on (subclasses may share one per process)."""
        raise NotImplementedError

    def backend_modes(self) -> tuple[ConnectionMode, ...]:
        """The connection modes the backend supports; the first is the default."""
        return (ConnectionMode.CALLBACK,)

    def kernel_argv(self, cmd: list[str]) -> list[str]:
        """The kernel's argv as the agent will run it; ``{connection_file}`` stays for the agent to fill in."""
        return list(cmd)

    def kernel_ip(self) -> str:
        """Where the kernel binds on its host."""
        return "0.0.0.0"

    def root_allowed(self) -> bool:
        """Whether a kernel may really run as uid 0 (see ``allow_root_kernels``)."""
        return bool(self.allow_root_kernels)

    def server_cwd(self, cwd: str | None) -> str | None:
        """The kernel's folder when the client sets no KERNEL_WORKING_DIR, given the one jupyter_server chose (the
        notebook's). ``None`` (the kernel's default folder) here: the server's folders mean nothing on another host."""
        return None

    # --- jupyter_client hooks ---------------------------------------------------------------------------------------

    @property
    def has_process(self) -> bool:
        return self.kernel is not None and self.kernel.handle is not None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Start phase: check the user and the per-launch values, build the launch spec. Nothing starts yet.

        With ``pool_size`` set, the first launch of a kernel spec also starts its warm pool (docs/pools.md).
        """
        refuse_legacy_spec(self.kernel_spec)
        extra_arguments = kwargs.pop("extra_arguments", []) or []
        curve_keys = self._curve_keys(kwargs.pop("transport_encryption", None))
        kwargs = await super().pre_launch(**kwargs)  # applies the kernel spec's env substitutions
        cwd = _text(kwargs["cwd"]) if kwargs.get("cwd") else None
        self._spec = self.build_spec(str(self.kernel_id), kwargs["env"], cwd, extra_arguments, curve_keys)
        kwargs["cmd"] = self._spec.argv
        if self.pool_size > 0 and self.kernel is None:
            await pooling.ensure_pool(self, self.spec_kernel_name)
        return kwargs

    @property
    def spec_kernel_name(self) -> str:
        """The kernel spec's name as the kernel manager knows it (a pool's template has no manager: it is told)."""
        return getattr(self.parent, "kernel_name", "") or self._kernel_name or self.kernel_spec.display_name

    def build_spec(
        self,
        kernel_id: str,
        env: dict[str, str],
        cwd: str | None,
        extra_arguments: list[str] | tuple[str, ...] = (),
        curve_keys: tuple[str, str] | None = None,
    ) -> LaunchSpec:
        """The launch spec of one launch: ``env`` is the request's environment after jupyter_client's substitutions,
        ``cwd`` the folder jupyter_server chose. Checks the user and the per-launch values; changes nothing here."""
        values = validate_kernel_values(env, self.param_schema)
        username = values.get("KERNEL_USERNAME") or getpass.getuser()
        check_user(username, self.authorized_users, self.unauthorized_users, self.kernel_spec.display_name)
        kernel_env = build_kernel_env(env, self.kernel_spec.env, parse_user_list(self.env_allowlist))
        kernel_env.update(KERNEL_ID=kernel_id, KERNEL_USERNAME=username, KERNEL_LANGUAGE=self.kernel_spec.language)
        spec = LaunchSpec(
            kernel_id=kernel_id,
            argv=self.kernel_argv(list(self.kernel_spec.argv) + list(extra_arguments)),
            env=kernel_env,
            username=username,
            kernel_name=self.spec_kernel_name,
            language=self.kernel_spec.language,
            mode=ConnectionMode(self.connection_mode),
            port_range=self.port_range,
            launch_timeout=float(values.get("KERNEL_LAUNCH_TIMEOUT") or self.launch_timeout),
            kernel_ip=self.kernel_ip(),
            cwd=values.get("KERNEL_WORKING_DIR") or self.server_cwd(cwd),
            values=values,
            curve_keys=curve_keys,
            allow_root=self.root_allowed(),
            agent_watchdog=self.agent_watchdog,
        )
        self.complete_spec(spec)
        return spec

    def complete_spec(self, spec: LaunchSpec) -> None:
        """Subclasses add what their backend needs to ``spec`` (its checked ``request``) from the per-launch values."""

    def backend_for(self, spec: LaunchSpec) -> Backend:
        """The backend that launches ``spec``: a pool's launches, which are not this provisioner's own."""
        return self.make_backend()

    def pool_template(self, kernel_name: str) -> RemoteProvisionerBase:
        """A provisioner with this one's settings and kernel spec and no kernel manager: it launches pooled kernels."""
        settings = {name: getattr(self, name) for name in self.trait_names(config=True)}
        template = type(self)(kernel_id="pool", kernel_spec=self.kernel_spec, **settings)
        template._kernel_name = kernel_name
        template.log = self.log
        return template

    def _curve_keys(self, requested: str | None) -> tuple[str, str] | None:
        """CurveZMQ keys for the kernel's channels, by the kernel manager's ``transport_encryption`` policy as
        jupyter_client's local provisioner reads it: ``auto`` and ``required`` when the kernel spec's metadata declares
        ``supported_encryption: curve`` (the manager refuses ``required`` without it), ``disabled`` never. A restart
        keeps the keys the manager holds."""
        km = self.parent
        policy = str(requested or getattr(km, "transport_encryption", None) or "disabled").lower()
        if policy not in ("disabled", "auto", "required"):
            raise ConfigurationError(f"transport_encryption {policy!r} is not one of disabled, auto, required")
        declared = (self.kernel_spec.metadata or {}).get("supported_encryption") or ()
        declared = [declared] if isinstance(declared, str) else declared
        if policy == "disabled" or "curve" not in {str(d).strip().lower() for d in declared}:
            return None
        if not zmq.has("curve"):
            raise ConfigurationError("transport_encryption needs CurveZMQ, and this pyzmq's libzmq has no libsodium")
        public, secret = getattr(km, "curve_publickey", None), getattr(km, "curve_secretkey", None)
        if not (public and secret):
            public, secret = zmq.curve_keypair()
        return _text(public), _text(secret)

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        """Start phase: claim a pooled kernel, launch a cold one, or restart in place; return the connection info once
        the kernel is ready."""
        assert self._spec is not None, "pre_launch must run first"
        info: dict[str, Any] | None = None
        if self.kernel is not None and self.kernel.agent_alive:
            info = await self.kernel.restart(grace=0)
            if self._late is not None:  # a claimed kernel's restarted process gets its launch's values again
                await pooling.kernel_request(info, self._late)
        else:
            if self.kernel is not None:
                await self.kernel.shutdown(grace=0)  # whatever is left of an agent that went away
                if self.kernel.launch_id != self._spec.kernel_id:  # a claimed kernel: start anew under our own id
                    self.kernel, self._late = None, None
            elif self.pool_size > 0:
                info = await self._claim()
            if info is None:
                if self.kernel is None:
                    self.kernel = RemoteKernel(self.make_backend(), str(self.kernel_id), broker=shared_broker())
                    self.kernel.lifecycle.events.subscribe(self._log_progress)
                if self._spec.mode is ConnectionMode.CALLBACK:
                    self._spec.response_address = (await self._listener()).address
                info = await self.kernel.start(self._spec)
        # jupyter_client types the key as text but signs with bytes: hand it bytes, as its local provisioner does.
        self.connection_info = cast(KernelConnectionInfo, {**info, "key": str(info["key"]).encode()})
        return self.connection_info

    async def _claim(self) -> dict[str, Any] | None:
        """Take a kernel from this kernel spec's pool if the launch can use one; None (and the reason logged) if not."""
        assert self._spec is not None
        started = time.monotonic()
        warm = await pooling.ensure_pool(self, self.spec_kernel_name)
        if warm is None:
            return None
        late, why = pooling.compare(warm, self._spec, self.working_dir_applies_late)
        if why is None and (kernel := await warm.pool.claim()) is not None:
            try:
                if late is not None:
                    await pooling.kernel_request(kernel.connection_info, late)
            except Exception as exc:  # it never reached anyone: end it and start cold
                why = f"the pooled kernel did not take the launch's working directory and environment ({exc})"
                await kernel.shutdown(grace=0)
            except BaseException:  # the launch was cancelled: the kernel is nobody's, end it
                pooling.end_in_background(kernel)
                raise
            else:
                kernel.claim_as(str(self.kernel_id))
                kernel.lifecycle.events.subscribe(self._log_progress)
                self.kernel, self._late = kernel, late
                self.log.info("kernel %s [%s] claimed from the pool (launched as %s) in %.3f s", self.kernel_id,
                              kernel.backend.name, kernel.launch_id, time.monotonic() - started)  # fmt: skip
                return dict(kernel.connection_info)
        elif why is None:
            why = f"no pooled kernel is ready ({warm.pool.starting} starting)"
        self.log.info("kernel %s starts cold, not from the pool: %s", self.kernel_id, printable(why))
        return None

    async def poll(self) -> int | None:
        """Running phase: ``None`` while the kernel runs, else its exit code. A cache read, no remote call."""
        return self.kernel.poll() if self.kernel is not None else 0

    async def wait(self) -> int | None:
        """Shutdown phase: wait for the kernel process to end (event-driven)."""
        return await self.kernel.wait() if self.kernel is not None else 0

    async def send_signal(self, signum: int) -> None:
        """Running phase: deliver ``signum`` to the kernel's process group through the agent (interrupt = SIGINT)."""
        if self.kernel is not None:
            await self.kernel.signal(signum)

    async def kill(self, restart: bool = False) -> None:
        """Shutdown phase, last resort: SIGKILL the kernel's process group. The agent stays until :meth:`cleanup`.

        jupyter_client passes ``restart=False`` here even when it restarts (``restart_kernel(now=True)``), so the
        agent — and with it the kernel's ports — is only ended by ``cleanup(restart=False)``.
        """
        if self.kernel is not None:
            await self.kernel.kill_kernel()

    async def terminate(self, restart: bool = False) -> None:
        """Shutdown phase: SIGTERM the kernel when it did not exit after the shutdown request."""
        if self.kernel is not None:
            await self.kernel.signal(signal.SIGTERM)

    async def shutdown_requested(self, restart: bool = False) -> None:
        """Shutdown phase: the kernel got a shutdown request over ZMQ. Nothing to do: the agent reports its exit."""

    async def cleanup(self, restart: bool = False) -> None:
        """Shutdown phase, last: end the agent and remove the kernel's resources, unless restarting in place."""
        if restart or self.kernel is None:
            return
        await self.kernel.shutdown(grace=0)
        self.kernel = None

    async def get_provisioner_info(self) -> dict[str, Any]:
        """Persistence: what a new server process needs to reattach (includes the launch token: store it securely)."""
        info = await super().get_provisioner_info()
        info["connection_info"] = {**self.connection_info, "key": _text(self.connection_info.get("key", b""))}
        if self.kernel is not None and self.kernel.handle is not None:
            info["gateway_provisioners"] = self.kernel.serialize()
            if self._late is not None:  # a claimed kernel: a restart in place after a reattach applies them again
                info["gateway_provisioners"]["late_values"] = self._late.as_dict()
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        """Persistence: reattach to a kernel launched by another server process."""
        await super().load_provisioner_info(provisioner_info)
        key = _text(self.connection_info.get("key", "")).encode()
        self.connection_info = cast(KernelConnectionInfo, {**self.connection_info, "key": key})
        saved = provisioner_info.get("gateway_provisioners")
        if saved:
            self.kernel = await RemoteKernel.restore(self.make_backend(), saved, broker=shared_broker())
            self.kernel.lifecycle.events.subscribe(self._log_progress)
            if saved.get("late_values"):
                self._late = pooling.LateValues.from_dict(saved["late_values"])

    async def detach(self) -> None:
        """Let go of the kernel without ending it (its server stops; another process will reattach): close the control
        connection, so no reader is left pending when the event loop closes. The agent, the kernel and their
        resources stay."""
        if self.kernel is not None:
            await self.kernel._close_control()  # the core's own close, short of ending the agent as shutdown() does

    def get_shutdown_wait_time(self, recommended: float = 5.0) -> float:
        return recommended

    # --- helpers ----------------------------------------------------------------------------------------------------

    async def _listener(self):  # type: ignore[no-untyped-def]
        return await shared_listener(
            ip=self.response_ip,
            port=self.response_port,
            port_retries=self.response_port_retries,
            bind_any=self.response_addr_any,
        )

    def _log_progress(self, event: ProgressEvent) -> None:
        backend = self.kernel.backend.name if self.kernel else "?"
        # One INFO line per phase; a failure's details (diagnostics, hint) are logged once, by the core. Messages quote
        # agents, kernels and platforms: escaped, they cannot forge log lines.
        self.log.info(
            "kernel %s [%s] %s (%.3f s in %s) %s",
            printable(event.kernel_id), backend, event.phase, event.elapsed, event.previous, printable(event.message),
        )  # fmt: skip
        for observer in list(self.progress_observers):
            observer(self, event)  # the event log isolates a failing listener from the launch


def unknown_settings(cls: type, names: list[str]) -> str:
    """One line for settings ``cls`` does not have, with the nearest known name of each."""
    known = cls.class_trait_names(config=True)  # type: ignore[attr-defined]
    hints = []
    for name in names:
        near = difflib.get_close_matches(name, known, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
    return (
        f"{cls.__name__} has no setting {', '.join(hints)}: check the kernel spec's "
        "metadata.kernel_provisioner.config (docs/configuration.md lists every setting)"
    )


def checked(parse: Any, setting: str = "") -> Any:
    """Run ``parse``; turn a :class:`ConfigurationError` into the TraitError traitlets reports, naming ``setting``."""
    try:
        return parse()
    except ConfigurationError as exc:
        raise trait_error(exc, setting) from None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def first_public_ip() -> str:
    """Like the older package: the first non-loopback address not matching GP_PROHIBITED_LOCAL_IPS; else 127.0.0.1."""
    import re

    from jupyter_client.localinterfaces import public_ips

    prohibited = [re.compile(p) for p in split_list(os.environ.get("GP_PROHIBITED_LOCAL_IPS", ""))]
    for ip in public_ips():
        if not any(p.match(ip) for p in prohibited):
            return ip
    return "127.0.0.1"
