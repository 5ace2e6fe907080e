"""The Docker backend: the agent runs as the main process of one container per kernel.

One :class:`ContainerTracker` per engine and event loop follows every kernel container through the engine's one
events stream (``die``, ``destroy``, ``start``, ``oom``), so :meth:`BackendHandle.observation` is always current and
``poll()`` never calls the engine. Containers carry the kernel id and an owner label; they are found by label for
reattaching, listing and reaping.

On a bridge (or any user-defined) network each container has its own network namespace: the server assigns the ports
and key and reads the container's IP from the engine (``ConnectionMode.ASSIGNED``, no callback). On host networking
the agent binds its ports on the host and calls back (``ConnectionMode.CALLBACK``).

The container is created stopped; the agent's launch parameters (token, HMAC key) are written into it as a 0600 file
owned by the kernel's user, and only then is it started, so ``docker inspect`` shows none of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, ClassVar

from ..core.backend import BackendHandle, Observation, PlatformState
from ..core.errors import ImagePullError, LaunchError
from ..core.launch import LaunchSpec
from .docker_common import (
    KERNEL_ID_LABEL,
    LAUNCH_ARGS,
    LAUNCH_DIR,
    OWNER_LABEL,
    ContainerRequest,
    DockerEngine,
    EngineBackend,
    HandleTracker,
    call_or_undo,
    engine_message,
    params_archive,
    tail_text,
)

log = logging.getLogger("gateway_provisioners.docker")

_EVENTS = ("start", "die", "oom", "destroy", "pause", "unpause")


class ContainerTracker(HandleTracker):
    """The shared observer: kernel id → handle, fed by the engine's events stream and by inspections."""

    key = "docker"

    def __init__(self, engine: DockerEngine) -> None:
        super().__init__(engine)
        self._early: dict[str, list[dict[str, Any]]] = {}  # events seen before a container's id was known
        self._unsubscribe = engine.subscribe({"type": ["container"]}, self._on_event, self._resync)

    def untrack(self, handle: BackendHandle) -> bool:
        if not super().untrack(handle):
            return False
        self._early.pop(handle.kernel_id, None)
        return True

    async def refresh_restored(self, handle: BackendHandle) -> None:
        await self.refresh(handle)

    def _on_event(self, event: dict[str, Any]) -> None:
        action = str(event.get("Action") or event.get("status") or "")
        if action not in _EVENTS:
            return
        attributes = (event.get("Actor") or {}).get("Attributes") or {}
        handle = self.handles.get(attributes.get(KERNEL_ID_LABEL, ""))
        if handle is None:
            return
        container_id = (event.get("Actor") or {}).get("ID") or event.get("id")
        known = handle.data.get("container_id")
        if known is None:
            self._early.setdefault(handle.kernel_id, []).append(event)  # replayed once submit knows the id
            return
        if container_id != known:
            return  # an older container of the same kernel (a relaunch): not this handle's concern
        self._apply(handle, action, attributes)

    def _apply(self, handle: BackendHandle, action: str, attributes: dict[str, Any]) -> None:
        if action == "die":
            code = _int(attributes.get("exitCode"))
            oom = handle.data.get("oom_killed", False)
            reason = f"container exited with code {code}" + (" (out of memory)" if oom else "")
            handle.update(
                Observation(PlatformState.EXITED, host=handle.data.get("name"), reason=reason, exit_code=code)
            )
        elif action == "oom":
            handle.data["oom_killed"] = True
        elif action == "destroy":
            handle.update(Observation(PlatformState.GONE, reason="container removed", exit_code=_exit_of(handle)))
        elif action in ("start", "unpause"):
            self.refresh_soon(handle)

    def replay_early(self, handle: BackendHandle) -> None:
        for event in self._early.pop(handle.kernel_id, []):
            if ((event.get("Actor") or {}).get("ID") or event.get("id")) == handle.data.get("container_id"):
                attributes = (event.get("Actor") or {}).get("Attributes") or {}
                self._apply(handle, str(event.get("Action") or event.get("status")), attributes)

    def refresh_soon(self, handle: BackendHandle) -> None:
        task = asyncio.ensure_future(self.refresh(handle))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def refresh(self, handle: BackendHandle) -> None:
        """Re-read one container from the engine (after a start event, a reconnect, a reattach)."""
        docker = self.engine.docker
        try:
            info = await self.engine.call(self.engine.api.inspect_container, handle.data["container_id"])
        except docker.errors.NotFound:
            handle.update(Observation(PlatformState.GONE, reason="container not found", exit_code=_exit_of(handle)))
            return
        handle.update(observe_container(info, handle.data))

    def _resync(self) -> None:
        for handle in list(self.handles.values()):
            if handle.data.get("container_id"):
                self.refresh_soon(handle)


