"""docker-provisioner and docker-swarm-provisioner on a real Docker engine, through a real AsyncKernelManager."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning.factory import KernelProvisionerFactory

from gateway_provisioners.core.errors import ConfigurationError, ImagePullError, KernelExited, NotAuthorized

from ...support.kernels import INTERRUPTED_WITHIN, interrupt_running_cell, run_code, shell_answers
from .conftest import OWNER, Variant, make_variant

pytestmark = pytest.mark.integration

ALL = ["docker-bridge", "docker-host", "swarm-host", "swarm-network"]
MAIN = ["docker-bridge", "swarm-host"]  # one of each provisioner, one of each connection mode


@pytest.fixture
def variant(request: pytest.FixtureRequest, jupyter_path: Path) -> Variant:
    return make_variant(request.param, request, jupyter_path)


def resource_id(km: AsyncKernelManager) -> str:
    data = km.provisioner.kernel.handle.data
    return data.get("service_id") or data["container_id"]


async def wait_for(condition: Any, timeout: float) -> bool:
    """Poll a real condition (an async callable) until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.mark.parametrize("variant", ALL, indirect=True)
async def test_execute_restart_in_place_and_shutdown(variant: Variant, environ_marker: str) -> None:
    km = AsyncKernelManager(kernel_name=variant.spec())
    await km.start_kernel()
    try:
        content, out = await run_code(
            km, "import os; print(6 * 7, os.getuid(), sorted(k for k in os.environ if k.startswith('GP_')))"
        )
        assert content["status"] == "ok"
        answer, uid, names = out.split(" ", 2)
        assert (answer, uid) == ("42", "1000"), out  # real code, as the default non-root user
        assert environ_marker not in names and "GP_LAUNCH_PARAMS" not in names, names
        ports = {k: km.get_connection_info()[k] for k in ("shell_port", "iopub_port", "control_port", "hb_port")}
        before = resource_id(km)
        kernel_id = km.kernel_id
        assert variant.containers(kernel_id), "no labelled container on the engine"

        started = time.monotonic()
        await km.restart_kernel(now=True)
        restart_s = time.monotonic() - started
        assert resource_id(km) == before, "restart in place must keep the container/service"
        assert {k: km.get_connection_info()[k] for k in ports} == ports, "restart in place must keep the ports"
        content, out = await run_code(km, "print('again')")
        assert out.strip() == "again"
        assert restart_s < 30, restart_s  # in place: well inside the launch timeout (the benchmark measures it)
    finally:
        await km.shutdown_kernel(now=True)
    assert variant.wait_nothing_left(kernel_id, timeout=5), "container or service left after shutdown"


@pytest.mark.parametrize("variant", MAIN, indirect=True)
async def test_encrypted_kernel_channels(variant: Variant) -> None:
    # Server-assigned (bridge) and callback (Swarm, host network) modes both hand the server's Curve keys to the agent.
    km = AsyncKernelManager(
        kernel_name=variant.spec("gp-docker-curve", metadata={"supported_encryption": ["curve"]}),
        transport_encryption="required",
    )
    await km.start_kernel()
    try:
        info = km.get_connection_info()
        assert info["curve_publickey"]
        content, out = await run_code(km, "print(6 * 7)")
        assert content["status"] == "ok" and out.strip() == "42"
        assert await shell_answers(info, curve=True, timeout=30)
        assert not await shell_answers(info, curve=False, timeout=2)
    finally:
        await km.shutdown_kernel(now=True)


@pytest.mark.parametrize("variant", MAIN, indirect=True)
async def test_interrupt(variant: Variant) -> None:
    km = AsyncKernelManager(kernel_name=variant.spec())
    await km.start_kernel()
    try:
        reply, elapsed = await interrupt_running_cell(km, timeout=20)
        assert reply["status"] == "error"
        assert reply["ename"] == "KeyboardInterrupt"
        assert elapsed < INTERRUPTED_WITHIN
        assert await km.is_alive()
    finally:
        await km.shutdown_kernel(now=True)


@pytest.mark.parametrize("variant", MAIN, indirect=True)
async def test_missing_image_fails_fast(variant: Variant) -> None:
    km = AsyncKernelManager(kernel_name=variant.spec(image_name=f"gp-test-missing-{OWNER}:nope"))
    started = time.monotonic()
    with pytest.raises(ImagePullError) as info:
        await km.start_kernel()
    assert time.monotonic() - started < 5
    assert "gp-test-missing" in str(info.value) and "not on" in str(info.value)
    assert variant.wait_nothing_left(km.kernel_id, timeout=2)


@pytest.mark.parametrize("variant", MAIN, indirect=True)
async def test_crashing_kernel_fails_fast_with_exit_code_and_log(variant: Variant) -> None:
    argv = ["python3", "-c", "import sys; print('boom: no kernel today', file=sys.stderr, flush=True); sys.exit(3)"]
    km = AsyncKernelManager(kernel_name=variant.spec("gp-crash", argv=argv))
    started = time.monotonic()
    with pytest.raises(KernelExited) as info:
        await km.start_kernel()
    assert time.monotonic() - started < 10
    details = info.value.details()
    assert "boom: no kernel today" in details, details
    assert "code 3" in details, details
    assert variant.wait_nothing_left(km.kernel_id, timeout=5)


