"""The embedding example in docs/ runs as documented: the core without jupyter_client's kernel manager."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from ..conftest import AS_ROOT

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "embed_local.py"


async def test_embedding_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    if AS_ROOT:  # the example's kernel runs as this process's user: as an operator would, allow root explicitly
        monkeypatch.setenv("GP_ALLOW_ROOT_KERNELS", "true")
    spec = importlib.util.spec_from_file_location("embed_local", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = await module.main()
    assert results == {
        "status": "ok",
        "answer": "42",
        "interrupted": "KeyboardInterrupt",
        "same_ports": True,
        "new_process": True,
        "restored_alive": True,
        "restored_answer": "42",
        "exit_code_known": True,
    }
