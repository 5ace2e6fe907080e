"""Fixtures for the Docker and Swarm tests: a real engine, a kernel image built locally, networks made by the tests.

The engine is started with scripts/docker-engine.sh when none answers (root only). The image is built without any
registry: scripts/build-test-image.sh makes a Debian base with mmdebstrap and downloads wheels on the host, then
``jupyter-image-bootstrap build`` adds the agent and ipykernel; both steps are cached by content. Everything the tests
create carries this run's owner label (or a unique name) and only that is removed. A Swarm that was inactive is made a
single-node Swarm for the run and left again at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ...conftest import write_kernel_spec
from ...support.images import build_kernel_image

REPO = Path(__file__).resolve().parents[3]
RUN_ID = uuid.uuid4().hex[:8]
OWNER = f"gp-test-{RUN_ID}"
KERNEL_IMAGE = "gp-test-kernel:suite"
KERNEL_ARGV = ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
OWNER_LABEL = "org.jupyter.gp.owner"
KERNEL_LABEL = "org.jupyter.gp.kernel-id"


def _skip(reason: str) -> None:
    print(f"\nSKIP docker tests: {reason}", file=sys.stderr)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    try:
        import docker
    except ImportError:
        _skip("the Docker SDK is not installed (pip install '.[docker]')")
    client = None
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        script = REPO / "scripts" / "docker-engine.sh"
        result = (
            subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=60) if script.exists() else None
        )
        try:
            client = docker.from_env()
            client.ping()
        except Exception:
            detail = (result.stderr.strip() if result else "") or str(exc)
            _skip(f"no Docker engine: {detail.splitlines()[-1] if detail else exc}")
    yield client
    # Safety net: anything of this run still there (a failed test) goes; nothing else is touched.
    swarm_active = _swarm_state(client) == "active"
    for service in client.services.list(filters={"label": f"{OWNER_LABEL}={OWNER}"}) if swarm_active else []:
        service.remove()
    for secret in client.secrets.list(filters={"label": f"{OWNER_LABEL}={OWNER}"}) if swarm_active else []:
        secret.remove()
    for container in client.containers.list(all=True, ignore_removed=True, filters={"label": f"{OWNER_LABEL}={OWNER}"}):
        container.remove(force=True)
    client.close()


def _swarm_state(client: Any) -> str:
    return str(client.info().get("Swarm", {}).get("LocalNodeState", "inactive"))


@pytest.fixture(scope="session")
def kernel_image(docker_client: Any) -> str:
    """The kernel image, built by jupyter-image-bootstrap from the locally built base (cached by content)."""
    started = time.monotonic()
    build_kernel_image(KERNEL_IMAGE, _skip)
    print(f"\nkernel image {KERNEL_IMAGE} ready in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return KERNEL_IMAGE


@pytest.fixture(scope="session")
def bridge_network(docker_client: Any) -> Iterator[str]:
    """A bridge network of this run: kernels get their own addresses, reachable from this host only."""
    # A name of its own: a test module elsewhere that imports this fixture gets a second instance of it, and two
    # networks of one name make the engine's lookup by name ambiguous ("network … not found" on attach).
    name = f"gp-test-br-{RUN_ID}-{uuid.uuid4().hex[:6]}"
    network = docker_client.networks.create(name, driver="bridge", labels={OWNER_LABEL: OWNER})
    yield network.name
    network.remove()


@pytest.fixture(scope="session")
def swarm(docker_client: Any) -> Iterator[None]:
    """A single-node Swarm for the run; left as it was found (an engine that was not a manager leaves again)."""
    state = _swarm_state(docker_client)
    made = False
    if state == "inactive":
        docker_client.swarm.init(advertise_addr="127.0.0.1")
        made = True
    elif state != "active":
        _skip(f"this engine's Swarm state is {state!r}")
    elif not docker_client.info().get("Swarm", {}).get("ControlAvailable"):
        _skip("this engine is a Swarm worker, not a manager")
    yield
    if made:
        docker_client.swarm.leave(force=True)


@pytest.fixture(scope="session")
def swarm_network(docker_client: Any, swarm: None) -> Iterator[str]:
    """A swarm-scoped bridge network of this run: tasks get addresses this host reaches (assigned mode)."""
    network = docker_client.networks.create(
        f"gp-test-sw-{RUN_ID}-{uuid.uuid4().hex[:6]}", driver="bridge", scope="swarm", labels={OWNER_LABEL: OWNER}
    )
    yield network.name
    for _ in range(50):  # task containers may still be detaching from it
        try:
            network.remove()
            break
        except Exception:
            time.sleep(0.1)


VARIANTS = {
    # name: (provisioner, network fixture or "host")
    "docker-bridge": ("docker-provisioner", "bridge_network"),
    "docker-host": ("docker-provisioner", "host"),
    "swarm-host": ("docker-swarm-provisioner", "host"),
    "swarm-network": ("docker-swarm-provisioner", "swarm_network"),
}


class Variant:
    """One provisioner on one network, with helpers to find what it created on the engine."""

    def __init__(self, name: str, provisioner: str, network: str, client: Any, image: str, root: Path) -> None:
        self.name, self.provisioner, self.network, self.client, self.image, self.root = (
            name, provisioner, network, client, image, root,
        )  # fmt: skip
        self.swarm = provisioner == "docker-swarm-provisioner"

    def spec(
        self,
        kernel_name: str = "gp-docker",
        argv: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **config: Any,
    ) -> str:
        settings = {"image_name": self.image, "network": self.network, "image_pull_policy": "never", "owner": OWNER}
        settings.update(config)
        write_kernel_spec(
            self.root, kernel_name, argv=argv or KERNEL_ARGV, config=settings, provisioner=self.provisioner,
            metadata=metadata,
        )  # fmt: skip
        return kernel_name

    def containers(self, kernel_id: str) -> list[Any]:
        return self.client.containers.list(
            all=True, ignore_removed=True, filters={"label": f"{KERNEL_LABEL}={kernel_id}"}
        )

    def services(self, kernel_id: str) -> list[Any]:
        if not self.swarm:
            return []
        return self.client.services.list(filters={"label": f"{KERNEL_LABEL}={kernel_id}"})

    def wait_nothing_left(self, kernel_id: str, timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.containers(kernel_id) and not self.services(kernel_id):
                return True
            time.sleep(0.1)
        return False


def make_variant(name: str, request: pytest.FixtureRequest, root: Path) -> Variant:
    provisioner, network = VARIANTS[name]
    client = request.getfixturevalue("docker_client")
    image = request.getfixturevalue("kernel_image")
    if provisioner == "docker-swarm-provisioner":
        request.getfixturevalue("swarm")
    if network != "host":
        network = request.getfixturevalue(network)
    return Variant(name, provisioner, network, client, image, root)


@pytest.fixture
def environ_marker(monkeypatch: pytest.MonkeyPatch) -> str:
    """A variable of the server's environment that must never reach a kernel."""
    monkeypatch.setenv("GP_TEST_SERVER_SECRET", "do-not-copy")
    return "GP_TEST_SERVER_SECRET"


os.environ.setdefault("GP_DOCKER_OWNER", OWNER)
