"""The launch token and the kernel's HMAC key never appear in what `docker inspect` shows (issue 11, item 9).

Anyone allowed to inspect containers or services (``docker inspect``, ``docker service inspect``, a monitoring agent
with read access to the engine) must not learn them. The agent reads its launch parameters from a 0600 file owned by
the kernel's user instead: written into the stopped container (Docker), or a Swarm secret that goes with the kernel.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import subprocess
import time
import uuid
from typing import Any

import pytest
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning.factory import KernelProvisionerFactory

from gateway_provisioners.core.errors import KernelExited, LaunchError
from gateway_provisioners.core.launch import ConnectionMode, LaunchSpec

from ...support.kernels import run_code
from .conftest import KERNEL_LABEL, OWNER, OWNER_LABEL, Variant, make_variant

pytestmark = pytest.mark.integration

ALL = ["docker-bridge", "docker-host", "swarm-host", "swarm-network"]


@pytest.fixture
def variant(request: pytest.FixtureRequest, jupyter_path: Any) -> Variant:
    return make_variant(request.param, request, jupyter_path)


def docker_cli(*args: str) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def secret_forms(value: bytes) -> set[str]:
    """Every way a secret of raw bytes could be written into a configuration: text, base64 (both alphabets), hex."""
    forms = {
        base64.urlsafe_b64encode(value).decode(),
        base64.b64encode(value).decode(),
        value.hex(),
    }
    try:
        forms.add(value.decode())
    except UnicodeDecodeError:
        pass
    return {form.rstrip("=") for form in forms if len(form) >= 16}


def kernel_secrets(km: AsyncKernelManager) -> dict[str, set[str]]:
    """The launch token and the HMAC key, from the provisioner and the manager themselves."""
    token: bytes = km.provisioner.kernel.spec.token
    key = km.session.key
    assert len(token) == 32 and len(key) >= 16, (len(token), len(key))
    return {"launch token": secret_forms(token), "HMAC key": secret_forms(bytes(key))}


def assert_not_in(text: str, secrets: dict[str, set[str]], where: str) -> None:
    for name, forms in secrets.items():
        for form in forms:
            assert form not in text, f"the {name} is readable in {where}"
    assert "GP_LAUNCH_PARAMS" not in text, f"launch parameters in the environment, readable in {where}"


def wait_no_secret(variant: Variant, kernel_id: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not launch_secrets(variant, kernel_id):
            return True
        time.sleep(0.1)
    return False


def launch_secrets(variant: Variant, kernel_id: str) -> list[Any]:
    return list(variant.client.secrets.list(filters={"label": f"{KERNEL_LABEL}={kernel_id}"}))


@pytest.mark.parametrize("variant", ALL, indirect=True)
async def test_inspect_shows_neither_token_nor_key(variant: Variant) -> None:
    km = AsyncKernelManager(kernel_name=variant.spec())
    await km.start_kernel()
    kernel_id = km.kernel_id
    try:
        secrets = kernel_secrets(km)
        (container,) = variant.containers(kernel_id)
        assert_not_in(docker_cli("inspect", container.id), secrets, "`docker inspect` of the container")
        logs = subprocess.run(["docker", "logs", container.id], capture_output=True, text=True, timeout=60)
        assert_not_in(logs.stdout + logs.stderr, secrets, "the container's log")
        if variant.swarm:
            (service,) = variant.services(kernel_id)
            assert_not_in(docker_cli("service", "inspect", service.id), secrets, "`docker service inspect`")
            (secret,) = launch_secrets(variant, kernel_id)
            assert secret.attrs["Spec"]["Labels"].get(OWNER_LABEL) == OWNER
            assert kernel_id[:8] in secret.name, "the Swarm secret's name carries the kernel id"
            assert_not_in(docker_cli("secret", "inspect", secret.id), secrets, "`docker secret inspect`")

        # The kernel still runs code, and the parameters file is private to the kernel's user.
        content, out = await run_code(km, "import os; print(6 * 7, os.getuid(), os.getgid())")
        assert content["status"] == "ok", content
        answer, uid, gid = out.split()
        assert answer == "42", out
        args = json.loads(docker_cli("inspect", "--format", "{{json .Args}}", container.id))
        path = args[args.index("--params") + 1]
        mode_owner = docker_cli("exec", container.id, "stat", "-L", "-c", "%a %u %g %F", path).strip()
        assert mode_owner == f"600 {uid} {gid} regular file", mode_owner
        # The kernel's own environment holds no launch parameters either.
        _, names = await run_code(km, "import os; print(sorted(k for k in os.environ if k.startswith('GP_LAUNCH')))")
        assert names.strip() == "[]", names

        await km.restart_kernel(now=True)  # in place: the agent keeps its parameters, nothing is delivered again
        assert variant.containers(kernel_id)[0].id == container.id
        _, out = await run_code(km, "print('again')")
        assert out.strip() == "again"
    finally:
        await km.shutdown_kernel(now=True)
    assert variant.wait_nothing_left(kernel_id, timeout=10), "container or service left after shutdown"
    if variant.swarm:
        assert wait_no_secret(variant, kernel_id, timeout=5), "the launch secret outlived the kernel"


@pytest.mark.parametrize("variant", ["swarm-host"], indirect=True)
async def test_swarm_secret_goes_with_a_failed_launch(variant: Variant) -> None:
    argv = ["python3", "-c", "import sys; sys.exit(3)"]
    km = AsyncKernelManager(kernel_name=variant.spec("gp-crash", argv=argv))
    with pytest.raises(KernelExited):
        await km.start_kernel()
    assert variant.wait_nothing_left(km.kernel_id, timeout=10)
    assert wait_no_secret(variant, km.kernel_id, timeout=5), "a failed launch left its secret behind"

    # The manager refuses the service itself (no such network): the secret made just before it goes too.
    km = AsyncKernelManager(kernel_name=variant.spec("gp-nonet", network=f"gp-test-no-such-network-{OWNER}"))
    with pytest.raises(LaunchError):
        await km.start_kernel()
    assert not variant.services(km.kernel_id)
    assert wait_no_secret(variant, km.kernel_id, timeout=5), "a refused service left its secret behind"


@pytest.mark.parametrize("variant", ["swarm-host"], indirect=True)
async def test_swarm_reaper_removes_orphan_secrets_only(variant: Variant) -> None:
    km = AsyncKernelManager(kernel_name=variant.spec())
    await km.start_kernel()
    kernel_id = km.kernel_id
    orphan_id = f"orphan-secret-{OWNER}"
    labels = {OWNER_LABEL: OWNER, KERNEL_LABEL: orphan_id}
    orphan = variant.client.secrets.create(name=f"gp-launch-{orphan_id}", data=b"{}", labels=labels)
    try:
        backend = km.provisioner.kernel.backend
        # Without a list of live kernels, only what belongs to no service goes: the live kernel keeps its secret.
        removed = await backend.reap()
        assert orphan_id in {item["kernel_id"] for item in removed}, removed
        assert not launch_secrets(variant, orphan_id), "the orphan secret is still there"
        assert launch_secrets(variant, kernel_id), "the reaper removed a live kernel's secret"
        _, out = await run_code(km, "print('alive')")
        assert out.strip() == "alive"
        # The server forgot the kernel: its service and its secret go.
        await backend.reap(live_kernel_ids={"some-other-kernel"})
        assert variant.wait_nothing_left(kernel_id, timeout=10)
        assert wait_no_secret(variant, kernel_id, timeout=5)
    finally:
        await km.shutdown_kernel(now=True)
        for secret in launch_secrets(variant, orphan_id):
            secret.remove()
        del orphan


@pytest.mark.parametrize("variant", ["docker-bridge", "swarm-host"], indirect=True)
async def test_curve_secret_key_is_not_in_inspect_either(variant: Variant) -> None:
    km = AsyncKernelManager(
        kernel_name=variant.spec("gp-docker-curve", metadata={"supported_encryption": ["curve"]}),
        transport_encryption="required",
    )
    await km.start_kernel()
    try:
        curve_keys = km.provisioner.kernel.spec.curve_keys
        assert curve_keys, "the server chose no CurveZMQ keys"
        secrets = {**kernel_secrets(km), "CurveZMQ secret key": {curve_keys[1]}}
        (container,) = variant.containers(km.kernel_id)
        assert_not_in(docker_cli("inspect", container.id), secrets, "`docker inspect` of the container")
        for service in variant.services(km.kernel_id):
            assert_not_in(docker_cli("service", "inspect", service.id), secrets, "`docker service inspect`")
        _, out = await run_code(km, "print(6 * 7)")
        assert out.strip() == "42"
    finally:
        await km.shutdown_kernel(now=True)


def make_backend(variant: Variant) -> Any:
    """The provisioner's backend for this variant, as the provisioner makes it (no kernel manager around it)."""
    from gateway_provisioners.adapters.docker import DockerBackend
    from gateway_provisioners.adapters.docker_common import ContainerRequest, shared_engine
    from gateway_provisioners.adapters.swarm import SwarmBackend

    request = ContainerRequest(image=variant.image, network=variant.network, owner=OWNER, user="1000:100")
    return (SwarmBackend if variant.swarm else DockerBackend)(shared_engine(None), request)