@pytest.mark.parametrize("variant", MAIN, indirect=True)
async def test_crashing_container_fails_fast_with_exit_code_and_log(variant: Variant) -> None:
    command = ["sh", "-c", "echo 'entrypoint broken: agent missing' >&2; exit 7"]
    km = AsyncKernelManager(kernel_name=variant.spec("gp-badentry", agent_command=command))
    started = time.monotonic()
    with pytest.raises(KernelExited) as info:
        await km.start_kernel()
    assert time.monotonic() - started < 10
    assert info.value.exit_code == 7, info.value.details()
    assert any("entrypoint broken" in line for line in info.value.diagnostics), info.value.details()
    assert variant.wait_nothing_left(km.kernel_id, timeout=5)


@pytest.mark.parametrize("variant", MAIN, indirect=True)
async def test_container_killed_from_outside_is_dead_within_3s(variant: Variant) -> None:
    km = AsyncKernelManager(kernel_name=variant.spec())
    await km.start_kernel()
    try:
        assert await km.is_alive()
        (container,) = variant.containers(km.kernel_id)
        started = time.monotonic()
        container.kill()

        async def dead() -> bool:
            return not await km.is_alive()

        assert await wait_for(dead, 3), "a killed container must poll as dead within 3 s"
        print(f"{variant.name}: dead after {time.monotonic() - started:.2f} s")
    finally:
        await km.shutdown_kernel(now=True)
    assert variant.wait_nothing_left(km.kernel_id, timeout=5)


@pytest.mark.parametrize("variant", ["swarm-host"], indirect=True)
async def test_service_removed_from_outside_leaves_the_other_kernels_alone(variant: Variant) -> None:
    # The batched task query names every tracked service; one removed service must not blind it to the others.
    name = variant.spec()
    gone, kept = AsyncKernelManager(kernel_name=name), AsyncKernelManager(kernel_name=name)
    await asyncio.gather(gone.start_kernel(), kept.start_kernel())
    try:
        (service,) = variant.services(gone.kernel_id)
        service.remove()

        async def dead() -> bool:
            return not await gone.is_alive()

        assert await wait_for(dead, 3), "a removed service must poll as dead within 3 s"
        assert await kept.is_alive()
        _, out = await run_code(kept, "print('still here')")
        assert out.strip() == "still here"
    finally:
        await asyncio.gather(*(km.shutdown_kernel(now=True) for km in (gone, kept)))
    assert variant.wait_nothing_left(gone.kernel_id, timeout=5) and variant.wait_nothing_left(kept.kernel_id, timeout=5)


@pytest.mark.parametrize("variant", MAIN, indirect=True)
async def test_reattach_from_provisioner_info(variant: Variant) -> None:
    km = AsyncKernelManager(kernel_name=variant.spec())
    await km.start_kernel()
    try:
        _, out = await run_code(km, "import os; marker = os.getpid(); print(marker)")
        info = json.loads(json.dumps(await km.provisioner.get_provisioner_info()))
        # A second manager (as a restarted server would make) takes the kernel over from the saved info.
        km2 = AsyncKernelManager(kernel_name=km.kernel_name)
        km2.kernel_id = km.kernel_id
        km2.provisioner = KernelProvisionerFactory.instance(parent=km2.parent).create_provisioner_instance(
            km2.kernel_id, km2.kernel_spec, parent=km2
        )
        await km2.provisioner.load_provisioner_info(info)
        km2.load_connection_info(info["connection_info"])
        assert await km2.is_alive()
        _, out2 = await run_code(km2, "print(marker)")
        assert out2.strip() == out.strip()
        await km2.interrupt_kernel()  # the control channel of the reattached kernel works
        assert await km2.is_alive()
    finally:
        await km.shutdown_kernel(now=True)
    assert variant.wait_nothing_left(km.kernel_id, timeout=5)


@pytest.mark.parametrize("variant", MAIN, indirect=True)
async def test_reaper_removes_an_orphan(variant: Variant) -> None:
    km = AsyncKernelManager(kernel_name=variant.spec())
    await km.start_kernel()
    kernel_id = km.kernel_id
    backend = km.provisioner.kernel.backend
    try:
        # The server "forgets" the kernel (as a crashed server would): nothing live claims it any more.
        owned = await backend.list_owned()
        assert kernel_id in {item["kernel_id"] for item in owned}
        removed = await backend.reap(live_kernel_ids=set(), dry_run=True)
        assert kernel_id in {item["kernel_id"] for item in removed}
        assert variant.containers(kernel_id), "a dry run must not remove anything"
        removed = await backend.reap(live_kernel_ids={"some-other-kernel"})
        assert kernel_id in {item["kernel_id"] for item in removed}
        assert variant.wait_nothing_left(kernel_id, timeout=10), "the reaper left the orphan"

        async def dead() -> bool:
            return not await km.is_alive()

        assert await wait_for(dead, 3)
    finally:
        await km.shutdown_kernel(now=True)


