"""docs/kubernetes.md (docs/spark-operator.md for the operator's) shows the RBAC manifests under deploy/kubernetes/
verbatim: the files the real-cluster tests apply are the ones an operator copies."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((REPO / "deploy" / "kubernetes").glob("rbac-*.yaml"))


def _body(text: str) -> str:
    """The manifest without its leading comment lines."""
    lines = text.splitlines()
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return "\n".join(lines).strip()


def test_there_are_manifests() -> None:
    assert {p.name for p in MANIFESTS} == {
        "rbac-shared-namespace.yaml",
        "rbac-namespace-per-kernel.yaml",
        "rbac-spark-kernel.yaml",
        "rbac-spark-operator.yaml",
    }


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_docs_show_the_manifest_verbatim(manifest: Path) -> None:
    page = "spark-operator.md" if manifest.name == "rbac-spark-operator.yaml" else "kubernetes.md"
    docs = (REPO / "docs" / page).read_text()
    blocks = [block.strip() for block in re.findall(r"```yaml\n(.*?)```", docs, re.S)]
    assert _body(manifest.read_text()) in blocks, f"docs/{page} does not show {manifest.name} as it is"
    assert f"deploy/kubernetes/{manifest.name}" in docs
