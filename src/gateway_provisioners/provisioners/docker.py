"""``docker-provisioner`` and ``docker-swarm-provisioner``: kernels in containers, or in single-task Swarm services.

The image must carry the agent (``jupyter-image-bootstrap``): its entry point runs the agent with the container's
arguments (``--params FILE``: the launch parameters, a private file in the container, never in its configuration)
and the agent starts the kernel spec's own argv. On a bridge or overlay network the server
assigns ports and key and reads the container's (task's) IP from the engine; on host networking the agent picks free
ports on the host and calls back to the response listener.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlparse

from ..adapters.docker_common import DEFAULT_OWNER, ContainerRequest, parse_id, parse_memory, parse_mount
from ..core.backend import Backend
from ..core.errors import ConfigurationError, NotAuthorized
from ..core.launch import COMMON_PARAMS, ConnectionMode, LaunchSpec, Param, parse_user_list, split_list
from .base import RemoteProvisionerBase
from .settings import Flag, NameList, Sequence, Text, setting

PULL_POLICIES = ("never", "missing", "always")

DOCKER_PARAMS: tuple[Param, ...] = (
    *COMMON_PARAMS,
    Param("KERNEL_IMAGE", pattern=r"[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}", help="an image reference"),
    Param("KERNEL_CPUS", kind=float, minimum=0.01, maximum=1024),
    Param("KERNEL_MEMORY", pattern=r"\d+(\.\d+)?\s*([kKmMgGtT]i?)?[bB]?", help="a size such as 512m or 2g"),
    Param("KERNEL_GPUS", kind=int, minimum=0, maximum=64),
    Param("KERNEL_UID", pattern=r"\d{1,10}", help="a numeric user id"),
    Param("KERNEL_GID", pattern=r"\d{1,10}", help="a numeric group id"),
)


class DockerProvisioner(RemoteProvisionerBase):
    """Run each kernel (with its agent) in a Docker container."""

    working_dir_applies_late = False  # KERNEL_WORKING_DIR is mounted into the container: it is chosen at launch

    image_name = setting(
        Text, "GP_DOCKER_IMAGE", "GP_IMAGE_NAME", default="",
        help="The kernel image; it must contain the agent (jupyter-image-bootstrap). A client's KERNEL_IMAGE is used "
        "only when it is this image or listed in allowed_images.",
    )  # fmt: skip
    allowed_images = setting(
        NameList, "GP_DOCKER_ALLOWED_IMAGES", default=[],
        help="Images a client may choose with KERNEL_IMAGE besides image_name.",
    )  # fmt: skip
    network = setting(
        Text, "GP_DOCKER_NETWORK", default=lambda p: "host" if p.swarm else "bridge",
        default_doc='`"bridge"`; Swarm `"host"`',
        help="Network the kernel containers join. On 'host' the agent picks free host ports and calls back; on any "
        "other network the server assigns the ports and reads the container's IP from the engine, so the server must "
        "be able to reach that network.",
    )  # fmt: skip
    docker_url = setting(
        Text, "GP_DOCKER_URL", default="", default_doc="DOCKER_HOST, else the local engine",
        help="The engine's address, e.g. unix:///var/run/docker.sock.",
    )  # fmt: skip
    host_ip = setting(
        Text, "GP_DOCKER_HOST_IP", default=lambda p: p.default_host_ip(),
        default_doc='`"127.0.0.1"` for a local engine, else the host of DOCKER_HOST',
        help="Where kernels on host networking are reached and bind (on a local engine they listen on loopback only).",
    )  # fmt: skip
    image_pull_policy = setting(
        Text, "GP_DOCKER_PULL_POLICY", default="missing", choices=PULL_POLICIES,
        help="'never' (the image must be on the engine), 'missing' (pull when absent) or 'always'. A failed pull "
        "fails the launch at once with the engine's reason.",
    )  # fmt: skip
    owner = setting(
        Text, "GP_DOCKER_OWNER", default=DEFAULT_OWNER,
        help="Value of the owner label on every container or service this server creates; the reaper removes only "
        "resources with its own owner.",
    )  # fmt: skip
    kernel_uid = setting(Text, "GP_DOCKER_UID", default="1000", help="User id kernels run as unless KERNEL_UID is "
                         "given.")  # fmt: skip
    kernel_gid = setting(Text, "GP_DOCKER_GID", default="100", help="Group id kernels run as unless KERNEL_GID is "
                         "given.")  # fmt: skip
    allow_root = setting(
        Flag, "GP_DOCKER_ALLOW_ROOT", default=False,
        help="Allow kernels to run as user or group 0 (by default '0' and '00' are refused).",
    )  # fmt: skip
    allow_working_dir = setting(
        Flag, "GP_DOCKER_ALLOW_WORKING_DIR", default=False,
        help="Honour a client's KERNEL_WORKING_DIR: bind-mount that host folder at the same path and start the "
        "kernel there (otherwise the value is ignored with a warning).",
    )  # fmt: skip
    mounts = setting(
        NameList, "GP_DOCKER_MOUNTS", default=[], help="Operator mounts for every kernel, 'source:target[:ro|rw]'."
    )
    agent_command = setting(
        Sequence, default=[], default_doc="the image's ENTRYPOINT (jupyter-image-bootstrap's)",
        help="Command that runs the agent in the image.",
    )  # fmt: skip

    param_schema = DOCKER_PARAMS
    swarm = False

    def default_host_ip(self) -> str:
        url = self.docker_url or os.environ.get("DOCKER_HOST", "")
        if url.startswith(("tcp://", "ssh://")):
            return urlparse(url).hostname or "127.0.0.1"
        return "127.0.0.1"

    def default_response_ip(self) -> str:
        # Host-network kernels share the host's loopback with a local server.
        if self.network == "host" and self.host_ip.startswith("127."):
            return "127.0.0.1"
        return super().default_response_ip()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._request: ContainerRequest | None = None

    # --- what the base needs ----------------------------------------------------------------------------------------

    def backend_modes(self) -> tuple[ConnectionMode, ...]:
        if self.network == "host":
            return (ConnectionMode.CALLBACK,)  # many agents share the host: each binds-and-holds its own ports
        return (ConnectionMode.ASSIGNED, ConnectionMode.CALLBACK)

    def kernel_ip(self) -> str:
        if self.network == "host":
            return self.host_ip if self.host_ip.startswith("127.") else "0.0.0.0"
        return "0.0.0.0"  # the container's own network namespace

    def make_backend(self) -> Backend:
        from ..adapters.docker import DockerBackend
        from ..adapters.docker_common import shared_engine

        return DockerBackend(shared_engine(self.docker_url or None), self._request)

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Start phase: the base checks user and KERNEL_* values; :meth:`complete_spec` makes the container request."""
        kwargs = await super().pre_launch(**kwargs)
        assert self._spec is not None
        self._request = self._spec.request
        return kwargs

    def complete_spec(self, spec: LaunchSpec) -> None:
        spec.request = self.container_request(spec.values)
        if spec.cwd and not self.allow_working_dir:
            self.log.warning(
                "kernel %s: KERNEL_WORKING_DIR ignored (set allow_working_dir / GP_DOCKER_ALLOW_WORKING_DIR)",
                spec.kernel_id,
            )
            spec.cwd = None

    def backend_for(self, spec: LaunchSpec) -> Backend:
        from ..adapters.docker import DockerBackend
        from ..adapters.docker_common import shared_engine

        return DockerBackend(shared_engine(self.docker_url or None), spec.request)

    def root_allowed(self) -> bool:
        # The container runs as kernel_uid / KERNEL_UID, never as the server's user: allow_root is the setting here.
        return bool(self.allow_root)

    def container_request(self, values: dict[str, Any]) -> ContainerRequest:
        """The validated per-launch values and the operator's settings → how the container is made."""
        image = values.get("KERNEL_IMAGE") or self.image_name
        if not image:
            raise ConfigurationError("no kernel image: set image_name (GP_DOCKER_IMAGE) in the kernel spec or config")
        allowed = {self.image_name, *parse_user_list(self.allowed_images)}
        if values.get("KERNEL_IMAGE") and image not in allowed:
            raise NotAuthorized(
                f"KERNEL_IMAGE={image!r} is not allowed here (allowed_images / GP_DOCKER_ALLOWED_IMAGES)"
            )
        uid = parse_id(values.get("KERNEL_UID", self.kernel_uid), "KERNEL_UID")
        gid = parse_id(values.get("KERNEL_GID", self.kernel_gid), "KERNEL_GID")
        if (uid == 0 or gid == 0) and not self.allow_root:
            which = "KERNEL_UID" if uid == 0 else "KERNEL_GID"
            raise NotAuthorized(
                f"{which} is 0 (root): kernels do not run as root here; choose another id, or set allow_root "
                "(GP_DOCKER_ALLOW_ROOT) if you really mean it"
            )
        mounts = split_list(self.mounts)  # in order: later mounts may nest inside earlier ones
        for mount in mounts:
            parse_mount(mount)  # a bad operator setting fails here with the mount named
        working_dir = values.get("KERNEL_WORKING_DIR") if self.allow_working_dir else None
        if working_dir:
            mounts.append(f"{working_dir}:{working_dir}:rw")
        cpus = values.get("KERNEL_CPUS")
        return ContainerRequest(
            image=image,
            network=self.network,
            owner=self.owner,
            user=f"{uid}:{gid}",
            nano_cpus=int(cpus * 1e9) if cpus else None,
            memory=parse_memory(values["KERNEL_MEMORY"]) if values.get("KERNEL_MEMORY") else None,
            gpus=values.get("KERNEL_GPUS") or None,
            mounts=mounts,
            working_dir=working_dir,
            command=list(self.agent_command) or None,
            pull_policy=self.image_pull_policy,
            host_ip=self.host_ip,
        )


class DockerSwarmProvisioner(DockerProvisioner):
    """Run each kernel (with its agent) as a single-task Docker Swarm service (restart condition none)."""

    swarm = True

    def backend_modes(self) -> tuple[ConnectionMode, ...]:
        if self.network == "host":
            return (ConnectionMode.CALLBACK,)
        return (ConnectionMode.ASSIGNED, ConnectionMode.CALLBACK)

    def kernel_ip(self) -> str:
        # A task may land on any node: on host networking bind every interface unless the operator pinned loopback.
        if self.network == "host":
            return self.host_ip if self.host_ip.startswith("127.") else "0.0.0.0"
        return "0.0.0.0"

    def make_backend(self) -> Backend:
        from ..adapters.docker_common import shared_engine
        from ..adapters.swarm import SwarmBackend

        return SwarmBackend(shared_engine(self.docker_url or None), self._request)

    def backend_for(self, spec: LaunchSpec) -> Backend:
        from ..adapters.docker_common import shared_engine
        from ..adapters.swarm import SwarmBackend

        return SwarmBackend(shared_engine(self.docker_url or None), spec.request)
