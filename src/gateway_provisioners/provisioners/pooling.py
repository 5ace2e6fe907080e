"""Warm pools for provisioners: which pool a kernel spec has, whether a launch may use it, and the late values.

A kernel spec whose provisioner sets ``pool_size`` gets one :class:`~gateway_provisioners.core.pool.KernelPool` per
event loop and *effective configuration* (provisioner class, kernel spec, every setting's value): two specs, or one
spec configured two ways, never share kernels. The pool launches its kernels through a provisioner of its own, built
from the first provisioner's settings, exactly as an ordinary launch would but with no per-launch values (the
server's environment, no working directory): its *template*.

A launch uses the pool only when what it asks for is the template's or can be applied to a running kernel
(:func:`compare`):

- the kernel's argv, user (``KERNEL_USERNAME``), every other per-launch ``KERNEL_*`` value the provisioner's schema
  knows (image, CPUs, namespace, host ...) and CurveZMQ keys must be the template's: they decide how and where the
  kernel runs, which cannot change once it runs;
- ``KERNEL_LAUNCH_TIMEOUT`` does not matter (the kernel is ready);
- the working directory and the kernel's environment (variables added, changed or removed, ``KERNEL_ID`` included)
  are applied *late* to Python kernels (kernel spec language ``python``): one silent execute request on the kernel's
  shell channel runs ``os.chdir`` and updates ``os.environ`` before anyone else has the connection info, and again
  after each restart in place. For other languages they must be the template's, except ``KERNEL_ID``, which stays
  the id the kernel was launched under (its ``launch_id``).

docs/pools.md says this for users.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase

from ..core.kernel import RemoteKernel
from ..core.launch import ConnectionMode, LaunchSpec
from ..core.logsafe import safe_logger
from ..core.pool import KernelPool
from ..core.tasks import BackgroundTasks
from ..listener import shared_broker
from ..per_loop import PerLoop

if TYPE_CHECKING:
    from .base import RemoteProvisionerBase

#: Per-launch values that do not stop a launch from using the pool: the launch's deadline (the kernel is ready), the
#: user (compared on its own, as the spec's username) and the working directory (compared as the spec's cwd).
NOT_COMPARED = frozenset({"KERNEL_LAUNCH_TIMEOUT", "KERNEL_USERNAME", "KERNEL_WORKING_DIR"})
#: Seconds the silent execute that applies late values, and the pool's kernel_info check, may take.
KERNEL_REQUEST_TIMEOUT = 10.0


@dataclass
class LateValues:
    """What a claimed Python kernel is given before it is handed out (and after each restart in place)."""

    cwd: str | None = None
    set_env: dict[str, str] = field(default_factory=dict)
    unset_env: list[str] = field(default_factory=list)

    def code(self) -> str:
        """One expression: leaves no name behind in the user's namespace and prints nothing."""
        return (
            "(lambda os: (os.chdir({cwd!r}) if {cwd!r} else None, os.environ.update({set!r}), "
            "[os.environ.pop(k, None) for k in {unset!r}]) and None)(__import__('os'))"
        ).format(cwd=self.cwd or "", set=self.set_env, unset=self.unset_env)

    def as_dict(self) -> dict[str, Any]:
        return {"cwd": self.cwd, "set_env": dict(self.set_env), "unset_env": list(self.unset_env)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LateValues:
        return cls(data.get("cwd"), dict(data.get("set_env") or {}), list(data.get("unset_env") or []))


@dataclass(eq=False)
class WarmPool:
    """One kernel spec's pool, the provisioner that launches its kernels and the launch spec they share."""

    key: str
    pool: KernelPool
    template: RemoteProvisionerBase
    reference: LaunchSpec  # what the template's launches look like (its kernel id and token are placeholders)
    late_capable: bool  # Python kernels take late values
    env: dict[str, str] = field(default_factory=dict)  # the request environment of every pooled launch

    async def launch_one(self) -> RemoteKernel:
        """Launch one kernel for the pool, under a fresh id, and check that it answers kernel_info."""
        kernel_id = str(uuid.uuid4())
        spec = self.template.build_spec(kernel_id, dict(self.env), None)
        spec.pooled = True
        kernel = RemoteKernel(self.template.backend_for(spec), kernel_id, broker=shared_broker())
        if spec.mode is ConnectionMode.CALLBACK:
            spec.response_address = (await self.template._listener()).address
        await kernel.start(spec)
        try:
            await kernel_request(kernel.connection_info, None)
        except BaseException:
            await kernel.shutdown(grace=0)
            raise
        return kernel


_pools: PerLoop[WarmPool] = PerLoop()
_endings = BackgroundTasks(safe_logger("gateway_provisioners.pool"), "ending a claimed kernel of a cancelled launch")
_creating: PerLoop[asyncio.Lock] = PerLoop()
_stopped: PerLoop[bool] = PerLoop()  # loops whose pools were drained for good (a server that stops)


def pool_key(provisioner: RemoteProvisionerBase, kernel_name: str) -> str:
    """Provisioner class, kernel spec and every setting's effective value: launches that share this share a pool."""
    settings = {name: repr(getattr(provisioner, name)) for name in sorted(provisioner.trait_names(config=True))}
    spec = provisioner.kernel_spec.to_dict() if hasattr(provisioner.kernel_spec, "to_dict") else {}
    cls = type(provisioner)
    return json.dumps([f"{cls.__module__}.{cls.__qualname__}", kernel_name, spec, settings], sort_keys=True)


async def ensure_pool(provisioner: RemoteProvisionerBase, kernel_name: str) -> WarmPool | None:
    """The pool of ``provisioner``'s kernel spec and settings, made and started on first use; None without one."""
    if provisioner.pool_size <= 0 or _stopped.find("stopped"):
        return None
    key = pool_key(provisioner, kernel_name)
    existing = _lookup(key)
    if existing is not None:
        return existing
    async with _creating.get("lock", asyncio.Lock):
        existing = _lookup(key)
        if existing is not None:
            return existing
        template = provisioner.pool_template(kernel_name)
        env = await template_env(template)  # taken once: every pooled kernel is launched as the reference says
        reference = template.build_spec("pool-template", dict(env), None)
        language = (provisioner.kernel_spec.language or "").lower()
        name = f"{kernel_name} [{type(provisioner).__name__}]"
        holder: list[WarmPool] = []
        pool = KernelPool(
            name,
            lambda: holder[0].launch_one(),
            size=provisioner.pool_size,
            max_age=provisioner.pool_max_age,
            concurrency=provisioner.pool_refill_concurrency,
            log=provisioner.log,
        )
        warm = WarmPool(key, pool, template, reference, language.startswith("python"), env)
        holder.append(warm)
        _pools.get(key, lambda: warm, usable=lambda old: False)  # replaces a drained pool of the same key
        pool.start()
        provisioner.log.info("pool %s: keeping %d kernel(s) ready", name, pool.size)
        return warm


def _lookup(key: str) -> WarmPool | None:
    warm = _pools.find(key)
    return warm if warm is not None and not warm.pool.closed else None


async def template_env(template: RemoteProvisionerBase) -> dict[str, str]:
    """The environment a launch without per-launch values brings: the server's, after the kernel spec's
    substitutions (jupyter_client's own ``pre_launch``, as for every launch)."""
    kwargs = await KernelProvisionerBase.pre_launch(template, env=os.environ.copy())
    return dict(kwargs["env"])


def compare(warm: WarmPool, spec: LaunchSpec, late_cwd: bool) -> tuple[LateValues | None, str | None]:
    """Whether ``spec`` can take one of ``warm``'s kernels: (the late values to apply, None) or (None, why not)."""
    ref = warm.reference
    if spec.curve_keys:
        return None, "the launch asks for CurveZMQ keys of its own (transport_encryption)"
    if list(spec.argv) != list(ref.argv):
        return None, "the kernel's argv differs from the pool's (extra arguments)"
    if spec.username != ref.username:
        return None, f"KERNEL_USERNAME {spec.username!r} is not the pool's {ref.username!r}"
    for name in ("mode", "kernel_name", "language", "kernel_ip", "allow_root", "agent_watchdog"):
        if getattr(spec, name) != getattr(ref, name):
            return None, f"{name} differs from the pool's"
    wanted = {k: v for k, v in spec.values.items() if k not in NOT_COMPARED}
    pooled = {k: v for k, v in ref.values.items() if k not in NOT_COMPARED}
    if wanted != pooled:
        names = sorted(k for k in set(wanted) | set(pooled) if wanted.get(k) != pooled.get(k))
        return None, f"per-launch values differ from the pool's: {', '.join(names)}"
    late = LateValues()
    if spec.cwd != ref.cwd:
        if not warm.late_capable or not late_cwd or not spec.cwd:
            why = "not a Python kernel" if not warm.late_capable else "set at launch on this backend"
            return None, f"the working directory {spec.cwd!r} is not the pool's ({why})"
        late.cwd = spec.cwd
    env, ref_env = dict(spec.env), dict(ref.env)
    env.pop("KERNEL_ID", None)
    ref_env.pop("KERNEL_ID", None)
    late.set_env = {k: v for k, v in env.items() if ref_env.get(k) != v}
    late.unset_env = sorted(k for k in ref_env if k not in env)
    if (late.set_env or late.unset_env) and not warm.late_capable:
        names = sorted(set(late.set_env) | set(late.unset_env))
        return None, f"the environment differs from the pool's ({', '.join(names)}) and this is not a Python kernel"
    if warm.late_capable:
        late.set_env["KERNEL_ID"] = spec.kernel_id
        return late, None
    return None, None


async def kernel_request(connection_info: Mapping[str, Any], late: LateValues | None) -> None:
    """One request on the kernel's shell channel: kernel_info (the pool's check that a kernel answers), or the
    silent execute that applies ``late``. Raises if the kernel does not answer or the code fails."""
    client = AsyncKernelClient()
    client.load_connection_info(cast(KernelConnectionInfo, dict(connection_info)))
    client.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=False)
    try:
        if late is None:
            msg_id = client.kernel_info()
        else:
            msg_id = client.execute(late.code(), silent=True, store_history=False, allow_stdin=False)
        deadline = time.monotonic() + KERNEL_REQUEST_TIMEOUT
        while True:
            reply = await client.get_shell_msg(timeout=max(0.01, deadline - time.monotonic()))
            if reply.get("parent_header", {}).get("msg_id") == msg_id:
                break
        content = reply.get("content", {})
        if content.get("status", "ok") != "ok":
            raise RuntimeError(f"{content.get('ename', 'error')}: {content.get('evalue', '')}")
    finally:
        client.stop_channels()


def end_in_background(kernel: RemoteKernel) -> None:
    """Shut down a kernel that a cancelled launch had claimed (a cancelled task cannot wait for it)."""
    _endings.spawn(kernel.shutdown(grace=0))


def pools() -> list[WarmPool]:
    """The running event loop's pools (for the server's metrics, tests and benchmarks)."""
    return [warm for warm in _pools.running() if not warm.pool.closed]


async def drain_pools(*, final: bool = False) -> int:
    """End every pooled kernel of the running event loop and stop refilling; returns how many pools were drained.

    The server extension calls this when the server stops (``final``: no pool starts on this event loop afterwards,
    whatever launch is still in flight). A program that uses the provisioners through jupyter_client without a server
    calls it before its event loop ends (``await drain_pools()``), or its pooled kernels run on until their agents'
    watchdog (``agent_watchdog``) ends them. Without ``final``, a later launch starts its pool again.
    """
    if final:
        _stopped.get("stopped", lambda: True)
    drained = _pools.pop_running()
    await asyncio.gather(*(warm.pool.drain() for warm in drained), return_exceptions=True)
    return len(drained)
