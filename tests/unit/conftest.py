"""Fixtures of the core's unit tests: the agent script loaded as a module, and the shared handshake vectors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
AGENT_SCRIPT = REPO / "launchers" / "gp_agent.py"
VECTORS_DIR = REPO / "tests" / "vectors"


def load_script(path: Path, name: str) -> ModuleType:
    """Import a standalone script (not part of any package) by its path."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, f"cannot load {path}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def agent() -> ModuleType:
    """``launchers/gp_agent.py``, the kernel-side agent, as a module."""
    return load_script(AGENT_SCRIPT, "gp_agent_under_test")


def load_vectors() -> dict[str, Any]:
    """The committed ``tests/vectors/handshake-v2.json``."""
    return json.loads((VECTORS_DIR / "handshake-v2.json").read_text(encoding="utf-8"))