def observe_container(info: dict[str, Any], data: dict[str, Any]) -> Observation:
    """An engine ``inspect`` result → an observation."""
    state = info.get("State") or {}
    status = state.get("Status", "")
    name = str(info.get("Name", "")).lstrip("/") or data.get("name")
    if status in ("running", "paused"):
        return Observation(PlatformState.RUNNING, ip=container_ip(info, data), host=name, reason=f"container {status}")
    if status in ("exited", "dead"):
        code = _int(state.get("ExitCode"))
        oom = " (out of memory)" if state.get("OOMKilled") else ""
        detail = f": {state['Error']}" if state.get("Error") else ""
        return Observation(
            PlatformState.EXITED, host=name, exit_code=code, reason=f"container exited with code {code}{oom}{detail}"
        )
    if status == "removing":
        return Observation(PlatformState.GONE, host=name, reason="container being removed")
    if status == "restarting":
        return Observation(PlatformState.STARTING, host=name, reason="container restarting")
    return Observation(PlatformState.PENDING, host=name, reason=f"container {status or 'created'}")


def container_ip(info: dict[str, Any], data: dict[str, Any]) -> str | None:
    if data.get("network") == "host":
        return str(data.get("host_ip") or "127.0.0.1")
    networks = (info.get("NetworkSettings") or {}).get("Networks") or {}
    wanted = networks.get(data.get("network") or "")
    if wanted and wanted.get("IPAddress"):
        return str(wanted["IPAddress"])
    for settings in networks.values():  # e.g. the network was given by id
        if settings.get("IPAddress"):
            return str(settings["IPAddress"])
    return None


def _image_user(info: dict[str, Any]) -> str:
    return str((info.get("Config") or {}).get("User") or "")


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _exit_of(handle: BackendHandle) -> int | None:
    return handle.observation.exit_code


