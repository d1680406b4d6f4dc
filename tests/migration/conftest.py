"""Fixtures of the migration suite: sample workspaces advanced part-way by the real loops."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from codeagent.models import Checkpoint, Stage
from codeagent_app.sample import create_sample_workspace
from legacy.checkpoints import CheckpointStore
from llm_stub import StubOptions, StubServer
from tests.agents import async_agent as build_async
from tests.agents import legacy_agent as build_legacy
from tests.conftest import debug_loop
from tests.fleet.conftest import shared_pg_dsn  # noqa: F401  (one database for a module's tests)

# A fresh PostgreSQL database per test, for the moves --to postgres and back (tests/fleet's fixtures).


STATE = (".agent/config.json", ".agent/todos.json", ".agent/status.json", ".agent/format.json")


class Halt(BaseException):
    """Stops a loop right after a checkpoint is saved, like a crash (the todo stays resumable)."""


def tree_hash(root: Path) -> str:
    """One digest of every file (path and bytes) under ``root``, ``.git`` included."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def state_bytes(root: Path) -> dict[str, bytes]:
    """Every state file migration may touch, by workspace-relative path."""
    out = {rel: (root / rel).read_bytes() for rel in STATE if (root / rel).exists()}
    directory = root / ".agent/checkpoints"
    if directory.is_dir():
        out.update({f".agent/checkpoints/{p.name}": p.read_bytes() for p in directory.glob("*.json")})
    return out


def checkpoint_docs(root: Path) -> dict[str, dict[str, Any]]:
    """The parsed checkpoint documents by file name."""
    return {p.name: json.loads(p.read_text()) for p in sorted((root / ".agent/checkpoints").glob("*.json"))}


def trailers(root: Path) -> list[str]:
    """The ``Todo-Id`` trailer of every commit (empty for the initial one)."""
    out = subprocess.run(
        ["git", "log", "--format=%x1e%(trailers:key=Todo-Id,valueonly)"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
    ).stdout
    return [r.strip() for r in out.split("\x1e")[1:] if r.strip()]


class HaltingLegacyStore(CheckpointStore):
    """A legacy checkpoint store that halts the loop after saving ``stage`` of ``todo_id``."""

    def __init__(self, root: Path, todo_id: str, stage: Stage) -> None:
        super().__init__(root)
        self.halt_at = (todo_id, stage)

    def save(self, checkpoint: Checkpoint) -> None:
        super().save(checkpoint)
        if (checkpoint.todo_id, checkpoint.stage) == self.halt_at:
            raise Halt(checkpoint.todo_id)


def run_legacy(root: Path, url: str, todos: int | None = None, halt: tuple[str, Stage] | None = None) -> None:
    """Process ``todos`` todos with the legacy loop (all when ``None``), then halt one mid-way if asked."""
    agent = build_legacy(root, url)
    try:
        if todos is None:
            agent.run(until_idle=True)
        else:
            for _ in range(todos):
                assert agent.run_once()
        if halt is not None:
            agent.checkpoints = HaltingLegacyStore(root, *halt)
            with pytest.raises(Halt):
                agent.run_once()
    finally:
        agent.close()


def run_async(root: Path, url: str, todos: int | None = None, halt: tuple[str, Stage] | None = None) -> None:
    """The same with the async core, on a debug-mode loop."""

    async def main() -> None:
        agent = await build_async(root, url)
        try:
            if todos is None:
                await agent.run(until_idle=True)
            else:
                for _ in range(todos):
                    assert await agent.run_once()
            if halt is not None:
                inner = agent.checkpoints
                original = inner.save

                async def save(checkpoint: Checkpoint) -> None:
                    await original(checkpoint)
                    if (checkpoint.todo_id, checkpoint.stage) == halt:
                        raise Halt(checkpoint.todo_id)

                inner.save = save  # type: ignore[method-assign]
                with pytest.raises(Halt):
                    await agent.run_once()
        finally:
            await agent.aclose()

    with asyncio.Runner(loop_factory=debug_loop) as runner:
        runner.run(main())


@pytest.fixture(scope="session")
def stub() -> Iterator[StubServer]:
    """One stub LLM for the suite (deterministic, no faults)."""
    with StubServer(StubOptions(latency_ms=0, fail_rate=0.0, seed=0)) as server:
        yield server


@pytest.fixture(scope="session")
def _legacy_template(tmp_path_factory: pytest.TempPathFactory, stub: StubServer) -> Path:
    root = tmp_path_factory.mktemp("template") / "ws"
    create_sample_workspace(root)
    run_legacy(root, stub.url, todos=3, halt=("t-0004", Stage.EDITED))
    return root


@pytest.fixture
def legacy_ws(tmp_path: Path, _legacy_template: Path) -> Path:
    """A legacy workspace: 3 todos done, the 4th halted after ``edited``, 8 untouched."""
    dest = tmp_path / "ws"
    subprocess.run(["cp", "-a", str(_legacy_template), str(dest)], check=True)
    return dest
