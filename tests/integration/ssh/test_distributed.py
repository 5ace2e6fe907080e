"""DistributedProvisioner against real OpenSSH: a real AsyncKernelManager, real kernels on the "remote" hosts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest
from jupyter_client.manager import AsyncKernelManager

from gateway_provisioners.core.errors import BackendUnavailable, ConfigurationError, LaunchTimeout
from gateway_provisioners.provisioners.distributed import DistributedProvisioner
from tests.conftest import pid_gone
from tests.support.kernels import (
    INTERRUPTED_WITHIN,
    hostname_of,
    interrupt_running_cell,
    kernel_pid,
    reattach_in_new_process,
    run_code,
    shell_answers,
)
from tests.support.sshd import SSHServer, free_port

pytestmark = pytest.mark.integration


def processes_of(kernel_id: str) -> list[psutil.Process]:
    """Processes on this machine that belong to ``kernel_id`` (its agent by command line, its kernel by env)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if kernel_id in " ".join(proc.info["cmdline"] or []) or proc.environ().get("KERNEL_ID") == kernel_id:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.fixture
async def km(ssh_spec):  # type: ignore[no-untyped-def]
    manager = AsyncKernelManager(kernel_name=ssh_spec())
    await manager.start_kernel()
    yield manager
    if manager.has_kernel:
        await manager.shutdown_kernel(now=True)


async def test_lifecycle_over_ssh(km: AsyncKernelManager) -> None:
    assert isinstance(km.provisioner, DistributedProvisioner)
    content, out = await run_code(km, "print(6 * 7)")
    assert (content["status"], "".join(out).strip()) == ("ok", "42")
    # Interrupt a running cell.
    reply, elapsed = await interrupt_running_cell(km)
    assert reply["ename"] == "KeyboardInterrupt" and elapsed < INTERRUPTED_WITHIN
    # Restart in place keeps the ports; a fresh client executes.
    ports = km.get_connection_info()
    old_pid = await kernel_pid(km)
    await km.restart_kernel()
    assert km.get_connection_info() == ports
    new_pid = await kernel_pid(km)
    assert new_pid != old_pid and pid_gone(old_pid, 1.0)
    # Shutdown: the kernel process is gone within 1 s.
    await km.shutdown_kernel()
    assert pid_gone(new_pid, 1.0)
    assert not processes_of(km.kernel_id)


