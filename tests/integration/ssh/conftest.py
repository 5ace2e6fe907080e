"""Real OpenSSH servers for the DistributedProvisioner tests (see tests/support/sshd.py)."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_kernel_spec
from tests.support.sshd import SSHKeys, SSHServer, can_make_namespaces, find_sshd, namespace_hosts, run_sshd


@pytest.fixture(scope="session")
def ssh_keys(tmp_path_factory: pytest.TempPathFactory) -> SSHKeys:
    return SSHKeys(tmp_path_factory.mktemp("ssh-keys"))


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory, ssh_keys: SSHKeys) -> Iterator[SSHServer]:
    if find_sshd() is None:
        pytest.skip("OpenSSH sshd is not installed here (Debian: apt-get install openssh-server)")
    with run_sshd(tmp_path_factory.mktemp("sshd-lo"), ssh_keys) as server:
        yield server


def ssh_config(keys: SSHKeys, hosts: list[str], **extra: Any) -> dict[str, Any]:
    """Provisioner config for ``hosts`` with this run's keys; kernels use this test run's Python."""
    return {
        "remote_hosts": hosts,
        "known_hosts": str(keys.known_hosts),
        "client_keys": [str(keys.client_key)],
        "remote_user": getpass.getuser(),
        "remote_python": sys.executable,
        "launch_timeout": 30,
        **extra,
    }


@pytest.fixture
def ssh_spec(jupyter_path: Path, ssh_keys: SSHKeys, sshd: SSHServer):  # type: ignore[no-untyped-def]
    """Write a distributed-provisioner kernel spec; returns its name."""

    def write(
        name: str = "gp-ssh",
        hosts: list[str] | None = None,
        argv: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **extra: Any,
    ) -> str:
        config = ssh_config(ssh_keys, hosts or [sshd.address], **extra)
        write_kernel_spec(
            jupyter_path, name, argv=argv, provisioner="distributed-provisioner", config=config, metadata=metadata
        )
        return name

    return write


@pytest.fixture(scope="module")
def netns_hosts(tmp_path_factory: pytest.TempPathFactory, ssh_keys: SSHKeys) -> Iterator[list[SSHServer]]:
    """Two hosts in network namespaces (10.250.0.11, .12), each with its own sshd and hostname."""
    if find_sshd() is None:
        pytest.skip("OpenSSH sshd is not installed here (Debian: apt-get install openssh-server)")
    reason = can_make_namespaces()
    if reason:
        pytest.skip(f"multi-host SSH tests skipped: {reason}")
    with namespace_hosts(2) as hosts:
        servers: list[SSHServer] = []
        contexts = []
        try:
            for name, address in hosts:
                context = run_sshd(tmp_path_factory.mktemp(name), ssh_keys, address, 22, netns=name, hostname=name)
                servers.append(context.__enter__())
                contexts.append(context)
            yield servers
        finally:
            for context in reversed(contexts):
                context.__exit__(None, None, None)
