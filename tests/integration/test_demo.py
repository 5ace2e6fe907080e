"""The README's main command: the demo launches a real kernel and shows every phase."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import AS_ROOT

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("provisioner", ["ssh", "local"])
def test_demo_runs_the_whole_lifecycle(provisioner: str) -> None:
    demo = Path(sys.executable).with_name("gateway-provisioners-demo")
    result = subprocess.run(
        [str(demo), "--provisioner", provisioner, *(["--allow-root"] if AS_ROOT else [])],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "KERNEL_USERNAME": "demo"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    for phase in ("submitted", "starting", "connecting", "ready", "restarting", "terminated"):
        assert f"phase: {phase} (" in out, f"phase {phase} missing from:\n{out}"
    assert "kernel says: 6 * 7 = 42" in out
    assert "kernel channels: CurveZMQ-encrypted" in out
    assert "interrupted a sleeping cell: KeyboardInterrupt" in out
    assert "restarted in place, same ports" in out
    assert "kernel says: after restart: 42" in out
    assert ("embedded SSH server on 127.0.0.1:" in out) == (provisioner == "ssh")
