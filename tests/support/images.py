"""The kernel image the Docker and Kubernetes tests run: built without any registry, cached by content."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def build_kernel_image(tag: str, unavailable: Callable[[str], None], language: str = "python") -> None:
    """Build ``tag`` with jupyter-image-bootstrap from the locally built Debian base (scripts/build-test-image.sh).

    ``language`` picks the base's variant and the image's recipe: python (ipykernel), r (Debian's IRkernel), scala
    (Apache Toree on pyspark 3.5's Spark, a Java runtime). Each base and image is cached by content.

    ``unavailable`` is called with the reason when the base cannot be built (no engine, no mmdebstrap): the suite's
    own rule decides whether that skips or fails. A failing bootstrap build is a failure of ours and fails the test.
    """
    base = subprocess.run(
        ["sh", str(REPO / "scripts" / "build-test-image.sh"), language], capture_output=True, text=True, timeout=900
    )
    if base.returncode != 0:
        unavailable(f"cannot build the test base image: {(base.stderr.strip().splitlines() or ['?'])[-1]}")
    values = dict(re.findall(r"^(BASE_IMAGE|WHEELS)=(.*)$", base.stdout, re.M))
    build = subprocess.run(
        [sys.executable, "-m", "gateway_provisioners_cli.image_bootstrap", "build",
         "--base", values["BASE_IMAGE"], "--tag", tag, "--wheels", values["WHEELS"], "--language", language],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:] + build.stdout[-3000:]