@pytest.mark.parametrize("variant", ["docker-bridge", "swarm-host"], indirect=True)
async def test_a_submit_cancelled_at_any_moment_leaves_nothing(variant: Variant) -> None:
    # The launch timeout cancels the backend's submit; cancelled before, while and after the engine makes the
    # container (or the secret and the service) on its pool thread, whatever it made is removed, secret included.
    backend = make_backend(variant)
    mode = ConnectionMode.CALLBACK if variant.network == "host" else ConnectionMode.ASSIGNED
    kernel_ids = []
    for delay in (0.0, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5):
        spec = LaunchSpec(
            kernel_id=str(uuid.uuid4()), argv=["python3", "-c", "pass"], mode=mode, response_address="127.0.0.1:9"
        )
        kernel_ids.append(spec.kernel_id)
        submit = asyncio.ensure_future(backend.submit(spec))
        await asyncio.sleep(delay)  # a cancellation point, not a wait for anything
        submit.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            handle = await submit
            await backend.terminate(handle)  # submitted before the cancel: the caller ends what it got
    for kernel_id in kernel_ids:
        # Polled off the loop: the clean-up of a cancelled submit runs on this loop, as it would in a server.
        gone = await asyncio.to_thread(variant.wait_nothing_left, kernel_id, 10)
        assert gone, f"a cancelled submit left the container or service of {kernel_id}"
        if variant.swarm:
            gone = await asyncio.to_thread(wait_no_secret, variant, kernel_id, 5)
            assert gone, f"a cancelled submit left the secret of {kernel_id}"


