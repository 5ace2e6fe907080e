"""nox sessions: `nox -s tests`, `nox -s lint`, `nox -s typecheck`, `nox -s benchmarks`, `nox -s k8s_real_cluster`.

The README's scripts/test.sh is what CI runs.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
SOURCES = ["src", "launchers", "tests", "benchmarks", "scripts", "docs/examples", "noxfile.py"]


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", *SOURCES)
    session.run("ruff", "format", "--check", *SOURCES)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy over the library, strict on the core (the SDKs without type information are treated as Any)."""
    session.install(".[all]", "mypy")
    session.run("mypy", "src")
    session.run("mypy", "--strict", "src/gateway_provisioners/core")


@nox.session
def tests(session: nox.Session) -> None:
    session.install(".[test]")
    session.run("pytest", "-ra", *session.posargs)


@nox.session
def benchmarks(session: nox.Session) -> None:
    session.install(".[test]")
    session.run("python", "benchmarks/kernel_startup.py", "--runs", "10", *session.posargs)


@nox.session(venv_backend="none")
def k8s_real_cluster(session: nox.Session) -> None:
    """The real-cluster tests (tests/integration/kubernetes/real) on a cluster this machine runs: root only.

    `scripts/k8s-cluster.sh up` builds Kubernetes from its Go modules the first time (cached) and starts it; `down`
    removes it again, also when the tests fail. See docs/kubernetes.md, "Tests on a real cluster".
    """
    session.run("bash", "scripts/k8s-cluster.sh", "up", external=True)
    try:
        session.run("python", "-m", "pytest", "-ra", "tests/integration/kubernetes/real", *session.posargs,
                    env={"GP_K8S_REAL_CLUSTER": "1"}, external=True)  # fmt: skip
    finally:
        session.run("bash", "scripts/k8s-cluster.sh", "down", external=True)
