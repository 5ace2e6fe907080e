"""Fixtures shared by the whole suite: kernel specs for the local agent provisioner, and a leak check."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

IPYKERNEL_ARGV = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]


def write_kernel_spec(
    root: Path,
    name: str,
    *,
    argv: list[str] | None = None,
    config: dict[str, Any] | None = None,
    provisioner: str = "local-agent-provisioner",
    env: dict[str, str] | None = None,
    metadata: dict[str, Any] | None = None,
    language: str = "python",
    interrupt_mode: str = "signal",
) -> Path:
    """Write ``root/kernels/<name>/kernel.json`` with the kernel's own argv and a provisioner stanza."""
    spec_dir = root / "kernels" / name
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": argv or IPYKERNEL_ARGV,
        "display_name": f"Test {name}",
        "language": language,
        "interrupt_mode": interrupt_mode,
        "env": env or {},
        "metadata": {
            **(metadata or {}),
            "kernel_provisioner": {"provisioner_name": provisioner, "config": config or {}},
        },
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return spec_dir


#: CI runs the suite as root, and kernels started here run as this process's user: an operator who runs kernels as
#: root has to say so (allow_root_kernels). Tests that build a LaunchSpec pass this as its ``allow_root``.
AS_ROOT = os.geteuid() == 0


@pytest.fixture
def jupyter_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private JUPYTER_PATH for this test's kernel specs; KERNEL_USERNAME set (the name check refuses 'root'), and,
    when the suite runs as root, GP_ALLOW_ROOT_KERNELS (the uid check refuses kernels that really run as root)."""
    root = tmp_path / "jupyter"
    root.mkdir()
    monkeypatch.setenv("JUPYTER_PATH", str(root))
    monkeypatch.setenv("KERNEL_USERNAME", "gp-tester")
    if AS_ROOT:
        monkeypatch.setenv("GP_ALLOW_ROOT_KERNELS", "true")
    return root


@pytest.fixture(autouse=True, scope="session")
def nothing_left_running() -> Iterator[None]:
    """At the end of the run no agent or kernel started by the suite may still run."""
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    leftovers = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    _, alive = psutil.wait_procs(leftovers, timeout=5)
    names = [f"{p.pid} {' '.join(p.cmdline()[:4])}" for p in alive if p.is_running()]
    for proc in alive:
        proc.kill()
    assert not names, f"processes left running by the test suite: {names}"


def pid_gone(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` for process ``pid`` to end (or become a zombie awaiting its parent)."""
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return True
    try:
        proc.wait(timeout)
        return True
    except psutil.TimeoutExpired:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # quiets ipykernel's debugger warning in kernel logs