class DockerBackend(EngineBackend):
    """Kernels as containers on one Docker engine.

    Parameters
    ----------
    engine:
        The shared engine (client, pool, events stream): :func:`docker_common.shared_engine`.
    request:
        The default container request (image, network, user, resources, mounts), for embedders; a provisioner
        decides one per launch (``LaunchSpec.request``).
    """

    name: ClassVar[str] = "docker"
    tracker_class = ContainerTracker
    serialized_keys = ("container_id", "name", "network", "host_ip", "kernel_pgid")
    tracker: ContainerTracker

    # --- launching --------------------------------------------------------------------------------------------------

    async def submit(self, spec: LaunchSpec) -> BackendHandle:
        await self.engine.connect()
        request = self.request_for(spec)
        name = f"gp-kernel-{spec.kernel_id}"
        handle = BackendHandle(
            spec.kernel_id, data={"name": name, "network": request.network, "host_ip": request.host_ip}
        )
        handle.update(Observation(PlatformState.PENDING, reason=f"creating container from {request.image}"))
        await self.engine.stream_ready()
        self.tracker.track(handle)  # before the container exists: no event of it can be missed
        try:
            ids = request.kernel_ids(await self._ensure_image(request))
            params = spec.agent_params()
            info = await call_or_undo(
                self.engine, self._create_and_start, self._remove, request, spec, name, params, ids
            )
        except BaseException:
            self.tracker.untrack(handle)
            raise
        handle.data["container_id"] = info["Id"]
        handle.update(observe_container(info, handle.data))
        self.tracker.replay_early(handle)
        log.debug("kernel %s: container %s %s", spec.kernel_id, name, handle.observation.reason)
        return handle

    async def _ensure_image(self, request: ContainerRequest) -> str:
        """Apply the pull policy; a missing image that cannot be had fails here, with the engine's message.

        Returns the image's ``USER`` (the kernel's user when the request names none)."""
        docker = self.engine.docker
        present = True
        info: dict[str, Any] = {}
        try:
            info = await self.engine.call(self.engine.api.inspect_image, request.image)
        except docker.errors.ImageNotFound:
            present = False
        if present and request.pull_policy != "always":
            return _image_user(info)
        if request.pull_policy == "never":
            raise ImagePullError(
                f"image {request.image!r} is not on the Docker engine and the pull policy is 'never'",
                hint="Build or load the image on the engine, or set image_pull_policy (GP_DOCKER_PULL_POLICY)",
            )
        try:
            await self.engine.call(self.engine.api.pull, request.image)
        except docker.errors.APIError as exc:
            if present:
                log.warning("pulling %s failed (%s); using the local image", request.image, engine_message(exc))
                return _image_user(info)
            raise ImagePullError(f"cannot pull image {request.image!r}: {engine_message(exc)}") from None
        return _image_user(await self.engine.call(self.engine.api.inspect_image, request.image))

    def _create_and_start(
        self, request: ContainerRequest, spec: LaunchSpec, name: str, params: dict[str, Any], ids: tuple[int, int]
    ) -> dict[str, Any]:
        """In the pool: create the container stopped, write the launch parameters into it, start and inspect it.

        The parameters (token, HMAC key) go in a file, never in the container's configuration, which anyone allowed
        to inspect containers can read. A container that cannot be prepared or started is removed.
        """
        docker = self.engine.docker
        api = self.engine.api
        host_config: dict[str, Any] = {"network_mode": request.network, "init": False}
        if request.nano_cpus:
            host_config["nano_cpus"] = request.nano_cpus
        if request.memory:
            host_config["mem_limit"] = request.memory
        if request.gpus:
            host_config["device_requests"] = [docker.types.DeviceRequest(count=request.gpus, capabilities=[["gpu"]])]
        mounts = request.docker_mounts(docker.types)
        if mounts:
            host_config["mounts"] = mounts
        try:
            created = api.create_container(
                image=request.image,
                entrypoint=request.command,  # None: the image's ENTRYPOINT runs the agent
                command=LAUNCH_ARGS,  # the entry point passes them on to the agent: where its parameters are
                name=name,
                environment=request.environment(),
                labels=request.labels(spec.kernel_id, spec.username),
                user=request.user or "",
                working_dir=request.working_dir or spec.cwd or None,
                host_config=api.create_host_config(**host_config),
                detach=True,
            )
        except docker.errors.ImageNotFound as exc:
            raise ImagePullError(f"image {request.image!r}: {engine_message(exc)}") from None
        except docker.errors.APIError as exc:
            raise LaunchError(f"the Docker engine refused the container: {engine_message(exc)}") from None
        container_id = created["Id"]
        try:
            api.put_archive(container_id, "/", params_archive(params, *ids))
        except docker.errors.APIError as exc:
            with contextlib.suppress(docker.errors.APIError):
                api.remove_container(container_id, force=True)
            raise LaunchError(f"cannot write the launch parameters into {LAUNCH_DIR}: {engine_message(exc)}") from None
        try:
            api.start(container_id)
        except docker.errors.APIError as exc:
            with contextlib.suppress(docker.errors.APIError):
                api.remove_container(container_id, force=True)
            raise LaunchError(f"the container did not start: {engine_message(exc)}") from None
        return dict(api.inspect_container(container_id))

    def _remove(self, info: dict[str, Any]) -> None:
        """In the pool: remove a container made for a launch that was cancelled meanwhile."""
        with contextlib.suppress(self.engine.docker.errors.APIError):
            self.engine.api.remove_container(info["Id"], force=True)

    # --- running and ending -----------------------------------------------------------------------------------------

    async def terminate(self, handle: BackendHandle, grace: float = 0.0) -> None:
        """Stop the container (SIGTERM, then SIGKILL after ``grace``) and remove it. No-op if it is gone."""
        container_id = handle.data.get("container_id")
        docker = self.engine.docker
        if container_id:
            try:
                if grace > 0 and handle.observation.state is PlatformState.RUNNING:
                    await self.engine.call(self.engine.api.stop, container_id, timeout=max(1, int(grace + 0.999)))
                await self.engine.call(self.engine.api.remove_container, container_id, force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if "already in progress" not in str(exc):
                    raise
        if handle.observation.state is not PlatformState.GONE:
            handle.update(Observation(PlatformState.GONE, reason="container removed", exit_code=_exit_of(handle)))
        self.tracker.untrack(handle)

    async def log_tail(self, handle: BackendHandle, lines: int = 20) -> list[str]:
        container_id = handle.data.get("container_id")
        if not container_id:
            return []
        try:
            raw = await self.engine.call(self.engine.api.logs, container_id, stdout=True, stderr=True, tail=lines)
        except self.engine.docker.errors.APIError:
            return []
        return tail_text(raw, lines)

    # --- persistence and housekeeping -------------------------------------------------------------------------------

    async def list_owned(self, owner: str | None = None) -> list[dict[str, Any]]:
        """Every container carrying the owner label (this backend's owner unless given)."""
        await self.engine.connect()
        items = await self.engine.call(self.engine.api.containers, all=True, filters=self.owner_filter(owner))
        return [
            {
                "kernel_id": (item.get("Labels") or {}).get(KERNEL_ID_LABEL, ""),
                "container_id": item["Id"],
                "name": (item.get("Names") or ["?"])[0].lstrip("/"),
                "state": item.get("State", ""),
                "status": item.get("Status", ""),
                "owner": (item.get("Labels") or {}).get(OWNER_LABEL, ""),
            }
            for item in items
        ]

    async def reap(
        self, live_kernel_ids: set[str] | None = None, *, owner: str | None = None, dry_run: bool = False
    ) -> list[dict[str, Any]]:
        """Remove owned containers whose kernel no longer exists; returns what was (or would be) removed.

        With ``live_kernel_ids`` (the kernels the server knows), every owned container of another kernel goes. Without
        it, only containers that are no longer running go (their agent, and so their kernel, has ended).
        """
        removed = []
        for item in await self.list_owned(owner):
            if live_kernel_ids is not None:
                orphan = item["kernel_id"] not in live_kernel_ids
            else:  # a kernel this process still tracks is not an orphan, whatever its container's state
                orphan = item["state"] != "running" and item["kernel_id"] not in self.tracker.handles
            if not orphan:
                continue
            if not dry_run:
                with contextlib.suppress(self.engine.docker.errors.NotFound):
                    await self.engine.call(self.engine.api.remove_container, item["container_id"], force=True)
            removed.append(item)
        return removed

    async def close(self) -> None:
        """The engine is shared by every kernel of this loop: closing one backend leaves it running."""
