"""Developer sessions: tests, lint, typecheck, imports, unasync, bench, chaos, demo.

``nox -s tests`` is the README's test command and what CI runs (after lint,
typecheck and ``unasync -- --check``). Each session installs the project into
its own virtualenv, so a fresh machine needs nothing but Python and nox.
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "imports", "unasync", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False

TYPED = [
    "codeagent",
    "codeagent_app",
    "llm_stub",
    "legacy",
    "core_async",
    "core_sync",
    "bridge",
    "feature_flags",
    "migration",
    "fleet",
    "benchmarks",
    "tools",
]
COVERED = ["core_async", "core_sync", "bridge", "feature_flags", "migration", "fleet"]


def _install(session: nox.Session, extras: str = "dev") -> None:
    session.install("-e", f".[{extras}]")


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite, asyncio debug mode on, coverage of the new components enforced."""
    _install(session)
    cov = [f"--cov={pkg}" for pkg in COVERED]
    session.run(
        "python",
        "-m",
        "pytest",
        *cov,
        "--cov-report=term-missing:skip-covered",
        "--cov-fail-under=90",
        # Most tests wait on processes, sockets and timers: two workers halve the wall time on 2 cores.
        # Tests that use PostgreSQL share one worker (the server's connection limit is shared too).
        "-n",
        "2",
        "--dist",
        "loadgroup",
        *session.posargs,
        # Coverage tracing slows every callback 2-3x; the slow-callback detector allows for it.
        env={"PYTHONASYNCIODEBUG": "1", "CODEAGENT_SLOW_CALLBACK": "0.5"},
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the typed packages."""
    _install(session)
    session.run("mypy", "--strict", *TYPED)


@nox.session
def imports(session: nox.Session) -> None:
    """The import contract: who may import whom (see docs/architecture.md), checked by import-linter."""
    _install(session)
    session.run("lint-imports")


@nox.session
def unasync(session: nox.Session) -> None:
    """Regenerate core_sync/ and bridge/_sync/ from their async sources (``-- --check`` only verifies)."""
    _install(session)
    session.run("python", "tools/codegen.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """The micro-benchmarks (pytest-benchmark), then the A/B suite with their figures; never a gate.

    Arguments after ``--`` go to the suite, e.g. ``nox -s bench -- --quick``.
    """
    _install(session, "dev,bench")
    Path("bench-results").mkdir(exist_ok=True)
    micro = "bench-results/micro.json"
    session.run(
        "python",
        "-m",
        "pytest",
        "benchmarks/micro",
        "--benchmark-only",
        f"--benchmark-json={micro}",
        "-p",
        "no:cacheprovider",
    )
    session.run("python", "-m", "benchmarks", "--micro-json", micro, *session.posargs)


@nox.session(name="bench-fleet")
def bench_fleet(session: nox.Session) -> None:
    """The fleet benchmark: 1, 2 and 4 worker processes through PostgreSQL (``-- --quick`` for the short one)."""
    _install(session, "dev,bench")
    session.run("python", "-m", "benchmarks.fleet", *session.posargs)


@nox.session
def chaos(session: nox.Session) -> None:
    """The reliability campaign (kills, LLM faults, disk faults, soak, reloads, fuzzing, API abuse).

    ``nox -s chaos -- --quick`` is CI's run (about 3 minutes); without ``--quick`` the full campaign
    updates docs/reliability.md. Arguments after ``--`` go to ``codeagent chaos``.
    """
    _install(session)
    session.run("codeagent", "chaos", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """The sample workspace end to end with the stub LLM."""
    _install(session)
    session.run("codeagent", "demo", *session.posargs)
