"""``distributed-provisioner``: kernels on a pool of hosts reached over SSH."""

from __future__ import annotations

import getpass
from typing import ClassVar

from ..adapters.ssh import SSHBackend, SSHSettings, load_selector
from ..core.backend import Backend
from ..core.launch import COMMON_PARAMS, ConnectionMode, Param, split_list
from ..per_loop import PerLoop
from .base import RemoteProvisionerBase, checked
from .settings import Flag, Integer, NameList, Number, Text, setting

REMOTE_HOST_PARAM = Param(
    "KERNEL_REMOTE_HOST", pattern=r"[A-Za-z0-9_.:@\[\]-]{1,255}", help="a host name or address from remote_hosts"
)


class DistributedProvisioner(RemoteProvisionerBase):
    """Start each kernel on one of ``remote_hosts`` over SSH, under the agent."""

    remote_hosts = setting(
        NameList, "GP_REMOTE_HOSTS", default=["localhost"],
        help="Hosts to run kernels on, '[user@]host[:port]'. A host that cannot be reached is skipped for the next.",
    )  # fmt: skip
    ssh_port = setting(Integer, "GP_SSH_PORT", default=22, minimum=1, maximum=65535, help="SSH port of hosts that "
                       "name none.")  # fmt: skip
    remote_user = setting(
        Text, "GP_REMOTE_USER", default=lambda p: getpass.getuser(), default_doc="the server's user",
        help="SSH user for hosts that name none.",
    )  # fmt: skip
    remote_python = setting(
        Text, "GP_REMOTE_PYTHON", default="python3",
        help="Python on the hosts; runs the agent (needs 'cryptography') and replaces a bare 'python' or 'python3' at "
        "the start of the kernel's argv.",
    )  # fmt: skip
    load_balancing_algorithm = setting(
        Text, "GP_LOAD_BALANCING_ALGORITHM", default="round-robin",
        limits_doc="`round-robin`, `least-connection` or `module:function`",
        help="How hosts are chosen: 'round-robin', 'least-connection' (fewest kernels, starting ones included), or "
        "'module:function' naming an async selector. A client may ask for one of remote_hosts with "
        "KERNEL_REMOTE_HOST.",
    )  # fmt: skip
    known_hosts = setting(
        Text, "GP_SSH_KNOWN_HOSTS", default="", default_doc="`~/.ssh/known_hosts`",
        help="known_hosts file the hosts' keys are checked against.",
    )  # fmt: skip
    check_host_keys = setting(
        Flag, "GP_SSH_CHECK_HOST_KEYS", default=True,
        help="Refuse hosts whose key is not in known_hosts. Turning this off allows anyone who can intercept the "
        "connection to run your kernels.",
    )  # fmt: skip
    client_keys = setting(
        NameList, "GP_SSH_CLIENT_KEYS", default=[], default_doc="the ~/.ssh keys and the SSH agent",
        help="Private key files to log in with.",
    )  # fmt: skip
    gss_auth = setting(Flag, "GP_REMOTE_GSS_SSH", default=False, help="Use GSSAPI (Kerberos) authentication.")
    connect_timeout = setting(Number, default=10.0, minimum=0.1, help="Seconds to wait for an SSH connection.")
    kernel_log_dir = setting(
        Text, "GP_KERNEL_LOG_DIR", default="", default_doc="the hosts' temporary folder",
        help="Folder on the hosts where each agent makes its private folder (0700, an unpredictable name) for the "
        "kernel's log.",
    )  # fmt: skip
    keep_kernel_logs = setting(Flag, default=False, help="Keep each kernel's log on its host after the kernel ends.")
    impersonation_enabled = setting(
        Flag, "GP_IMPERSONATION_ENABLED", default=False,
        help="Run kernels as KERNEL_USERNAME with 'sudo -n -u' on the hosts; the SSH user needs passwordless sudo "
        "rights for that.",
    )  # fmt: skip
    tunnel_kernel_ports = setting(
        Flag, "GP_ENABLE_TUNNELING", default=False,
        help="Reach kernels through the SSH connection (local port forwards) instead of connecting to the host "
        "directly; the kernel then listens only on the host's loopback.",
    )  # fmt: skip

    param_schema: ClassVar[tuple[Param, ...]] = (*COMMON_PARAMS, REMOTE_HOST_PARAM)

    # One backend per process and configuration: every kernel on a host shares its SSH connection, and
    # round-robin and least-connection see every kernel of the process.
    _backends: ClassVar[PerLoop[SSHBackend]] = PerLoop()  # SSH connections belong to one event loop

    def backend_modes(self) -> tuple[ConnectionMode, ...]:
        return SSHBackend.modes

    def make_backend(self) -> Backend:
        settings = SSHSettings(
            known_hosts=self.known_hosts or None,
            check_host_keys=self.check_host_keys,
            client_keys=split_list(self.client_keys) or None,
            gss_auth=self.gss_auth,
            connect_timeout=self.connect_timeout,
        )
        options = {
            "default_port": self.ssh_port,
            "default_user": self.remote_user or None,
            "python": self.remote_python,
            "log_dir": self.kernel_log_dir,
            "keep_logs": self.keep_kernel_logs,
            "impersonate": self.impersonation_enabled,
            "tunnel": self.tunnel_kernel_ports,
        }
        hosts = split_list(self.remote_hosts)
        key = (tuple(hosts), self.load_balancing_algorithm, repr(settings), tuple(sorted(options.items())))

        def make() -> SSHBackend:
            selector = checked(lambda: load_selector(self.load_balancing_algorithm), "load_balancing_algorithm")
            return SSHBackend(hosts, settings, selector=selector, **options)  # type: ignore[arg-type]

        return self._backends.get(key, make)

    def kernel_ip(self) -> str:
        return "0.0.0.0"
