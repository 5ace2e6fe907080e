"""Warm pools and the server's life: pooled kernel specs start their pools with the server, and every pooled kernel
ends when it stops.

Pooled kernels are never stored: they belong to no client until claimed (a claimed kernel is stored like any other),
so a server that restarts has none to reattach; the pools of a server that died without stopping end with their
agents' watchdog (``agent_watchdog``).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from jupyter_client.provisioning.factory import KernelProvisionerFactory

from ..provisioners import pooling
from ..provisioners.base import RemoteProvisionerBase


async def warm_pools(app: Any) -> int:
    """Start the pool of every kernel spec whose provisioner sets ``pool_size``; returns how many. A spec that cannot
    be read or configured is skipped with one line (its launches will say the same)."""
    mkm = app.serverapp.kernel_manager
    ksm = mkm.kernel_spec_manager
    started = 0
    try:
        names = sorted(await asyncio.to_thread(lambda: list(ksm.find_kernel_specs())))
    except Exception as exc:
        app.log.warning("gateway_provisioners.server: no pools started, kernel specs not readable: %s", exc)
        return 0
    for name in names:
        try:
            spec = await asyncio.to_thread(ksm.get_kernel_spec, name)
            factory = KernelProvisionerFactory.instance(parent=mkm)
            if not factory.is_provisioner_available(spec):
                continue
            provisioner = factory.create_provisioner_instance(str(uuid.uuid4()), spec, parent=mkm)
            if isinstance(provisioner, RemoteProvisionerBase) and provisioner.pool_size > 0:
                await pooling.ensure_pool(provisioner, name)
                started += 1
        except Exception as exc:
            app.log.warning(
                "gateway_provisioners.server: no pool for kernel spec %s: %s", name, " ".join(str(exc).split())
            )
    return started


async def drain_pools(app: Any) -> None:
    """End every pooled kernel of this server (at stop, before the server shuts its own kernels down)."""
    count = await pooling.drain_pools(final=True)
    if count:
        app.log.info("gateway_provisioners.server: %d warm pool(s) drained", count)