@pytest.mark.parametrize("variant", MAIN, indirect=True)
def test_reaper_cli_removes_ended_kernels_only(variant: Variant) -> None:
    labels = {"org.jupyter.gp.owner": OWNER, "org.jupyter.gp.kernel-id": f"orphan-{variant.name}"}
    client = variant.client
    if variant.swarm:
        ended = client.services.create(
            variant.image, ["sh", "-c", "exit 0"], name=f"gp-test-orphan-{OWNER}", labels=labels,
            container_labels=labels, restart_policy={"Condition": "none"}, networks=["host"],
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(t["Status"]["State"] == "complete" for t in ended.tasks()):
            time.sleep(0.1)
    else:
        ended = client.containers.create(variant.image, name=f"gp-test-orphan-{OWNER}", labels=labels)
    command = [sys.executable, "-m", "gateway_provisioners_cli.docker_spec", "reap", "--owner", OWNER]
    if variant.swarm:
        command.append("--swarm")
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"orphan-{variant.name}" in result.stdout, result.stdout
    assert variant.wait_nothing_left(f"orphan-{variant.name}", timeout=10)


@pytest.mark.parametrize("variant", ["docker-bridge"], indirect=True)
async def test_resources_and_user_from_kernel_values(variant: Variant) -> None:
    km = AsyncKernelManager(kernel_name=variant.spec())
    env = {**os.environ, "KERNEL_CPUS": "0.5", "KERNEL_MEMORY": "256m", "KERNEL_UID": "1234", "KERNEL_GID": "1234"}
    await km.start_kernel(env=env)
    try:
        (container,) = variant.containers(km.kernel_id)
        host = container.attrs["HostConfig"]
        assert (host["NanoCpus"], host["Memory"]) == (500_000_000, 256 << 20)
        _, out = await run_code(km, "import os; print(os.getuid(), os.getgid())")
        assert out.strip() == "1234 1234"
    finally:
        await km.shutdown_kernel(now=True)


@pytest.mark.parametrize("variant", ["docker-bridge"], indirect=True)
@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"KERNEL_UID": "00"}, NotAuthorized),
        ({"KERNEL_GID": "0"}, NotAuthorized),
        ({"KERNEL_MEMORY": "lots"}, ConfigurationError),
        ({"KERNEL_CPUS": "-1"}, ConfigurationError),
        ({"KERNEL_IMAGE": "someone/else:latest"}, NotAuthorized),
    ],
)
async def test_bad_kernel_values_are_refused_before_anything_starts(
    variant: Variant, values: dict[str, str], error: type[Exception]
) -> None:
    km = AsyncKernelManager(kernel_name=variant.spec())
    with pytest.raises(error) as info:
        await km.start_kernel(env={**os.environ, **values})
    assert next(iter(values)) in str(info.value)
    assert not variant.containers(km.kernel_id)


@pytest.mark.parametrize("variant", ["docker-host"], indirect=True)
async def test_jupyter_execute_through_a_spec_from_jupyter_docker_spec(variant: Variant, tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    install = subprocess.run(
        [sys.executable, "-m", "gateway_provisioners_cli.docker_spec", "install", "--prefix", str(prefix),
         "--kernel-name", "gp-docker-nb", "--image-name", variant.image, "--network", "host",
         "--pull-policy", "never", "--owner", OWNER],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    notebook = tmp_path / "nb.ipynb"
    cell = {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
            "source": "import sys\nprint('answer', 6 * 7, sys.prefix)"}  # fmt: skip
    notebook.write_text(json.dumps({
        "cells": [cell], "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "gp-docker-nb", "display_name": "d", "language": "python"}},
    }))  # fmt: skip
    env = {**os.environ, "JUPYTER_PATH": str(prefix / "share" / "jupyter")}
    jupyter = Path(sys.executable).with_name("jupyter")
    proc = await asyncio.create_subprocess_exec(
        str(jupyter), "execute", "--kernel_name=gp-docker-nb", "--inplace", str(notebook), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    outputs = json.loads(notebook.read_text())["cells"][0]["outputs"]
    text = "".join(outputs[0]["text"])
    assert text == "answer 42 /opt/gp-kernel\n", text  # ran in the image's kernel venv, not on this host
    leftovers = variant.client.containers.list(
        all=True, ignore_removed=True, filters={"label": f"org.jupyter.gp.owner={OWNER}"}
    )
    assert not leftovers


def test_image_bootstrap_install_writes_the_agent(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway_provisioners_cli.image_bootstrap", "install", "--dir", str(tmp_path / "gp")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "gp" / "gp_agent.py").exists() and os.access(tmp_path / "gp" / "gp-agent", os.X_OK)
    assert 'ENTRYPOINT ["/usr/local/bin/gp-agent"]' in result.stdout
