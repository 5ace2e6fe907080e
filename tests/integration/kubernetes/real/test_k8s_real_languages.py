"""R (IRkernel) and Scala (Apache Toree, a Spark driver in local mode) kernels in pods of the real cluster, from the
images `jupyter-image-bootstrap build --language r|scala` makes (cached by content, imported into the cluster's
containerd), with the argv `jupyter-k8s-spec install --language …` writes: code runs, a Spark job runs, a running
cell of each language is interrupted (SIGINT through the agent) and the kernel stays usable; shutdown leaves no pod."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from jupyter_client.manager import AsyncKernelManager

from ....support.images import build_kernel_image
from ....support.languages import answers_and_is_interrupted
from .conftest import NAMESPACE, Cluster, _unavailable

pytestmark = pytest.mark.integration

IMAGES = {"r": "gp-test-kernel-r:k8s", "scala": "gp-test-kernel-scala:k8s"}
TIMEOUT = {"r": 90.0, "scala": 300.0}
# Spark in the pod on loopback, without its UI. Eager: Toree's interrupt needs the session to exist (docs/languages.md).
SCALA_OPTIONS = ["--spark-master", "local[1]", "--spark-init-mode", "eager", "--extra-spark-opts",
                 "--conf spark.ui.enabled=false --conf spark.driver.host=127.0.0.1 "
                 "--conf spark.driver.bindAddress=127.0.0.1 --conf spark.ui.showConsoleProgress=false"]  # fmt: skip


def _k8s_spec_argv(language: str, image: str) -> list[str]:
    """The argv jupyter-k8s-spec writes for ``language`` (printed with --dry-run); Scala's Spark options come from
    jupyter-docker-spec's, which writes the same Toree argv for an image (the K8s command has no --spark-master)."""
    cli = "jupyter-docker-spec" if language == "scala" else "jupyter-k8s-spec"
    result = subprocess.run(
        [str(Path(sys.executable).parent / cli), "install", "--dry-run", "--language", language,
         "--image-name", image, *(SCALA_OPTIONS if language == "scala" else [])],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout)["argv"])


@pytest.mark.parametrize("language", ["r", "scala"])
async def test_language_kernel_in_a_pod(cluster: Cluster, real_spec, language: str) -> None:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    build_kernel_image(IMAGES[language], _unavailable, language)
    cluster.script("load-image", IMAGES[language], timeout=900)
    print(f"\n{language} image in the cluster after {time.monotonic() - started:.1f} s", file=sys.stderr)
    timeout = TIMEOUT[language]
    name = real_spec(f"k8s-{language}", argv=_k8s_spec_argv(language, IMAGES[language]), image_name=IMAGES[language],
                     launch_timeout=timeout)  # fmt: skip
    km = AsyncKernelManager(kernel_name=name)
    await km.start_kernel()
    pod = f"kernel-{km.kernel_id}"
    try:
        await answers_and_is_interrupted(km, language, timeout, spark=language == "scala")
    finally:
        await km.shutdown_kernel(now=True)
        if language == "scala":
            # The cluster's containerd lives in a tmpfs (memory) that the suite's images share: the Scala image
            # (Spark's jars, a JRE: 1.2 GB, held twice there) does not stay.
            cluster.script("unload-image", IMAGES[language], timeout=120)
    # Only this kernel's pod is checked: other checkouts' tests run kernels in the same namespace at the same time.
    cluster.wait_until("the kernel pod is deleted", lambda: cluster.get("pod", pod, NAMESPACE) is None, timeout=90)
