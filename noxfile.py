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


@nox.session
def k8s_real_cluster(session: nox.Session) -> None:
    """The Kubernetes integration tests against a real cluster (kind, minikube...), when `kubectl cluster-info` works.

    Set GP_K8S_TEST_IMAGE (and optionally GP_K8S_TEST_NAMESPACE, GP_KUBECONFIG); see docs/kubernetes.md.
    """
    import shutil
    import subprocess

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        session.skip("kubectl is not installed, so no cluster can be checked: install kubectl and a cluster (kind)")
    probe = subprocess.run([kubectl, "cluster-info"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        reason = (probe.stderr or probe.stdout).strip().splitlines()[-1:] or ["no answer"]
        session.skip(f"`kubectl cluster-info` failed, no reachable cluster: {reason[0]}")
    session.install(".[test]")
    session.run("pytest", "-ra", "tests/integration/kubernetes/test_k8s_real_cluster.py", *session.posargs,
                env={"GP_K8S_REAL_CLUSTER": "1"})  # fmt: skip
