"""Fixtures: the API emulator, the test's kubelet, kernel specs for ``kubernetes-provisioner`` pointing at them."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway_provisioners.adapters.kubernetes import close_hubs
from gateway_provisioners.agent import agent_path

from ...conftest import write_kernel_spec
from .emulator import KubeEmulator
from .kubelet import Kubelet

NAMESPACE = "kernels"
IMAGE = "gpt/kernel-py:ok"


@pytest.fixture
async def kube() -> AsyncIterator[KubeEmulator]:
    async with KubeEmulator(namespaces=("default", NAMESPACE)) as emulator:
        try:
            yield emulator
        finally:
            await close_hubs()


@pytest.fixture
async def kubelet(kube: KubeEmulator, tmp_path: Path) -> AsyncIterator[Kubelet]:
    node = Kubelet(kube, tmp_path)
    yield node
    await node.close()


@pytest.fixture
def kubeconfig(kube: KubeEmulator, tmp_path: Path) -> str:
    return kube.kubeconfig(str(tmp_path / "kubeconfig"))


def provisioner_config(kubeconfig: str, **extra: Any) -> dict[str, Any]:
    """The kernel spec's provisioner config: the emulator's kubeconfig; the agent is this checkout's, run here."""
    config = {
        "kubeconfig": kubeconfig,
        "namespace": NAMESPACE,
        "image_name": IMAGE,
        "agent_python": sys.executable,
        "agent_path": str(agent_path()),
        "kernel_bind_ip": "127.0.0.1",  # the "pod" is this machine: bind loopback only
        "launch_timeout": 60,
    }
    config.update(extra)
    return config


@pytest.fixture
def k8s_spec(jupyter_path: Path, kubeconfig: str):  # type: ignore[no-untyped-def]
    """Write a kernel spec named ``name`` for kubernetes-provisioner with ``config`` overrides; returns the name."""

    def write(
        name: str = "gp-k8s", argv: list[str] | None = None, metadata: dict[str, Any] | None = None, **config: Any
    ) -> str:
        write_kernel_spec(
            jupyter_path, name, argv=argv, provisioner="kubernetes-provisioner",
            config=provisioner_config(kubeconfig, **config), metadata=metadata,
        )  # fmt: skip
        return name

    return write
