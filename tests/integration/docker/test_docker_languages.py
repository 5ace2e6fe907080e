"""R (IRkernel) and Scala (Apache Toree, a Spark driver in local mode) kernels in containers on a real Docker engine,
in images built by `jupyter-image-bootstrap build --language r|scala` from locally built bases, with the argv that
`jupyter-docker-spec install --language …` writes: code runs, a Spark job runs, a cell of each language is
interrupted."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import AsyncKernelManager

from ...support.images import build_kernel_image
from ...support.languages import LOOPBACK_SPARK_OPTS, answers_and_is_interrupted
from .conftest import Variant, _skip

pytestmark = pytest.mark.integration

IMAGES = {"r": "gp-test-kernel-r:suite", "scala": "gp-test-kernel-scala:suite"}
TIMEOUT = {"r": 60.0, "scala": 240.0}


def _image(language: str) -> str:
    started = time.monotonic()
    build_kernel_image(IMAGES[language], _skip, language)
    print(f"\n{language} kernel image ready in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return IMAGES[language]


def _cli_argv(language: str, image: str, *options: str) -> list[str]:
    """The argv jupyter-docker-spec writes for ``language`` (printed with --dry-run)."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "jupyter-docker-spec"), "install", "--dry-run", "--language", language,
         "--image-name", image, *options],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout)["argv"])


@pytest.fixture
def bridge(request: pytest.FixtureRequest, jupyter_path: Path, docker_client: Any) -> Variant:
    return Variant("docker-bridge", "docker-provisioner", request.getfixturevalue("bridge_network"), docker_client,
                   "", jupyter_path)  # fmt: skip


@pytest.mark.parametrize("language", ["r", "scala"])
async def test_language_kernel_in_a_container(bridge: Variant, language: str) -> None:
    image = _image(language)
    options = ("--spark-master", "local[1]", "--extra-spark-opts", LOOPBACK_SPARK_OPTS, "--spark-init-mode", "eager")
    argv = _cli_argv(language, image, *(options if language == "scala" else ()))
    bridge.image = image
    km = AsyncKernelManager(kernel_name=bridge.spec(f"docker-{language}", argv=argv, launch_timeout=TIMEOUT[language]))
    await km.start_kernel()
    timeout = TIMEOUT[language]
    try:
        await answers_and_is_interrupted(km, language, timeout, spark=language == "scala")
        kernel_id = km.kernel_id
    finally:
        await km.shutdown_kernel(now=True)
    assert bridge.wait_nothing_left(kernel_id, timeout=10), "container left after shutdown"
