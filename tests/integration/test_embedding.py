"""The embedding example in docs/ runs as documented: the core without jupyter_client's kernel manager."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "embed_local.py"


async def test_embedding_example_runs() -> None:
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
