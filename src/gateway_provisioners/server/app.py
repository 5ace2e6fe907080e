"""The jupyter_server extension: remote kernels that survive a server restart, progress events and metrics.

Enable it with ``jupyter server --ServerApp.jpserver_extensions="{'gateway_provisioners.server': True}"`` (or
``jupyter server extension enable gateway_provisioners.server``). What it does, in the order of a kernel's life:

1. when it loads, it makes the server's per-kernel manager :class:`PersistentKernelManager`, registers the progress
   schema on the server's event bus and observes every provisioner's progress events;
2. each remote kernel's provisioner info is saved in the store after its start and each restart, and deleted at its
   shutdown;
3. once the server's event loop runs, every stored kernel is reattached (``load_provisioner_info``): a live one is
   listed under its old id, one that is gone has its record deleted (and, by default, what is left of it removed);
4. when the server stops, remote kernels are by default let go of instead of shut down, so the next server process
   reattaches them (a ``kill -9`` keeps them too: their records were saved when they started).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jupyter_client.provisioning.factory import KernelProvisionerFactory
from jupyter_core.paths import jupyter_data_dir
from jupyter_server.extension.application import ExtensionApp
from jupyter_server.services.kernels.kernelmanager import ServerKernelManager
from traitlets import TraitError

from ..core.errors import BackendUnavailable
from ..core.events import ProgressEvent
from ..core.lifecycle import KernelPhase
from ..provisioners.base import RemoteProvisionerBase
from ..provisioners.settings import Flag, Text, setting
from . import metrics, pools
from .events import SCHEMA, SCHEMA_ID, event_data
from .handlers import HANDLERS
from .manager import PersistentKernelManager, launch_args_to_keep
from .store import STORES, KernelStore, describe, open_store

MANAGER_CLASS = f"{PersistentKernelManager.__module__}.{PersistentKernelManager.__name__}"
RECORD_VERSION = 1


def _default_store_path(app: Any) -> str:
    if app.store == "postgres":
        return ""  # no default database: open_store says what to set
    base = Path(jupyter_data_dir()) / "gateway_provisioners"
    return str(base / ("kernels.sqlite" if app.store == "sqlite" else "kernels"))


class GatewayProvisionersServer(ExtensionApp):
    """Settings of the server extension (``c.GatewayProvisionersServer.<setting>`` or the environment)."""

    name = "gateway_provisioners_server"
    description = "Remote kernels that survive a server restart; start-up progress events; metrics"
    load_other_extensions = True

    store = setting(
        Text, "GP_SERVER_STORE", default="file", choices=STORES,
        help="Where remote kernels are remembered across server restarts: 'file' (one 0600 file per kernel), "
        "'sqlite' (one database file for the servers of one host), 'postgres' (a PostgreSQL database, for servers "
        "on several hosts) or 'none' (not remembered).",
    )  # fmt: skip
    store_path = setting(
        Text, "GP_SERVER_STORE_PATH", default=_default_store_path,
        default_doc="`<jupyter data dir>/gateway_provisioners/kernels`; `.../kernels.sqlite` (sqlite); none (postgres)",
        help="The store's folder (file), database file (sqlite) or libpq connection string or URL (postgres; keep "
        "its password in ~/.pgpass or PGPASSWORD).",
    )  # fmt: skip
    store_scope = setting(
        Text, "GP_SERVER_STORE_SCOPE", default="default",
        help="Name of this server's records in the store: servers that share a store but not their kernels (one "
        "per user, say) each need their own; a server that replaces another keeps its name.",
    )  # fmt: skip
    keep_kernels_on_shutdown = setting(
        Flag, "GP_SERVER_KEEP_KERNELS", default=True,
        help="When the server stops (SIGTERM, Ctrl-C, /api/shutdown), leave remote kernels running for the next "
        "server process to reattach, instead of shutting them down. Needs a store.",
    )  # fmt: skip
    remove_orphans = setting(
        Flag, "GP_SERVER_REMOVE_ORPHANS", default=True,
        help="At start-up, remove what is left of a stored kernel that cannot be reattached (its pod, container, "
        "YARN application or agent), besides deleting its record.",
    )  # fmt: skip

    kernel_store: KernelStore | None = None
    _loaded = False  # jupyter_server runs the start and stop hooks of an extension whose loading failed, too

    @property
    def server(self) -> Any:
        """The ServerApp (typed loosely: its kernel manager and event logger are optional in its own types)."""
        return self.serverapp

    # --- jupyter_server's extension hooks ---------------------------------------------------------------------------

    def initialize_settings(self) -> None:
        try:
            self.kernel_store = open_store(self.store, self.store_path, self.store_scope)
        except Exception as exc:  # jupyter_server goes on without the extension: say so as an error, in one line
            self.log.error("gateway_provisioners.server is not active: %s", " ".join(str(exc).split()))
            raise
        self.phases = metrics.PhaseGauge()
        self._launching: dict[str, str] = {}  # kernel id -> backend, from a launch's first event until ready/failed
        mkm = self.server.kernel_manager
        mkm.gateway_provisioners_extension = self  # how each PersistentKernelManager finds the store
        configured = mkm.kernel_manager_class
        if configured in (MANAGER_CLASS, f"{ServerKernelManager.__module__}.{ServerKernelManager.__name__}"):
            mkm.kernel_manager_class = MANAGER_CLASS
        else:
            self.log.warning(
                "gateway_provisioners.server: kernel_manager_class %s is configured; kernels are not persisted and "
                "errors are not translated unless it derives from %s",
                configured, MANAGER_CLASS,
            )  # fmt: skip
        with contextlib.suppress(Exception):  # already registered by an earlier load in this process
            self.server.event_logger.register_event_schema(SCHEMA)
        RemoteProvisionerBase.progress_observers.append(self.on_progress)
        where = describe(self.store, self.store_path)
        where = f"{self.store} store {where} (scope {self.store_scope})" if self.kernel_store else "no store"
        self.log.info("gateway_provisioners.server: remote kernels are remembered in the %s", where)
        self._loaded = True

    def initialize_handlers(self) -> None:
        self.handlers.extend(HANDLERS)  # before the server's own for the same paths: ours are matched

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        if self._loaded:
            await self.reattach_all()
            await pools.warm_pools(self)

    async def stop_extension(self) -> None:
        """Runs before jupyter_server shuts its kernels down: let go of the remote kernels that are to survive."""
        with contextlib.suppress(ValueError):
            RemoteProvisionerBase.progress_observers.remove(self.on_progress)
        await pools.drain_pools(self)  # pooled kernels belong to no client: none survives the server
        if not self._loaded or self.kernel_store is None:
            return
        if self.keep_kernels_on_shutdown:
            mkm = self.server.kernel_manager
            kept = []
            for kernel_id in list(mkm.list_kernel_ids()):
                km = mkm.get_kernel(kernel_id)
                if isinstance(km, PersistentKernelManager) and km.is_remote and km.has_kernel:
                    mkm.stop_watching_activity(kernel_id)
                    mkm.stop_buffering(kernel_id)
                    await km.provisioner.detach()  # type: ignore[union-attr]
                    km.detach()
                    mkm.remove_kernel(kernel_id)
                    kept.append(kernel_id)
            if kept:
                self.log.info("gateway_provisioners.server: %d remote kernel(s) left running for the next server "
                              "process: %s", len(kept), ", ".join(kept))  # fmt: skip
        # The store stays open: jupyter_server shuts the other kernels down after this, and each shutdown deletes its
        # record. The process ends right after.

    # --- the store --------------------------------------------------------------------------------------------------

    async def save(self, km: PersistentKernelManager) -> None:
        if self.kernel_store is None:
            return
        record = {
            "version": RECORD_VERSION,
            "kernel_id": km.kernel_id,
            "kernel_name": km.kernel_name,
            "provisioner_info": await km.provisioner.get_provisioner_info(),  # type: ignore[union-attr]
            "launch_args": launch_args_to_keep(getattr(km, "_launch_args", {}) or {}),
            "saved_at": time.time(),
        }
        try:
            await asyncio.to_thread(self.kernel_store.save, km.kernel_id, record)
        except Exception as exc:  # the kernel runs fine; it just will not survive a server restart
            self.log.error("gateway_provisioners.server: cannot store kernel %s: %s", km.kernel_id,
                           self.kernel_store.describe_error(exc))  # fmt: skip

    async def forget(self, kernel_id: str) -> None:
        if self.kernel_store is None:
            return
        self.phases.forget(kernel_id)
        try:
            await asyncio.to_thread(self.kernel_store.delete, kernel_id)
        except Exception as exc:
            self.log.error("gateway_provisioners.server: cannot delete kernel %s's record: %s", kernel_id,
                           self.kernel_store.describe_error(exc))  # fmt: skip

    # --- reattaching at start-up ------------------------------------------------------------------------------------

    async def reattach_all(self) -> None:
        if self.kernel_store is None:
            return
        try:
            records = await asyncio.to_thread(self.kernel_store.load_all)
        except Exception as exc:  # the database is down: the server runs, its stored kernels wait for the next start
            self.log.error("gateway_provisioners.server: cannot read the store, no kernel reattached: %s",
                           self.kernel_store.describe_error(exc))  # fmt: skip
            return
        if not records:
            return
        self.log.info("gateway_provisioners.server: reattaching %d stored kernel(s)", len(records))
        results = await asyncio.gather(
            *(self.reattach(kernel_id, record) for kernel_id, record in records.items()), return_exceptions=True
        )
        alive = sum(1 for r in results if r is True)
        self.log.info("gateway_provisioners.server: %d reattached, %d not", alive, len(records) - alive)

    async def reattach(self, kernel_id: str, record: dict[str, Any]) -> bool:
        """Make ``kernel_id`` a kernel of this server again if it still runs; else delete its record. True if alive.

        jupyter_client has no public way to adopt a running kernel, so this does what the mapping kernel manager's
        start does after a launch (its ``_kernels``, ports and connection count, the restarter, activity watching,
        the "dead" callback), with ``load_provisioner_info`` in place of the launch.
        """
        mkm = self.server.kernel_manager
        backend = str((record.get("provisioner_info") or {}).get("gateway_provisioners", {}).get("backend", "unknown"))
        if kernel_id in mkm:
            return True
        km = None
        try:
            km = mkm.kernel_manager_factory(
                connection_file=str(Path(mkm.connection_dir) / f"kernel-{kernel_id}.json"),
                parent=mkm,
                log=mkm.log,
                kernel_name=record["kernel_name"],
                kernel_spec_manager=mkm.kernel_spec_manager,
            )
            km.kernel_id = kernel_id
            km.provisioner = KernelProvisionerFactory.instance(parent=mkm).create_provisioner_instance(
                kernel_id, km.kernel_spec, parent=km
            )
            await km.provisioner.load_provisioner_info(record["provisioner_info"])
            alive = await km.provisioner.poll() is None
        except BackendUnavailable as exc:  # the platform is down, not the kernel: keep the record for the next start
            self.log.warning("gateway_provisioners.server: cannot reach kernel %s's platform now, kept for the next "
                             "start: %s", kernel_id, exc)  # fmt: skip
            return False
        except Exception as exc:  # a kernel spec removed since, a backend that cannot be reached, a bad record
            self.log.warning("gateway_provisioners.server: cannot reattach kernel %s: %s", kernel_id, exc)
            alive = False
        if not alive:
            await self._orphaned(kernel_id, km, backend)
            return False
        assert km is not None
        km.load_connection_info(km.provisioner.connection_info)
        # A restart of this kernel relaunches with these: like its first launch, the server's environment with the
        # request's KERNEL_* values over it (the provisioner passes on only what its allowlist and schema accept).
        launch_args = dict(record.get("launch_args") or {})
        launch_args["env"] = {**os.environ, **(launch_args.get("env") or {})}
        km._launch_args = launch_args
        km._attempted_start = True  # so a later shutdown or restart makes its own 'ready' future, as after a start
        km.ready.set_result(None)
        km.execution_state = "idle"  # the activity watcher corrects it with the kernel's next status message
        km.reason = ""
        km.last_activity = datetime.now(timezone.utc)
        km.start_restarter()
        km._connect_control_socket()  # as jupyter_client's post-start does
        mkm._kernels[kernel_id] = km
        mkm._kernel_connections[kernel_id] = 0
        mkm._kernel_ports[kernel_id] = km.ports
        mkm.start_watching_activity(kernel_id)
        mkm.add_restart_callback(kernel_id, lambda: mkm._handle_kernel_died(kernel_id), "dead")
        if not mkm._initialized_culler:
            mkm.initialize_culler()
        backend = km.provisioner.kernel.backend.name if km.provisioner.kernel else backend
        metrics.REATTACHED.labels(backend).inc()
        self.phases.move(kernel_id, backend, str(KernelPhase.READY), final=False)
        self.publish(kernel_id, record["kernel_name"], backend, "ready", None, "reattached after a server restart")
        self.log.info("gateway_provisioners.server: kernel %s [%s] reattached", kernel_id, backend)
        await km._save()  # the provisioner may know more now; and a reattached kernel that dies is forgotten too
        return True

    async def _orphaned(self, kernel_id: str, km: Any, backend: str) -> None:
        metrics.ORPHANED.labels(backend).inc()
        self.log.info("gateway_provisioners.server: stored kernel %s [%s] is gone; its record is deleted",
                      kernel_id, backend)  # fmt: skip
        if self.remove_orphans and km is not None and km.provisioner is not None:
            try:
                await km.provisioner.cleanup(restart=False)
            except Exception as exc:
                self.log.warning("gateway_provisioners.server: cannot remove what is left of kernel %s: %s",
                                 kernel_id, exc)  # fmt: skip
        await self.forget(kernel_id)

    # --- progress: events and metrics -------------------------------------------------------------------------------

    def on_progress(self, provisioner: RemoteProvisionerBase, event: ProgressEvent) -> None:
        """Every phase of every remote kernel: the event bus, the metrics."""
        backend = provisioner.kernel.backend.name if provisioner.kernel is not None else "unknown"
        kernel_name = str(getattr(provisioner.parent, "kernel_name", "") or "")
        phase = KernelPhase(event.phase)
        if event.previous == KernelPhase.NEW.value:  # a launch begins (restarts in place do not count)
            metrics.LAUNCHES.labels(backend, kernel_name).inc()
            self._launching[event.kernel_id] = backend
        elif phase is KernelPhase.READY and self._launching.pop(event.kernel_id, None) is not None:
            metrics.LAUNCH_SECONDS.labels(backend).observe(event.since_start)
        elif phase is KernelPhase.FAILED:
            self._launching.pop(event.kernel_id, None)
            metrics.FAILURES.labels(backend, type(event.error).__name__ if event.error else "unknown").inc()
        self.phases.move(event.kernel_id, backend, phase.value, final=phase.is_final)
        self.publish(event.kernel_id, kernel_name, backend, phase.value, event.previous, event.message, event)

    def launch_failed(self, km: Any, exc: BaseException) -> None:
        """A start failed. With pending kernels, jupyter_server listed the kernel when the request came and would
        keep it listed as 'starting': it leaves the list now. A start that failed before the provisioner's lifecycle
        began (a bad value, a refused user, an unknown setting) had no progress event: count it and tell subscribers
        here."""
        self._unlist_pending(str(getattr(km, "kernel_id", "") or ""))
        provisioner = getattr(km, "provisioner", None)
        if isinstance(provisioner, RemoteProvisionerBase) and provisioner.kernel is not None:
            return  # the lifecycle's FAILED event has done both
        if not isinstance(provisioner, RemoteProvisionerBase) and not isinstance(exc, TraitError):
            return  # not one of our kernels
        metrics.FAILURES.labels("none", type(exc).__name__).inc()
        kernel_id = str(getattr(km, "kernel_id", "") or "")
        if kernel_id:
            self.publish(kernel_id, km.kernel_name, "none", "failed", None, " ".join(str(exc).split()), error=exc)

    def _unlist_pending(self, kernel_id: str) -> None:
        mkm = self.server.kernel_manager
        if not kernel_id or not getattr(mkm, "use_pending_kernels", False):
            return
        mkm.remove_kernel(kernel_id)  # as jupyter_server does with a kernel that died
        mkm._pending_kernels.pop(kernel_id, None)
        mkm._kernel_connections.pop(kernel_id, None)

    def publish(
        self,
        kernel_id: str,
        kernel_name: str,
        backend: str,
        phase: str,
        previous: str | None,
        message: str,
        event: ProgressEvent | None = None,
        error: BaseException | None = None,
    ) -> None:
        if event is not None:
            data = event_data(event, backend, kernel_name)
        else:
            data = {"kernel_id": kernel_id, "kernel_name": kernel_name, "backend": backend, "phase": phase,
                    "previous": previous, "message": message, "elapsed": 0.0, "since_start": 0.0}  # fmt: skip
            if error is not None:
                data["error"] = type(error).__name__
        try:
            self.server.event_logger.emit(schema_id=SCHEMA_ID, data=data)
        except Exception as exc:  # a subscriber's trouble must not reach a launch
            self.log.debug("gateway_provisioners.server: progress event not published: %s", exc)
