"""The older package, gateway_provisioners 0.5.0 from PyPI, in a virtualenv of its own (never this project's).

Its spec CLIs (jupyter-ssh-spec & co.) write the real kernel specs the migration tests convert. The virtualenv is made
on first use under ~/.cache (GP_OLDER_VENV overrides), the way benchmarks/_competitors.py makes its own; later runs
reuse it.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

OLDER_PACKAGES = ["gateway_provisioners==0.5.0", "ipykernel", "jupyter_client"]


@functools.lru_cache(maxsize=1)
def _older_bin() -> Path | str:
    venv = Path(os.environ.get("GP_OLDER_VENV", Path.home() / ".cache" / "gp-older-0.5.0"))
    python = venv / "bin" / "python"
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
        probe = subprocess.run([str(python), "-c", "import gateway_provisioners.cli"], capture_output=True)
        if probe.returncode != 0:
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", *OLDER_PACKAGES],
                check=True, capture_output=True, text=True, timeout=900,
            )  # fmt: skip
    except subprocess.CalledProcessError as exc:
        return f"cannot install gateway_provisioners==0.5.0 into {venv}: {(exc.stderr or '').strip()[-300:]}"
    except subprocess.TimeoutExpired:
        return f"installing gateway_provisioners==0.5.0 into {venv} timed out"
    return venv / "bin"


def older_bin() -> Path:
    """The bin folder of the older package's virtualenv; skips (fails under CI=true) when it cannot be made."""
    found = _older_bin()
    if isinstance(found, str):
        if os.environ.get("CI") == "true":
            pytest.fail(found)
        pytest.skip(found)
    return found


def older_spec(prefix: Path, cli: str, *args: str) -> Path:
    """Run the older ``cli install --prefix PREFIX ARGS``; returns PREFIX/share/jupyter/kernels."""
    run = subprocess.run(
        [str(older_bin() / cli), "install", "--prefix", str(prefix), *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(prefix)},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    return prefix / "share" / "jupyter" / "kernels"
