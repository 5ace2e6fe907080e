"""The ``helm`` command for the chart's tests, built from its Go module by scripts/helm-build.sh (cached by version)."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "gateway-provisioners"


@functools.cache
def _build() -> str | Path:
    """The binary's path, or why there is none."""
    try:
        result = subprocess.run(
            ["sh", str(REPO / "scripts" / "helm-build.sh")], capture_output=True, text=True, timeout=3600
        )
    except subprocess.TimeoutExpired:
        return "scripts/helm-build.sh timed out"
    if result.returncode != 0:
        return f"scripts/helm-build.sh failed: {(result.stderr.strip().splitlines() or ['?'])[-1]}"
    return Path(result.stdout.strip().splitlines()[-1])


def helm_binary() -> Path:
    """The built helm; skips when it cannot be built (fails under CI=true, where scripts/test.sh builds it)."""
    found = _build()
    if isinstance(found, str):
        if os.environ.get("CI") == "true":
            pytest.fail(found)
        pytest.skip(found)
    return found


def helm(*args: str, kubeconfig: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run helm with a private home (no repositories, no cache of the user's) and, if given, a kubeconfig."""
    home = Path(os.environ.get("GP_HELM_CACHE", Path.home() / ".cache" / "gp-helm")) / "home"
    env = {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_DATA_HOME": str(home / "data")}  # fmt: skip
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    return subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, timeout=timeout, env=env)
