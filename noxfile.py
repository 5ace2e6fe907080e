"""nox sessions: `nox -s tests`, `nox -s lint`, `nox -s benchmarks`. The README's scripts/test.sh is what CI runs."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
SOURCES = ["src", "launchers", "tests", "benchmarks", "docs/examples", "noxfile.py"]


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", *SOURCES)
    session.run("ruff", "format", "--check", *SOURCES)


@nox.session
def tests(session: nox.Session) -> None:
    session.install(".[test]")
    session.run("pytest", "-ra", *session.posargs)


@nox.session
def benchmarks(session: nox.Session) -> None:
    session.install(".[test]")
    session.run("python", "benchmarks/kernel_startup.py", "--runs", "10", *session.posargs)
