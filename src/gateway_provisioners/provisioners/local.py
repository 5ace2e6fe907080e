"""``local-agent-provisioner``: kernels on this machine, started and controlled through the agent.

Useful on its own — a local kernel with an authenticated control channel, restart in place and reattach after a
server restart — and as the reference provisioner the test suite drives through a real ``AsyncKernelManager``.
"""

from __future__ import annotations

import sys

from traitlets import Unicode, default

from ..adapters.local import LocalBackend
from ..core.backend import Backend
from ..core.launch import ConnectionMode
from .base import RemoteProvisionerBase, env_default

# What a local kernel needs from the server's environment to behave like jupyter_client's own local kernels.
LOCAL_ENV_ALLOWLIST = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
    "PYTHONPATH", "VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "JUPYTER_PATH", "JUPYTER_CONFIG_DIR",
    "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR", "JPY_SESSION_NAME", "MPLBACKEND",
)  # fmt: skip


class LocalAgentProvisioner(RemoteProvisionerBase):
    """Run the kernel as a local process under the gateway-provisioners agent."""

    python = Unicode(
        help="Interpreter running the agent; it replaces a bare 'python' in the kernel's argv (default: the server's)."
    ).tag(config=True)

    kernel_log_dir = Unicode(
        help="Folder for each kernel's log file, kernel-<id>.log (GP_KERNEL_LOG_DIR; default: the temporary folder)."
    ).tag(config=True)

    @default("python")
    def _default_python(self) -> str:
        return sys.executable

    @default("kernel_log_dir")
    def _default_kernel_log_dir(self) -> str:
        return env_default("GP_KERNEL_LOG_DIR")

    @default("env_allowlist")
    def _default_env_allowlist(self) -> list[str]:
        return sorted(set(LOCAL_ENV_ALLOWLIST) | set(super()._default_env_allowlist()))

    @default("response_ip")
    def _default_response_ip(self) -> str:
        return env_default("GP_RESPONSE_IP", default="127.0.0.1")  # the agent runs here

    def backend_modes(self) -> tuple[ConnectionMode, ...]:
        return LocalBackend.modes

    def make_backend(self) -> Backend:
        return LocalBackend(python=self.python, log_dir=self.kernel_log_dir or None)

    def kernel_ip(self) -> str:
        return "127.0.0.1"

    def kernel_argv(self, cmd: list[str]) -> list[str]:
        resource_dir = self.kernel_spec.resource_dir or ""
        return [arg.replace("{resource_dir}", resource_dir).replace("{prefix}", sys.prefix) for arg in cmd]
