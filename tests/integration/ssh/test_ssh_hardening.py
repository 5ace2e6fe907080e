"""The SSH backend's side of issue 11: kernel logs private on the host and never written through a planted link
(item 1), and root refused by the uid the kernel would run as, not by the name a client claims (item 2)."""

from __future__ import annotations

import getpass
import os
import stat
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from gateway_provisioners.adapters.ssh import SSHBackend, SSHSettings
from gateway_provisioners.core.errors import NotAuthorized
from gateway_provisioners.core.kernel import RemoteKernel
from gateway_provisioners.core.launch import LaunchSpec, build_kernel_env
from tests.support.sshd import SSHKeys, SSHServer

from ...conftest import AS_ROOT

pytestmark = pytest.mark.integration


def backend_for(sshd: SSHServer, keys: SSHKeys, **options: object) -> SSHBackend:
    settings = SSHSettings(known_hosts=str(keys.known_hosts), client_keys=[str(keys.client_key)])
    return SSHBackend([sshd.address], settings, default_user=getpass.getuser(), python=sys.executable, **options)


def ipykernel_spec(**extra: object) -> LaunchSpec:
    return LaunchSpec(
        str(uuid.uuid4()),
        [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        env=build_kernel_env(os.environ, {}, ["PATH", "HOME"]),
        launch_timeout=30,
        **extra,  # type: ignore[arg-type]
    )


async def test_kernel_log_on_the_host_is_private_and_a_planted_link_is_not_followed(
    sshd: SSHServer, ssh_keys: SSHKeys, tmp_path: Path
) -> None:
    spec = ipykernel_spec(allow_root=AS_ROOT)
    victim = tmp_path / "victim.txt"
    victim.write_text("")
    # Another user of the host plants a link where the kernel's log used to go (the host's temporary folder).
    planted = Path(tempfile.gettempdir()) / f"kernel-{spec.kernel_id}.log"
    planted.symlink_to(victim)
    backend = backend_for(sshd, ssh_keys)
    kernel = RemoteKernel(backend, spec.kernel_id)
    try:
        await kernel.start(spec)
        assert kernel.handle is not None
        log_file = Path(kernel.handle.data["log_file"])  # the host shares this machine's files
        folder = log_file.parent
        assert log_file.is_file() and not log_file.is_symlink() and log_file != planted
        assert stat.S_IMODE(folder.lstat().st_mode) == 0o700 and folder.lstat().st_uid == os.geteuid()
        assert stat.S_IMODE(log_file.lstat().st_mode) == 0o600
        await kernel.interrupt()  # the agent logs it
        assert victim.read_text() == "", "the agent wrote through a planted link"
    finally:
        await kernel.shutdown(grace=1)
        await backend.close()
        planted.unlink()
    assert not folder.exists(), "a clean shutdown removes the log and its folder"


async def test_impersonating_root_is_refused_before_anything_starts(sshd: SSHServer, ssh_keys: SSHKeys) -> None:
    backend = backend_for(sshd, ssh_keys, impersonate=True)
    spec = ipykernel_spec(username="root")  # sudo -u root: the kernel would run as uid 0
    kernel = RemoteKernel(backend, spec.kernel_id)
    try:
        with pytest.raises(NotAuthorized, match=r"uid 0.*allow_root_kernels \(GP_ALLOW_ROOT_KERNELS\)"):
            await kernel.start(spec)
        assert kernel.handle is None and backend.load == {}, "nothing may have been started"
    finally:
        await backend.close()
