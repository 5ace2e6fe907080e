"""The Spark kernel and executor images of the Kubernetes Spark tests: built without any registry, cached by content.

The base is the Docker tests' Debian base (scripts/build-test-image.sh); pyspark's wheel is the very pyspark of the test
environment (``pip wheel`` of its version, cached under ~/.cache/gp-spark), so driver and executors run one Spark
version and one Python; the JRE comes from the Debian mirror. ``jupyter-spark-images build`` skips images whose inputs
did not change.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("GP_SPARK_CACHE", Path.home() / ".cache" / "gp-spark"))


def pyspark_wheels(unavailable: Callable[[str], None]) -> Path:
    """A folder holding the wheels of the installed pyspark and py4j (pyspark is published as a source archive)."""
    try:
        spark, py4j = version("pyspark"), version("py4j")
    except PackageNotFoundError:
        unavailable("pyspark is not installed (pip install '.[test-spark]')")
        raise
    folder = CACHE / f"wheels-{spark}"
    if not (folder / ".complete").exists():
        built = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(folder),
             f"pyspark=={spark}", f"py4j=={py4j}"],
            capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        if built.returncode != 0:
            unavailable(f"cannot make pyspark's wheel: {(built.stderr.strip().splitlines() or ['?'])[-1]}")
        (folder / ".complete").touch()
    return folder


def build_spark_images(kernel_tag: str, executor_tag: str, unavailable: Callable[[str], None]) -> None:
    """Build both images (``unavailable`` is called when the base cannot be built: no engine, no mmdebstrap)."""
    base = subprocess.run(
        ["sh", str(REPO / "scripts" / "build-test-image.sh")], capture_output=True, text=True, timeout=900
    )
    if base.returncode != 0:
        unavailable(f"cannot build the test base image: {(base.stderr.strip().splitlines() or ['?'])[-1]}")
    values = dict(re.findall(r"^(BASE_IMAGE|WHEELS)=(.*)$", base.stdout, re.M))
    build = subprocess.run(
        [sys.executable, "-m", "gateway_provisioners_cli.spark_images", "build", "--base", values["BASE_IMAGE"],
         "--kernel-tag", kernel_tag, "--executor-tag", executor_tag, "--wheels", values["WHEELS"],
         "--pyspark-wheels", str(pyspark_wheels(unavailable))],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:] + build.stdout[-3000:]
