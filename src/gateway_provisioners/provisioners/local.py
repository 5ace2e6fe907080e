"""``local-agent-provisioner``: kernels on this machine, started and controlled through the agent.

Useful on its own — a local kernel with an authenticated control channel, restart in place and reattach after a
server restart — and as the reference provisioner the test suite drives through a real ``AsyncKernelManager``.
"""

from __future__ import annotations

import sys

from ..adapters.local import LocalBackend
from ..core.backend import Backend
from ..core.launch import ConnectionMode, split_list
from .base import RemoteProvisionerBase
from .settings import NameList, Text, setting

# What a local kernel needs from the server's environment to behave like jupyter_client's own local kernels.
LOCAL_ENV_ALLOWLIST = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
    "PYTHONPATH", "VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "JUPYTER_PATH", "JUPYTER_CONFIG_DIR",
    "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR", "JPY_SESSION_NAME", "MPLBACKEND",
)  # fmt: skip


class LocalAgentProvisioner(RemoteProvisionerBase):
    """Run the kernel as a local process under the gateway-provisioners agent."""

    python = setting(
        Text, default=lambda p: sys.executable, default_doc="the server's interpreter",
        help="Interpreter running the agent; it replaces a bare 'python' in the kernel's argv.",
    )  # fmt: skip
    kernel_log_dir = setting(
        Text, "GP_KERNEL_LOG_DIR", default="", default_doc="the temporary folder",
        help="Folder where each agent makes its private folder (0700, an unpredictable name) for the kernel's log.",
    )  # fmt: skip
    env_allowlist = setting(
        NameList, "GP_ENV_ALLOWLIST", default=sorted(LOCAL_ENV_ALLOWLIST),
        parse=lambda raw, name: sorted(set(LOCAL_ENV_ALLOWLIST) | set(split_list(raw))),
        default_doc="the variables a local kernel needs (below)", limits_doc="the variable adds to the default",
        help="Names of server environment variables passed to kernels besides KERNEL_* values and the kernel spec's "
        "env; the server's environment is otherwise never copied into a kernel.",
    )  # fmt: skip

    def default_response_ip(self) -> str:
        return "127.0.0.1"  # the agent runs here

    def backend_modes(self) -> tuple[ConnectionMode, ...]:
        return LocalBackend.modes

    def make_backend(self) -> Backend:
        return LocalBackend(python=self.python, log_dir=self.kernel_log_dir or None)

    def kernel_ip(self) -> str:
        return "127.0.0.1"

    def server_cwd(self, cwd: str | None) -> str | None:
        return cwd  # the kernel runs here: start it in the notebook's folder, as jupyter_client's local kernels do

    def kernel_argv(self, cmd: list[str]) -> list[str]:
        resource_dir = self.kernel_spec.resource_dir or ""
        return [arg.replace("{resource_dir}", resource_dir).replace("{prefix}", sys.prefix) for arg in cmd]
