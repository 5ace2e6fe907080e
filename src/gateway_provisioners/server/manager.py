"""The per-kernel manager the extension puts into jupyter_server: persistence and HTTP errors around each kernel.

jupyter_server makes one ``ServerKernelManager`` per kernel through its mapping kernel manager's
``kernel_manager_class``; the extension sets that to :class:`PersistentKernelManager` when it loads (a configured
class of the operator's own is left alone, with a warning). Every method of jupyter_server's is kept; this class
only adds, after a start and a restart, saving the provisioner's info, and after a shutdown, forgetting it — and turns
our errors into ``HTTPError`` inside the start, where jupyter_server's ``ready`` future receives them, so the REST
client gets ``400``/``403``/``503``/``504`` with the reason instead of ``500 Unhandled error``.

Only kernels of our provisioners (:class:`RemoteProvisionerBase`) are persisted; others pass through untouched.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any, ClassVar

from jupyter_server.services.kernels.kernelmanager import ServerKernelManager

from ..provisioners.base import RemoteProvisionerBase
from .errors import as_http_error

if TYPE_CHECKING:
    from .app import GatewayProvisionersServer


def launch_args_to_keep(launch_args: dict[str, Any]) -> dict[str, Any]:
    """What a reattached kernel's restart needs of its launch arguments: the folder and the client's ``KERNEL_*``
    values. Nothing else of the server's environment is stored."""
    env = launch_args.get("env") or {}
    kept: dict[str, Any] = {"env": {k: str(v) for k, v in env.items() if k.startswith("KERNEL_")}}
    if launch_args.get("cwd"):
        kept["cwd"] = str(launch_args["cwd"])
    return kept


class PersistentKernelManager(ServerKernelManager):
    """jupyter_server's kernel manager, saving remote kernels' provisioner info in the extension's store."""

    @property
    def extension(self) -> GatewayProvisionersServer | None:
        return getattr(self.parent, "gateway_provisioners_extension", None)

    @property
    def is_remote(self) -> bool:
        return isinstance(self.provisioner, RemoteProvisionerBase)

    async def _async_pre_start_kernel(self, **kw: Any) -> Any:
        try:
            return await super()._async_pre_start_kernel(**kw)
        except Exception as exc:
            raise self._translated(exc) from exc

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        try:
            await super()._async_launch_kernel(kernel_cmd, **kw)
        except Exception as exc:
            raise self._translated(exc) from exc

    def _translated(self, exc: Exception) -> Exception:
        extension = self.extension
        if extension is not None:
            extension.launch_failed(self, exc)
        return as_http_error(exc) or exc

    async def start_kernel(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        try:
            await super().start_kernel(*args, **kwargs)
        except BaseException:
            self._drop_failed_start()
            raise
        await self._save()

    def _drop_failed_start(self) -> None:
        """Take a kernel whose start failed off the mapping kernel manager's pending list.

        jupyter_client (8.x) logs a failed start but leaves its id among the pending kernels; at the server's stop,
        ``shutdown_all`` then asks jupyter_server to shut it down, which raises "Kernel does not exist" and ends the
        server's cleanup halfway: the process never exits (in a pod: until SIGKILL). With pending kernels on, the
        failed kernel stays listed and jupyter_server removes it itself, so only the blocking mode is handled.
        """
        pending = getattr(self.parent, "_pending_kernels", None)
        if isinstance(pending, dict) and self.kernel_id and not getattr(self.parent, "use_pending_kernels", False):
            pending.pop(self.kernel_id, None)

    async def restart_kernel(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        await super().restart_kernel(*args, **kwargs)
        await self._save()

    async def shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:  # type: ignore[override]
        try:
            await super().shutdown_kernel(now=now, restart=restart)
        finally:
            if not restart:
                await self._forget()

    async def _save(self) -> None:
        extension = self.extension
        if extension is not None and self.is_remote and self.has_kernel and self.kernel_id:
            await extension.save(self)
            if not self._watching_death:
                # jupyter_server drops a kernel whose automatic restarts failed without shutting it down: forget it too.
                self.add_restart_callback(self._on_dead, "dead")
                self._watching_death = True

    _watching_death = False
    _forgetting: ClassVar[set[asyncio.Task[None]]] = set()

    def _on_dead(self) -> None:
        task = asyncio.ensure_future(self._forget())
        self._forgetting.add(task)  # keep a reference until done: the loop holds tasks only weakly
        task.add_done_callback(self._forgetting.discard)

    async def _forget(self) -> None:
        extension = self.extension
        if extension is not None and self.kernel_id:
            await extension.forget(self.kernel_id)

    def detach(self) -> None:
        """Let go of the kernel without ending it (the server stops and keeps its remote kernels): no restarter, no
        sockets, no connection file; the agent, the kernel and the stored record stay."""
        self.stop_restarter()
        self._close_control_socket()
        if self.connection_file and os.path.exists(self.connection_file):
            self.cleanup_connection_file()
