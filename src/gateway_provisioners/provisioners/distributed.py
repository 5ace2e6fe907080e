"""``distributed-provisioner``: kernels on a pool of hosts reached over SSH."""

from __future__ import annotations

import getpass
from typing import ClassVar

from traitlets import Bool, Float, Int, List, Unicode, Union, default

from ..adapters.ssh import SSHBackend, SSHSettings, load_selector
from ..core.backend import Backend
from ..core.launch import COMMON_PARAMS, ConnectionMode, Param, parse_bool, split_list
from ..per_loop import PerLoop
from .base import RemoteProvisionerBase, _checked, env_default

REMOTE_HOST_PARAM = Param(
    "KERNEL_REMOTE_HOST", pattern=r"[A-Za-z0-9_.:@\[\]-]{1,255}", help="a host name or address from remote_hosts"
)


class DistributedProvisioner(RemoteProvisionerBase):
    """Start each kernel on one of ``remote_hosts`` over SSH, under the agent."""

    remote_hosts = Union(
        [List(Unicode()), Unicode()],
        help="""Hosts to run kernels on, '[user@]host[:port]', as a list or a comma-separated string
        (GP_REMOTE_HOSTS; default localhost). A host that cannot be reached is skipped for the next one.""",
    ).tag(config=True)

    ssh_port = Int(min=1, max=65535, help="SSH port for hosts that name none (GP_SSH_PORT, 22).").tag(config=True)

    remote_user = Unicode(help="SSH user for hosts that name none (GP_REMOTE_USER; default: this user).").tag(
        config=True
    )

    remote_python = Unicode(
        help="""Python on the hosts; runs the agent (needs 'cryptography') and replaces a bare 'python' or 'python3'
        at the start of the kernel's argv (GP_REMOTE_PYTHON, python3).""",
    ).tag(config=True)

    load_balancing_algorithm = Unicode(
        help="""How hosts are chosen: 'round-robin', 'least-connection' (fewest kernels, starting ones included), or
        'module:function' naming an async selector (GP_LOAD_BALANCING_ALGORITHM, round-robin). A client may ask
        for one of remote_hosts with KERNEL_REMOTE_HOST.""",
    ).tag(config=True)

    known_hosts = Unicode(
        help="known_hosts file the hosts' keys are checked against (GP_SSH_KNOWN_HOSTS; default ~/.ssh/known_hosts)."
    ).tag(config=True)

    check_host_keys = Bool(
        help="""Refuse hosts whose key is not in known_hosts (GP_SSH_CHECK_HOST_KEYS, true). Turning this off
        allows anyone who can intercept the connection to run your kernels.""",
    ).tag(config=True)

    client_keys = Union(
        [List(Unicode()), Unicode()],
        help="Private key files to log in with (GP_SSH_CLIENT_KEYS, comma-separated; default: ~/.ssh keys and agent).",
    ).tag(config=True)

    gss_auth = Bool(help="Use GSSAPI (Kerberos) authentication (GP_REMOTE_GSS_SSH, false).").tag(config=True)

    connect_timeout = Float(10.0, min=0.1, help="Seconds to wait for an SSH connection to a host.").tag(config=True)

    kernel_log_dir = Unicode(
        help="""Folder on the hosts where each agent makes its private folder (0700, an unpredictable name) for the
        kernel's log (GP_KERNEL_LOG_DIR; default: the hosts' temporary folder).""",
    ).tag(config=True)

    keep_kernel_logs = Bool(False, help="Keep each kernel's log on its host after the kernel ends.").tag(config=True)

    impersonation_enabled = Bool(
        help="""Run kernels as KERNEL_USERNAME with 'sudo -n -u' on the hosts (GP_IMPERSONATION_ENABLED, false). The SSH
        user needs passwordless sudo rights for that.""",
    ).tag(config=True)

    tunnel_kernel_ports = Bool(
        help="""Reach kernels through the SSH connection (local port forwards) instead of connecting to the host
        directly; the kernel then listens only on the host's loopback (GP_ENABLE_TUNNELING, false).""",
    ).tag(config=True)

    param_schema: ClassVar[tuple[Param, ...]] = (*COMMON_PARAMS, REMOTE_HOST_PARAM)

    # One backend per process and configuration: every kernel on a host shares its SSH connection, and
    # round-robin and least-connection see every kernel of the process.
    _backends: ClassVar[PerLoop[SSHBackend]] = PerLoop()  # SSH connections belong to one event loop

    @default("remote_hosts")
    def _default_remote_hosts(self) -> list[str]:
        return split_list(env_default("GP_REMOTE_HOSTS", default="localhost"))

    @default("ssh_port")
    def _default_ssh_port(self) -> int:
        raw = env_default("GP_SSH_PORT", default="22")
        return _checked(lambda: Param("GP_SSH_PORT", int, 1, 65535).parse(raw))

    @default("remote_user")
    def _default_remote_user(self) -> str:
        return env_default("GP_REMOTE_USER", default=getpass.getuser())

    @default("remote_python")
    def _default_remote_python(self) -> str:
        return env_default("GP_REMOTE_PYTHON", default="python3")

    @default("load_balancing_algorithm")
    def _default_load_balancing_algorithm(self) -> str:
        return env_default("GP_LOAD_BALANCING_ALGORITHM", default="round-robin")

    @default("known_hosts")
    def _default_known_hosts(self) -> str:
        return env_default("GP_SSH_KNOWN_HOSTS")

    @default("check_host_keys")
    def _default_check_host_keys(self) -> bool:
        return _checked(
            lambda: parse_bool(env_default("GP_SSH_CHECK_HOST_KEYS", default="true"), "GP_SSH_CHECK_HOST_KEYS")
        )

    @default("client_keys")
    def _default_client_keys(self) -> list[str]:
        return split_list(env_default("GP_SSH_CLIENT_KEYS"))

    @default("gss_auth")
    def _default_gss_auth(self) -> bool:
        return _checked(lambda: parse_bool(env_default("GP_REMOTE_GSS_SSH", default="false"), "GP_REMOTE_GSS_SSH"))

    @default("kernel_log_dir")
    def _default_kernel_log_dir(self) -> str:
        return env_default("GP_KERNEL_LOG_DIR")

    @default("impersonation_enabled")
    def _default_impersonation_enabled(self) -> bool:
        raw = env_default("GP_IMPERSONATION_ENABLED", default="false")
        return _checked(lambda: parse_bool(raw, "GP_IMPERSONATION_ENABLED"))

    @default("tunnel_kernel_ports")
    def _default_tunnel_kernel_ports(self) -> bool:
        return _checked(lambda: parse_bool(env_default("GP_ENABLE_TUNNELING", default="false"), "GP_ENABLE_TUNNELING"))

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
            selector = _checked(lambda: load_selector(self.load_balancing_algorithm), "load_balancing_algorithm")
            return SSHBackend(hosts, settings, selector=selector, **options)  # type: ignore[arg-type]

        return self._backends.get(key, make)

    def kernel_ip(self) -> str:
        return "0.0.0.0"