@pytest.mark.parametrize("variant", ["swarm-host"], indirect=True)
async def test_a_reattached_swarm_kernel_takes_its_secret_along_at_shutdown(variant: Variant) -> None:
    km = AsyncKernelManager(kernel_name=variant.spec())
    await km.start_kernel()
    kernel_id = km.kernel_id
    try:
        info = json.loads(json.dumps(await km.provisioner.get_provisioner_info()))
        assert launch_secrets(variant, kernel_id)
        # A second manager (as a restarted server would make) takes the kernel over and shuts it down.
        km2 = AsyncKernelManager(kernel_name=km.kernel_name)
        km2.kernel_id = kernel_id
        km2.provisioner = KernelProvisionerFactory.instance(parent=km2.parent).create_provisioner_instance(
            kernel_id, km2.kernel_spec, parent=km2
        )
        await km2.provisioner.load_provisioner_info(info)
        km2.load_connection_info(info["connection_info"])
        assert await km2.is_alive()
        await km2.shutdown_kernel(now=True)
        gone = await asyncio.to_thread(wait_no_secret, variant, kernel_id, 5)
        assert gone, "the reattached kernel's shutdown left its launch secret"
    finally:
        await km.shutdown_kernel(now=True)
    assert variant.wait_nothing_left(kernel_id, timeout=10)
