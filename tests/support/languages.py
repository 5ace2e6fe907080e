"""Real kernels of each language for the tests: the cells they run, and where IRkernel and Apache Toree come from.

IRkernel is Debian's r-cran-irkernel (scripts/test.sh installs it). Toree is the PyPI package the older package
shipped, with pyspark 3.5's Spark (Toree 0.5 is built for Scala 2.12, which Spark 3.5 is the last to use), installed by
scripts/toree.sh into a cached virtualenv. A language whose kernel cannot be had here skips with the reason, and fails
under CI=true, where scripts/test.sh installs both.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway_provisioners_cli.spark import SparkSpec

from .kernels import INTERRUPTED_WITHIN, SLEEPING_CELL, interrupt_running_cell, run_code

REPO = Path(__file__).resolve().parents[2]
# Spark on loopback only, without its web UI: nothing leaves this machine.
LOOPBACK_SPARK_OPTS = (
    "--conf spark.ui.enabled=false --conf spark.driver.host=127.0.0.1 --conf spark.driver.bindAddress=127.0.0.1 "
    "--conf spark.ui.showConsoleProgress=false"
)


@dataclass(frozen=True)
class Cells:
    """Code a kernel of one language runs in the tests."""

    answer: str  # prints 42 and a newline
    sleeping: str  # prints "sleeping", then sleeps 30 s (interrupted long before)
    spark: str = ""  # prints the count of a 1000-row Spark range


CELLS = {
    "python": Cells("print(6 * 7)", SLEEPING_CELL, "print(spark.range(1000).count())"),
    # R: one top-level expression per line, so the first line's output is sent before the loop runs.
    "r": Cells('cat(6 * 7, "\\n", sep = "")', 'cat("sleeping\\n")\nfor (i in 1:300) Sys.sleep(0.1)'),
    "scala": Cells("println(6 * 7)", 'println("sleeping")\nThread.sleep(30000)', "println(spark.range(1000).count())"),
}


async def answers_and_is_interrupted(km: Any, language: str, timeout: float, spark: bool = False) -> None:
    """The kernel prints 42 (and, with ``spark``, counts a 1000-row Spark range); a running cell is interrupted (ended
    long before its sleep would have) and the kernel prints 42 again."""
    content, out = await run_code(km, CELLS[language].answer, timeout=timeout)
    assert (content["status"], out) == ("ok", "42\n"), content
    if spark:
        content, out = await run_code(km, CELLS[language].spark, timeout=timeout)
        assert (content["status"], out) == ("ok", "1000\n"), content
    reply, seconds = await interrupt_running_cell(
        km, timeout=INTERRUPTED_WITHIN, cell=CELLS[language].sleeping, ready_timeout=timeout
    )
    assert reply["status"] in ("error", "abort"), reply  # the cell ended early, not by finishing its sleep
    assert seconds < INTERRUPTED_WITHIN
    content, out = await run_code(km, CELLS[language].answer, timeout=timeout)
    assert (content["status"], out) == ("ok", "42\n"), content


def unavailable(reason: str) -> None:
    """Skip, saying why; under CI=true (scripts/test.sh installs every language) fail instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; under CI=true scripts/test.sh must have installed it")
    pytest.skip(reason)


def need_r() -> None:
    if shutil.which("R") is None or not Path("/usr/lib/R/site-library/IRkernel").is_dir():
        unavailable("R with IRkernel is not installed here (Debian: apt-get install r-cran-irkernel)")


@dataclass(frozen=True)
class Toree:
    spark_home: str
    jar: str
    python: str  # the virtualenv's Python (pyspark 3.5 importable)

    def spark(self, init_mode: str = "lazy", master: str = "local[1]") -> SparkSpec:
        return SparkSpec(home=self.spark_home, master=master, opts=LOOPBACK_SPARK_OPTS, init_mode=init_mode)


def toree() -> Toree:
    """Apache Toree and its Spark (scripts/toree.sh, cached): skips, or fails under CI=true, when they cannot be had."""
    if shutil.which("java") is None:
        unavailable("no Java runtime here: Toree and Spark need one (Debian: default-jre-headless)")
    result = subprocess.run(["sh", str(REPO / "scripts" / "toree.sh")], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        unavailable(f"cannot install Apache Toree: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
    values = dict(re.findall(r"^(TOREE_SPARK_HOME|TOREE_JAR|TOREE_PYTHON)=(.*)$", result.stdout, re.M))
    return Toree(values["TOREE_SPARK_HOME"], values["TOREE_JAR"], values["TOREE_PYTHON"])


def stream_text(messages: list[dict[str, Any]]) -> str:
    return "".join(m["content"].get("text", "") for m in messages if m["msg_type"] == "stream")