async def test_shell_metacharacters_in_kernel_values_arrive_intact(ssh_spec, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "pwned"
    hostile = f"$(touch {marker}); `touch {marker}`; ' \" \\ | & > {marker} \n * ~ !"
    km = AsyncKernelManager(kernel_name=ssh_spec())
    await km.start_kernel(env={**os.environ, "KERNEL_HOSTILE": hostile})
    try:
        _, out = await run_code(km, "import os, json; print(json.dumps(os.environ['KERNEL_HOSTILE']))")
    finally:
        await km.shutdown_kernel()
    assert json.loads("".join(out)) == hostile
    assert not marker.exists(), "a KERNEL_* value was executed by a shell"


async def test_kernel_killed_is_reported_dead_within_3_seconds(km: AsyncKernelManager) -> None:
    os.kill(await kernel_pid(km), signal.SIGKILL)
    started = time.monotonic()
    while await km.is_alive():
        await asyncio.wait_for(km.provisioner.kernel.lifecycle.wait_changed(), 3)
    assert time.monotonic() - started < 3


async def test_launch_timeout_leaves_no_process(ssh_spec) -> None:  # type: ignore[no-untyped-def]
    name = ssh_spec("gp-ssh-slow", argv=[sys.executable, "-c", "import time; time.sleep(120)"], launch_timeout=3)
    km = AsyncKernelManager(kernel_name=name)
    started = time.monotonic()
    with pytest.raises(LaunchTimeout) as caught:
        await km.start_kernel()
    assert 3 <= time.monotonic() - started < 8
    assert "platform state" in caught.value.details()
    leftovers = processes_of(km.kernel_id)
    assert all(pid_gone(p.pid, 2.0) for p in leftovers), [p.cmdline() for p in leftovers]


async def test_kernel_that_exits_at_once_fails_fast_with_its_output(ssh_spec) -> None:  # type: ignore[no-untyped-def]
    argv = [sys.executable, "-c", "import sys; print('no kernel here', file=sys.stderr); sys.exit(4)"]
    km = AsyncKernelManager(kernel_name=ssh_spec("gp-ssh-broken", argv=argv))
    started = time.monotonic()
    with pytest.raises(Exception, match="exited during start-up with code 4") as caught:
        await km.start_kernel()
    assert time.monotonic() - started < 5
    assert "no kernel here" in caught.value.details()


async def test_reattach_from_another_server_process(km: AsyncKernelManager, tmp_path: Path) -> None:
    pid = await kernel_pid(km)
    seen_pid, handle = await reattach_in_new_process(km, tmp_path)
    assert seen_pid == pid
    assert handle["data"]["host"] == km.provisioner.kernel.handle.data["host"]
    assert await km.is_alive()


async def test_unreachable_host_is_skipped(ssh_spec, sshd: SSHServer) -> None:  # type: ignore[no-untyped-def]
    dead = f"127.0.0.1:{free_port()}"
    name = ssh_spec("gp-ssh-skip", hosts=[dead, sshd.address], load_balancing_algorithm="round-robin")
    managers = [AsyncKernelManager(kernel_name=name) for _ in range(2)]
    try:
        for km in managers:  # round-robin: one of the two launches starts with the dead host
            await km.start_kernel()
            assert km.provisioner.kernel.handle.data["host"].endswith("@" + sshd.address)
    finally:
        for km in managers:
            if km.has_kernel:
                await km.shutdown_kernel(now=True)


async def test_no_reachable_host_names_each_one(ssh_spec) -> None:  # type: ignore[no-untyped-def]
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    km = AsyncKernelManager(kernel_name=ssh_spec("gp-ssh-none", hosts=dead))
    with pytest.raises(BackendUnavailable) as caught:
        await km.start_kernel()
    details = caught.value.details()
    assert all(host in details for host in dead)
    assert not km.has_kernel


async def test_unknown_host_key_is_refused_with_the_fix(ssh_spec, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    km = AsyncKernelManager(kernel_name=ssh_spec("gp-ssh-hostkey", known_hosts=str(empty)))
    with pytest.raises(BackendUnavailable) as caught:
        await km.start_kernel()
    assert "not trusted" in caught.value.details() and "ssh-keyscan" in caught.value.details()


async def test_remote_host_must_be_configured(ssh_spec) -> None:  # type: ignore[no-untyped-def]
    km = AsyncKernelManager(kernel_name=ssh_spec())
    with pytest.raises(ConfigurationError, match="KERNEL_REMOTE_HOST"):
        await km.start_kernel(env={**os.environ, "KERNEL_REMOTE_HOST": "10.9.9.9"})


async def test_callback_mode_over_ssh(ssh_spec) -> None:  # type: ignore[no-untyped-def]
    name = ssh_spec("gp-ssh-callback", connection_mode="callback", response_ip="127.0.0.1", response_port=0)
    km = AsyncKernelManager(kernel_name=name)
    await km.start_kernel()
    try:
        assert (await run_code(km, "1 + 1"))[0]["status"] == "ok"
    finally:
        await km.shutdown_kernel()


# --- several hosts: network namespaces with their own sshd and hostname ---------------------------------------------


async def test_round_robin_across_hosts(ssh_spec, netns_hosts: list[SSHServer]) -> None:  # type: ignore[no-untyped-def]
    name = ssh_spec("gp-ssh-rr", hosts=[s.address for s in netns_hosts], load_balancing_algorithm="round-robin")
    managers = [AsyncKernelManager(kernel_name=name) for _ in range(4)]
    try:
        await asyncio.gather(*(km.start_kernel() for km in managers))
        names = [await hostname_of(km) for km in managers]
    finally:
        await asyncio.gather(*(km.shutdown_kernel() for km in managers if km.has_kernel))
    assert sorted(names) == ["gpt-h1", "gpt-h1", "gpt-h2", "gpt-h2"]


async def test_least_connection_counts_running_kernels(ssh_spec, netns_hosts: list[SSHServer]) -> None:  # type: ignore[no-untyped-def]
    hosts = [s.address for s in netns_hosts]
    name = ssh_spec("gp-ssh-lc", hosts=hosts, load_balancing_algorithm="least-connection")
    first, second, third = (AsyncKernelManager(kernel_name=name) for _ in range(3))
    try:
        await first.start_kernel()
        await second.start_kernel()
        assert {await hostname_of(first), await hostname_of(second)} == {"gpt-h1", "gpt-h2"}
        host_of_first = await hostname_of(first)
        await first.shutdown_kernel()
        await third.start_kernel()  # the host that just freed a slot has fewer kernels now
        assert await hostname_of(third) == host_of_first
    finally:
        for km in (first, second, third):
            if km.has_kernel:
                await km.shutdown_kernel(now=True)


async def test_tunnelled_kernel_on_a_namespace_host(ssh_spec, netns_hosts: list[SSHServer]) -> None:  # type: ignore[no-untyped-def]
    name = ssh_spec("gp-ssh-tunnel", hosts=[netns_hosts[0].address], tunnel_kernel_ports=True)
    km = AsyncKernelManager(kernel_name=name)
    await km.start_kernel()
    try:
        assert km.get_connection_info()["ip"] == "127.0.0.1"  # through the SSH connection
        assert await hostname_of(km) == "gpt-h1"
        ports = km.get_connection_info()
        await km.restart_kernel()
        assert km.get_connection_info() == ports
    finally:
        await km.shutdown_kernel()


async def test_encrypted_kernel_channels_to_a_namespace_host(ssh_spec, netns_hosts: list[SSHServer]) -> None:  # type: ignore[no-untyped-def]
    # Without a tunnel the kernel's channels cross the veth link: CurveZMQ encrypts them end to end.
    name = ssh_spec("gp-ssh-curve", hosts=[netns_hosts[0].address], metadata={"supported_encryption": ["curve"]})
    km = AsyncKernelManager(kernel_name=name, transport_encryption="required")
    await km.start_kernel()
    try:
        info = km.get_connection_info()
        assert info["ip"] == netns_hosts[0].host and info["curve_publickey"]
        assert await hostname_of(km) == "gpt-h1"
        assert await shell_answers(info, curve=True, timeout=30)
        assert not await shell_answers(info, curve=False, timeout=2)
    finally:
        await km.shutdown_kernel(now=True)


async def test_host_with_stopped_sshd_is_skipped(ssh_spec, netns_hosts: list[SSHServer]) -> None:  # type: ignore[no-untyped-def]
    # Last in this module: it stops the second host's sshd.
    name = ssh_spec("gp-ssh-down", hosts=[s.address for s in netns_hosts], connect_timeout=3)
    netns_hosts[1].stop()
    managers = [AsyncKernelManager(kernel_name=name) for _ in range(2)]
    try:
        for km in managers:
            await km.start_kernel()
            assert await hostname_of(km) == "gpt-h1"
    finally:
        for km in managers:
            if km.has_kernel:
                await km.shutdown_kernel(now=True)
