"""Running competitors side by side: the older package's virtualenv, and benchmarks/driver.py in a process of its own.

Shared by ssh_startup.py and docker_old_package.py; each competitor's numbers come from driver.py under that
competitor's own Python, so its RSS and event-loop stalls are its own.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OLD_VENV = HERE.parent / ".bench" / "gp050"
OLD_PACKAGES = ["gateway_provisioners==0.5.0", "ipykernel", "jupyter_client", "psutil"]
SERIES = ("startup", "restart", "shutdown", "gone", "launch_stall")


def old_package_python(*extra: str) -> Path:
    """The Python of a virtualenv with gateway_provisioners 0.5.0 (and ``extra`` packages), made on first use."""
    python = OLD_VENV / "bin" / "python"
    if not python.exists():
        print(f"== installing gateway_provisioners==0.5.0 into {OLD_VENV}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(OLD_VENV)], check=True)
    modules = ["gateway_provisioners", "ipykernel", "jupyter_client", "psutil", *extra]
    if subprocess.run([str(python), "-c", "import " + ", ".join(modules)], capture_output=True).returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "-q", *OLD_PACKAGES, *extra], check=True)
    return python


def run_driver(
    python: Path, spec: str, env: dict[str, str], runs: int, gone_runs: int, concurrency: int
) -> dict[str, Any]:
    """Measure kernel spec ``spec`` with driver.py under ``python``; returns its numbers."""
    print(f"== {spec}: {runs} runs + {concurrency} concurrent", file=sys.stderr, flush=True)
    # Files, not pipes: a kernel that outlives its driver (it happens to jupyter_client's local kernels under load)
    # would otherwise hold the pipe open and stall the whole run.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        result = subprocess.run(
            [str(python), str(HERE / "driver.py"), spec, "--runs", str(runs), "--gone-runs", str(gone_runs),
             "--concurrency", str(concurrency)],
            env=env, stdout=out, stderr=err, timeout=3600,
        )  # fmt: skip
        out.seek(0)
        err.seek(0)
        if result.returncode != 0:
            raise RuntimeError(f"{spec} failed:\n{err.read().decode(errors='replace')[-3000:]}")
        return json.loads(out.read())


def merge_parts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One competitor's numbers from several driver runs."""
    merged: dict[str, Any] = {key: [value for part in parts for value in part.get(key, [])] for key in SERIES}
    merged["concurrent"] = [part["concurrent"] for part in parts]
    return merged


def burst_figures(merged: dict[str, Any]) -> tuple[list[float], int, float, float]:
    """From :func:`merge_parts`' result: each burst's all-ready wall time, the failed starts, the longest event-loop
    stall of any launch (seconds) and the median RSS with the burst's kernels up (MiB)."""
    bursts = merged["concurrent"]
    walls = [c["all_ready_s"] for c in bursts]
    failures = sum(c["count"] - c["ok"] for c in bursts)
    stall = max(merged["launch_stall"] + [c["stall_s"] for c in bursts])
    rss = statistics.median([c["rss_mib_with_kernels"] for c in bursts])
    return walls, failures, stall, rss
