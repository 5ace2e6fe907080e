"""The Docker Swarm backend: the agent runs as the one task of a service per kernel.

Services are made with restart condition ``none`` (a kernel that ends stays ended; the provisioner decides about
restarts) and the image given by its local id when the manager has it, so the engine never asks a registry for a
locally built image (a tag would make every node try a pull first). Task states map onto the platform states.

The agent's launch parameters (token, HMAC key) travel in a Swarm secret of their own, mounted as a 0600 file owned by
the kernel's user, never in the service's spec (which ``docker service inspect`` shows). The secret's name and labels
carry the kernel id and owner; it is removed with the service, after a failed launch, and by the reaper.

The shared observer is one :class:`ServiceTracker` per engine and loop: one batched ``tasks`` query for all tracked
services per interval (fast while a kernel starts, slow once all run), woken early by the engine's one events stream
(a task container dying on this node, a service removed), so ``poll()`` is a cache read and a killed task is seen at
once on this node and within a second elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any, ClassVar

from ..core.backend import BackendHandle, Observation, PlatformState
from ..core.errors import ImagePullError, LaunchError, Unschedulable
from ..core.launch import LaunchSpec
from .docker_common import (
    KERNEL_ID_LABEL,
    LAUNCH_ARGS,
    LAUNCH_PARAMS_FILE,
    OWNER_LABEL,
    ContainerRequest,
    DockerEngine,
    EngineBackend,
    HandleTracker,
    call_or_undo,
    engine_message,
    params_json,
    tail_text,
)

log = logging.getLogger("gateway_provisioners.swarm")

SERVICE_ID_LABEL = "com.docker.swarm.service.id"
FAST_INTERVAL = 0.25  # while some kernel is starting
SLOW_INTERVAL = 1.0  # once every tracked kernel runs (bounds the delay for tasks on other nodes)
STOP_GRACE_NS = 2_000_000_000  # the agent ends its kernel on SIGTERM well within this
SECRET_PREFIX = "gp-launch-"
_PENDING_STATES = ("new", "allocated", "pending", "assigned", "accepted", "preparing", "ready")


class ServiceTracker(HandleTracker):
    """kernel id → handle for every tracked service; refreshed by one batched task query."""

    key = "swarm"

    def __init__(self, engine: DockerEngine) -> None:
        super().__init__(engine)
        self.launching: set[str] = set()  # kernels whose secret exists and whose service is being made
        self._wake = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self._node_addr: dict[str, str] = {}
        self._unsubscribe = engine.subscribe({"type": ["container", "service"]}, self._on_event, self._wake.set)

    def track(self, handle: BackendHandle) -> None:
        super().track(handle)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.ensure_future(self._poll_loop())
        self._wake.set()

    async def refresh_restored(self, handle: BackendHandle) -> None:
        handle.data["t0"] = time.monotonic()
        await self.refresh_all()

    def _on_event(self, event: dict[str, Any]) -> None:
        attributes = (event.get("Actor") or {}).get("Attributes") or {}
        if event.get("Type") == "container" and attributes.get(KERNEL_ID_LABEL) not in self.handles:
            return
        if event.get("Action") in ("die", "start", "destroy", "oom", "remove", "update"):
            self._wake.set()

    async def _poll_loop(self) -> None:
        while self.handles:
            self._wake.clear()
            try:
                await self.refresh_all()
            except Exception as exc:  # an engine hiccup: keep the last observations, try again
                log.warning("listing Swarm tasks failed: %s", exc)
            starting = any(not h.observation.state.is_over and h.observation.state is not PlatformState.RUNNING
                           for h in self.handles.values())  # fmt: skip
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FAST_INTERVAL if starting else SLOW_INTERVAL)

    async def refresh_all(self) -> None:
        services = {h.data["service_id"]: h for h in list(self.handles.values()) if h.data.get("service_id")}
        if not services:
            return
        for _ in range(3):
            try:
                tasks = await self.engine.call(self.engine.api.tasks, filters={"service": list(services)})
                break
            except self.engine.docker.errors.NotFound:
                # A service was removed (from outside, or by a terminate in flight): find which, then ask again.
                alive = {s["ID"] for s in await self.engine.call(self.engine.api.services)}
                for sid, handle in services.items():
                    if sid not in alive and handle.observation.state is not PlatformState.GONE:
                        handle.update(
                            Observation(
                                PlatformState.GONE, reason="service removed", exit_code=handle.observation.exit_code
                            )
                        )
                services = {sid: h for sid, h in services.items() if sid in alive}
                if not services:
                    return
        else:
            return  # services keep disappearing (a mass shutdown): the next round sees what is left
        newest: dict[str, dict[str, Any]] = {}
        for task in tasks:
            sid = task.get("ServiceID")
            if sid in services and (sid not in newest or task.get("CreatedAt", "") > newest[sid].get("CreatedAt", "")):
                newest[sid] = task
        existing: set[str] | None = None
        for sid, handle in services.items():
            if handle.observation.state is PlatformState.GONE:
                continue
            task = newest.get(sid)
            if task is None:
                if existing is None:
                    existing = {
                        s["ID"]
                        for s in await self.engine.call(self.engine.api.services, filters={"id": list(services)})
                    }
                if sid not in existing:
                    handle.update(
                        Observation(
                            PlatformState.GONE, reason="service removed", exit_code=handle.observation.exit_code
                        )
                    )
                continue
            observation = await self.observe_task(task, handle)
            if observation != handle.observation:
                handle.update(observation)

    async def observe_task(self, task: dict[str, Any], handle: BackendHandle) -> Observation:
        """A Swarm task → an observation (state mapping in docs/docker.md)."""
        status = task.get("Status") or {}
        state = str(status.get("State", "new"))
        message = str(status.get("Err") or status.get("Message") or state)
        container = status.get("ContainerStatus") or {}
        if container.get("ContainerID"):
            handle.data["container_id"] = container["ContainerID"]
        node = task.get("NodeID", "")
        if state in _PENDING_STATES:
            reason = f"task {state}: {message}"
            if (
                state == "pending"
                and "no suitable node" in message
                and time.monotonic() - handle.data.get("t0", 0) > 10
            ):
                return Observation(
                    PlatformState.FAILED, reason=reason, error=Unschedulable(f"no node can run the kernel: {message}")
                )
            return Observation(PlatformState.PENDING, reason=reason)
        if state == "starting":
            return Observation(PlatformState.STARTING, reason="task starting", host=node)
        if state == "running":
            ip = await self._task_ip(task, handle)
            if ip is None:
                return Observation(PlatformState.STARTING, reason="task running, address not known yet", host=node)
            return Observation(PlatformState.RUNNING, ip=ip, host=node, reason="task running")
        if state == "rejected":
            kind = ImagePullError if "image" in message.lower() else LaunchError
            return Observation(
                PlatformState.FAILED,
                reason=f"task rejected: {message}",
                error=kind(f"Swarm rejected the kernel's task: {message}"),
            )
        code = container.get("ExitCode")
        if state in ("complete", "failed"):
            code = 0 if state == "complete" and code is None else code
            return Observation(PlatformState.EXITED, exit_code=code, reason=f"task {state}: {message}", host=node)
        # shutdown, remove, orphaned: the task is gone
        return Observation(PlatformState.GONE, exit_code=code, reason=f"task {state}: {message}", host=node)

    async def _task_ip(self, task: dict[str, Any], handle: BackendHandle) -> str | None:
        network = handle.data.get("network")
        if network == "host":
            if handle.data.get("host_ip", "").startswith("127."):
                return str(handle.data["host_ip"])
            return await self._node_address(task.get("NodeID", "")) or handle.data.get("host_ip")
        for attachment in task.get("NetworksAttachments") or []:
            spec = (attachment.get("Network") or {}).get("Spec") or {}
            if spec.get("Name") == network or (attachment.get("Network") or {}).get("ID") == network:
                for address in attachment.get("Addresses") or []:
                    return str(address).split("/")[0]
        # Local-scope drivers (a swarm-scoped bridge) report no address on the task: ask this node's engine.
        container_id = handle.data.get("container_id")
        if container_id:
            with contextlib.suppress(self.engine.docker.errors.APIError):
                info = await self.engine.call(self.engine.api.inspect_container, container_id)
                networks = (info.get("NetworkSettings") or {}).get("Networks") or {}
                settings: dict[str, Any] = networks.get(network) or next(iter(networks.values()), {})
                return settings.get("IPAddress") or None
        return None

    async def _node_address(self, node_id: str) -> str | None:
        if node_id and node_id not in self._node_addr:
            with contextlib.suppress(self.engine.docker.errors.APIError):
                node = await self.engine.call(self.engine.api.inspect_node, node_id)
                self._node_addr[node_id] = (node.get("Status") or {}).get("Addr", "")
        return self._node_addr.get(node_id) or None


class SwarmBackend(EngineBackend):
    """Kernels as single-task services on a Docker Swarm (this engine must be a manager).

    Parameters
    ----------
    engine:
        The shared engine (client, pool, events stream).
    request:
        The default request for the task's container (image, network, user, resources, mounts), for embedders; a
        provisioner decides one per launch (``LaunchSpec.request``).
    """

    name: ClassVar[str] = "swarm"
    tracker_class = ServiceTracker
    serialized_keys = ("service_id", "service_name", "secret_id", "network", "host_ip", "kernel_pgid")
    tracker: ServiceTracker

    async def submit(self, spec: LaunchSpec) -> BackendHandle:
        await self.engine.connect()
        request = self.request_for(spec)
        name = f"gp-kernel-{spec.kernel_id}"
        handle = BackendHandle(
            spec.kernel_id,
            data={"service_name": name, "network": request.network, "host_ip": request.host_ip, "t0": time.monotonic()},
        )
        image, image_user = await self._resolve_image(request)
        if request.user is None and image_user is None:  # the launch file is made readable by that user only
            raise LaunchError(
                f"the kernel's user is not known (image {request.image!r} is not on this manager)",
                hint="Set kernel_uid / kernel_gid (GP_DOCKER_UID / GP_DOCKER_GID)",
            )
        ids = request.kernel_ids(image_user or "")
        params = spec.agent_params()
        await self.engine.stream_ready()
        self.tracker.launching.add(spec.kernel_id)
        try:
            created = await call_or_undo(
                self.engine, self._create_service, self._undo_service, request, spec, name, image, params, ids
            )
        finally:
            self.tracker.launching.discard(spec.kernel_id)
        handle.data["service_id"] = created["ID"]
        handle.data["secret_id"] = created["secret_id"]
        handle.update(Observation(PlatformState.PENDING, reason="service created"))
        self.tracker.track(handle)
        return handle

    async def _resolve_image(self, request: ContainerRequest) -> tuple[str, str | None]:
        """The image's local id when this node has it (no registry is asked), else its name for the nodes to pull;
        and its ``USER`` (``None`` when the image is not on this node)."""
        docker = self.engine.docker
        try:
            info = await self.engine.call(self.engine.api.inspect_image, request.image)
        except docker.errors.ImageNotFound:
            if request.pull_policy == "never":
                raise ImagePullError(
                    f"image {request.image!r} is not on this Swarm manager and the pull policy is 'never'",
                    hint="Build or load the image on every node, or set image_pull_policy (GP_DOCKER_PULL_POLICY)",
                ) from None
            return request.image, None
        user = str((info.get("Config") or {}).get("User") or "")
        return (request.image if request.pull_policy == "always" else str(info["Id"])), user

    def _create_service(
        self,
        request: ContainerRequest,
        spec: LaunchSpec,
        name: str,
        image: str,
        params: dict[str, Any],
        ids: tuple[int, int],
    ) -> dict[str, Any]:
        """In the pool: the launch secret, then the service that mounts it. A refused service takes its secret along.

        Returns the engine's answer with ``secret_id`` added."""
        api, errors = self.engine.api, self.engine.docker.errors
        labels = request.labels(spec.kernel_id, spec.username)
        # A fresh name per launch: a relaunch never meets the secret of an earlier one still being removed.
        secret_name = f"{SECRET_PREFIX}{spec.kernel_id[:40]}-{secrets.token_hex(3)}"
        try:
            secret_id = str(api.create_secret(secret_name, params_json(params), labels=labels)["ID"])
        except errors.APIError as exc:
            raise LaunchError(f"the Swarm manager refused the launch secret: {engine_message(exc)}") from None
        try:
            created = self._create_service_with(request, spec, name, image, (secret_id, secret_name), ids)
        except BaseException:
            with contextlib.suppress(errors.APIError):
                api.remove_secret(secret_id)
            raise
        return {**created, "secret_id": secret_id}

    def _create_service_with(
        self,
        request: ContainerRequest,
        spec: LaunchSpec,
        name: str,
        image: str,
        secret: tuple[str, str],
        ids: tuple[int, int],
    ) -> dict[str, Any]:
        types = self.engine.docker.types
        mounts = request.docker_mounts(types)
        launch_file = types.SecretReference(
            secret[0], secret[1], filename=LAUNCH_PARAMS_FILE, uid=str(ids[0]), gid=str(ids[1]), mode=0o600
        )
        container = types.ContainerSpec(
            image=image,
            command=request.command,
            args=LAUNCH_ARGS,  # the entry point passes them on to the agent: where its parameters are
            env=request.environment(),
            labels=request.labels(spec.kernel_id, spec.username),
            user=request.user,
            workdir=request.working_dir or spec.cwd or None,
            mounts=mounts or None,
            stop_grace_period=STOP_GRACE_NS,
            secrets=[launch_file],
        )
        resources = None
        if request.nano_cpus or request.memory or request.gpus:
            resources = types.Resources(
                cpu_limit=request.nano_cpus,
                mem_limit=request.memory,
                generic_resources={"NVIDIA-GPU": request.gpus} if request.gpus else None,
            )
        template = types.TaskTemplate(
            container_spec=container,
            resources=resources,
            restart_policy=types.RestartPolicy(condition="none"),
            networks=[types.NetworkAttachmentConfig(request.network)],
        )
        try:
            return dict(
                self.engine.api.create_service(
                    template, name=name, labels=request.labels(spec.kernel_id, spec.username)
                )
            )
        except self.engine.docker.errors.APIError as exc:
            raise LaunchError(f"the Swarm manager refused the service: {engine_message(exc)}") from None

    def _undo_service(self, created: dict[str, Any]) -> None:
        """In the pool: remove the service and secret made for a launch that was cancelled meanwhile."""
        errors = self.engine.docker.errors
        with contextlib.suppress(errors.APIError):
            self.engine.api.remove_service(created["ID"])
        with contextlib.suppress(errors.APIError):
            self.engine.api.remove_secret(created["secret_id"])

    async def _remove_secret(self, secret_id: str | None) -> bool:
        """Remove the launch secret once its service is gone; False while the manager still refuses (in use)."""
        errors = self.engine.docker.errors
        if secret_id:
            try:
                await self.engine.call(self.engine.api.remove_secret, secret_id)
            except errors.NotFound:
                pass
            except errors.APIError:
                return False
        return True

    async def terminate(self, handle: BackendHandle, grace: float = 0.0) -> None:
        """Remove the service and wait (up to ``grace`` + 10 s) until its task's container is gone from this node."""
        service_id = handle.data.get("service_id")
        docker = self.engine.docker
        self.tracker.untrack(handle)  # the service is going: stop asking for its tasks
        if service_id:
            with contextlib.suppress(docker.errors.NotFound):
                await self.engine.call(self.engine.api.remove_service, service_id)
            secret_removed = await self._remove_secret(handle.data.get("secret_id"))
            container_id = handle.data.get("container_id")
            if container_id:
                # The node would stop the task's container after its stop grace period and remove it later on its
                # own; the agent has already ended the kernel (or is being discarded), so remove it now.
                with contextlib.suppress(docker.errors.APIError):
                    await self.engine.call(self.engine.api.remove_container, container_id, force=True)
            deadline = time.monotonic() + grace + 10
            label = f"{SERVICE_ID_LABEL}={service_id}"
            while time.monotonic() < deadline:
                left = await self.engine.call(self.engine.api.containers, all=True, filters={"label": label})
                if not left:
                    break
                await asyncio.sleep(0.1)  # the node removes the task's container on its own; nothing to wait on
            if not secret_removed and not await self._remove_secret(handle.data.get("secret_id")):
                log.warning("kernel %s: launch secret not removed yet; the reaper will", handle.kernel_id)
        if handle.observation.state is not PlatformState.GONE:
            handle.update(
                Observation(PlatformState.GONE, reason="service removed", exit_code=handle.observation.exit_code)
            )

    async def log_tail(self, handle: BackendHandle, lines: int = 20) -> list[str]:
        service_id = handle.data.get("service_id")
        if not service_id:
            return []

        def read() -> bytes:
            return b"".join(self.engine.api.service_logs(service_id, stdout=True, stderr=True, tail=lines))

        try:
            raw = await self.engine.call(read)
        except self.engine.docker.errors.APIError:
            return []
        return tail_text(raw, lines)

    async def list_owned(self, owner: str | None = None) -> list[dict[str, Any]]:
        """Every service carrying the owner label, with its newest task's state."""
        await self.engine.connect()
        services = await self.engine.call(self.engine.api.services, filters=self.owner_filter(owner))
        tasks = (
            await self.engine.call(self.engine.api.tasks, filters={"service": [s["ID"] for s in services]})
            if services
            else []
        )
        newest: dict[str, dict[str, Any]] = {}
        for task in tasks:
            sid = task.get("ServiceID", "")
            if sid not in newest or task.get("CreatedAt", "") > newest[sid].get("CreatedAt", ""):
                newest[sid] = task
        result = []
        for service in services:
            labels = (service.get("Spec") or {}).get("Labels") or {}
            task_state = ((newest.get(service["ID"]) or {}).get("Status") or {}).get("State", "none")
            result.append({
                "kernel_id": labels.get(KERNEL_ID_LABEL, ""),
                "service_id": service["ID"],
                "name": (service.get("Spec") or {}).get("Name", ""),
                "state": task_state,
                "owner": labels.get(OWNER_LABEL, ""),
            })  # fmt: skip
        return result

    async def reap(
        self, live_kernel_ids: set[str] | None = None, *, owner: str | None = None, dry_run: bool = False
    ) -> list[dict[str, Any]]:
        """Remove owned services whose kernel no longer exists (see :meth:`DockerBackend.reap`), and owned launch
        secrets that no remaining service uses (or, with ``live_kernel_ids``, of kernels not in it)."""
        removed = []
        kept: set[str] = set()
        for item in await self.list_owned(owner):
            if live_kernel_ids is not None:
                orphan = item["kernel_id"] not in live_kernel_ids
            else:
                orphan = item["state"] not in (*_PENDING_STATES, "starting", "running") and (
                    item["kernel_id"] not in self.tracker.handles
                )
            if not orphan:
                kept.add(item["kernel_id"])
                continue
            if not dry_run:
                with contextlib.suppress(self.engine.docker.errors.NotFound):
                    await self.engine.call(self.engine.api.remove_service, item["service_id"])
            removed.append(item)
        return removed + await self._reap_secrets(live_kernel_ids, kept, owner, dry_run)

    async def _reap_secrets(
        self, live_kernel_ids: set[str] | None, kept: set[str], owner: str | None, dry_run: bool
    ) -> list[dict[str, Any]]:
        errors = self.engine.docker.errors
        removed = []
        for secret in await self.engine.call(self.engine.api.secrets, filters=self.owner_filter(owner)):
            spec = secret.get("Spec") or {}
            labels = spec.get("Labels") or {}
            kernel_id = labels.get(KERNEL_ID_LABEL, "")
            if live_kernel_ids is not None:
                orphan = kernel_id not in live_kernel_ids
            else:  # a service that is kept, or a launch of this process in progress, still needs it
                orphan = kernel_id not in kept and kernel_id not in self.tracker.handles
                orphan = orphan and kernel_id not in self.tracker.launching
            if not orphan:
                continue
            if not dry_run:
                try:
                    await self.engine.call(self.engine.api.remove_secret, secret["ID"])
                except errors.NotFound:
                    pass
                except errors.APIError as exc:  # still used by a service (of another owner, or just made)
                    log.info("launch secret %s kept: %s", spec.get("Name", secret["ID"]), engine_message(exc))
                    continue
            removed.append({
                "kind": "secret", "kernel_id": kernel_id, "secret_id": secret["ID"], "name": spec.get("Name", ""),
                "state": "unused", "owner": labels.get(OWNER_LABEL, ""),
            })  # fmt: skip
        return removed

    async def close(self) -> None:
        """The engine is shared by every kernel of this loop: closing one backend leaves it running."""
