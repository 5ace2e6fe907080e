"""Regression tests for bugs found in review: each failed before its fix."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from types import ModuleType
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway_provisioners.core import port_range as pr
from gateway_provisioners.core.backend import Backend, BackendHandle
from gateway_provisioners.core.errors import ConfigurationError, LaunchTimeout, ProtocolError
from gateway_provisioners.core.handshake import ControlCipher, control_keys
from gateway_provisioners.core.kernel import RemoteKernel
from gateway_provisioners.core.launch import COMMON_PARAMS, ConnectionMode, LaunchSpec, Param


def free_window(size: int) -> int:
    """The first port of ``size`` consecutive free ports below the ephemeral range."""
    for start in range(21000, 32000, size):
        probes = []
        try:
            for port in range(start, start + size):
                probe = socket.socket()
                probes.append(probe)
                probe.bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise AssertionError("no free port window")


@pytest.mark.parametrize("raw", ["nan", "NaN", "-nan", "inf"])
def test_launch_timeout_refuses_non_finite_numbers(raw: str) -> None:
    param = next(p for p in COMMON_PARAMS if p.name == "KERNEL_LAUNCH_TIMEOUT")
    with pytest.raises(ConfigurationError, match="KERNEL_LAUNCH_TIMEOUT"):
        param.parse(raw)


def test_unbounded_float_param_refuses_inf() -> None:
    with pytest.raises(ConfigurationError, match="finite"):
        Param("KERNEL_CPUS", kind=float, minimum=0.1).parse("inf")


@pytest.mark.parametrize("seed", range(10))
def test_core_holds_every_port_of_a_minimum_size_range(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pr, "random", random.Random(seed))
    start = free_window(6)
    with pr.hold_ports(6, pr.PortRange(start, start + 5)) as held:
        assert sorted(held.ports) == list(range(start, start + 6))


@pytest.mark.parametrize("seed", range(10))
def test_agent_holds_every_port_of_a_minimum_size_range(
    seed: int, monkeypatch: pytest.MonkeyPatch, agent: ModuleType
) -> None:
    monkeypatch.setattr(agent, "random", random.Random(seed))
    start = free_window(6)
    sockets = agent.hold_ports(6, "127.0.0.1", (start, start + 5))
    try:
        assert sorted(s.getsockname()[1] for s in sockets) == list(range(start, start + 6))
    finally:
        for sock in sockets:
            sock.close()


def test_two_agents_cannot_hold_the_same_port(agent: ModuleType) -> None:
    # SO_REUSEADDR on two non-listening sockets lets both bind one port; fresh allocations must not set it.
    port = free_window(1)
    first = agent.hold_ports(1, "127.0.0.1", (port, port))
    try:
        with pytest.raises(OSError):
            agent.hold_ports(1, "127.0.0.1", (port, port))
    finally:
        for sock in first:
            sock.close()


class HangingBackend(Backend):
    name = "hanging"
    modes = (ConnectionMode.STDOUT,)

    async def submit(self, spec: LaunchSpec) -> BackendHandle:
        await asyncio.Event().wait()  # never accepts
        raise AssertionError("unreachable")

    async def terminate(self, handle: BackendHandle, grace: float = 0.0) -> None:
        pass

    async def signal(self, handle: BackendHandle, signum: int) -> None:
        pass

    async def log_tail(self, handle: BackendHandle, lines: int = 20) -> list[str]:
        return []

    def serialize(self, handle: BackendHandle) -> dict[str, Any]:
        return {}

    async def restore(self, data: dict[str, Any]) -> BackendHandle:
        return BackendHandle("k")


async def test_submit_slower_than_launch_timeout_raises_launch_timeout() -> None:
    kernel = RemoteKernel(HangingBackend(), "k")
    with pytest.raises(LaunchTimeout):
        await kernel.start(LaunchSpec("k", ["python"], launch_timeout=0.2))
    assert kernel.handle is None


def test_authenticated_non_json_control_frame_is_a_protocol_error() -> None:
    keys = control_keys(bytes(32), "k", bytes(16), bytes(16))
    counter = struct.pack(">Q", 0)
    frame = counter + AESGCM(keys["s2a"]).encrypt(b"\0" * 4 + counter, b"not json", b"s2a" + counter)
    with pytest.raises(ProtocolError):
        ControlCipher(keys, sending="a2s").open(frame)
