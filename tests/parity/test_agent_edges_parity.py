"""Edges of the per-todo flow, for every implementation: surprises, interruptions, half-done work."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from codeagent.models import Checkpoint, Stage
from tests.parity._support import Impl, git
from tests.parity.test_agent_parity import EXPECTED_FILES, workspace


class SurprisingLLM:
    """An LLM component (not a transport) that fails in a way no LLM error describes."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def chat(self, messages: list[dict[str, str]]) -> str:
        raise self.exc

    def close(self) -> None:
        pass


class AsyncSurprisingLLM(SurprisingLLM):
    async def chat(self, messages: list[dict[str, str]]) -> str:  # type: ignore[override]
        raise self.exc

    async def aclose(self) -> None:
        pass


def _agent_with_llm(impl: Impl, root: Path, llm: Any) -> Any:
    agent = impl.agent(root, "http://127.0.0.1:9/v1")
    agent.target.llm = llm
    return agent


def _status(root: Path) -> dict[str, Any]:
    return dict(json.loads((root / ".agent/status.json").read_text()))


def test_an_unexpected_error_fails_the_todo_with_its_type(impl: Impl, tmp_path: Path) -> None:
    root = workspace(tmp_path / "ws", "http://127.0.0.1:9/v1")
    llm_cls = AsyncSurprisingLLM if impl.is_async else SurprisingLLM
    agent = _agent_with_llm(impl, root, llm_cls(RuntimeError("boom")))
    todo = impl.todos(root).get("t-0001")
    state = agent.process(todo)
    assert (state.status.value, state.error) == ("failed", "RuntimeError: boom")
    assert state.finished_at is not None


def test_an_interruption_leaves_the_todo_resumable(impl: Impl, tmp_path: Path) -> None:
    root = workspace(tmp_path / "ws", "http://127.0.0.1:9/v1")
    exc: BaseException = asyncio.CancelledError() if impl.is_async else KeyboardInterrupt()
    llm_cls = AsyncSurprisingLLM if impl.is_async else SurprisingLLM
    agent = _agent_with_llm(impl, root, llm_cls(exc))
    with pytest.raises(type(exc)):
        agent.process(impl.todos(root).get("t-0001"))
    assert _status(root)["todos"]["t-0001"]["status"] == "interrupted"
    assert impl.checkpoints(root).load("t-0001").stage is Stage.STARTED


def test_a_commit_already_in_history_is_not_made_again(impl: Impl, tmp_path: Path, stub: Any) -> None:
    """Crash between the commit and the ``committed`` checkpoint: the trailer in history wins."""
    root = workspace(tmp_path / "ws", stub.url)
    (root / "notes.txt").write_text("notes\nhello\n")
    git(root, "add", "notes.txt")
    git(root, "-c", "user.name=T", "-c", "user.email=t@t", "commit", "-q", "-m", "x\n\nTodo-Id: t-0001")
    sha = git(root, "rev-parse", "HEAD").strip()
    impl.checkpoints(root).save(
        Checkpoint(todo_id="t-0001", stage=Stage.EDITED, reply="r", writes={"notes.txt": "notes\nhello\n"})
    )
    agent = impl.agent(root, stub.url)
    try:
        state = agent.process(impl.todos(root).get("t-0001"))
        assert (state.status.value, state.commit) == ("done", sha)
        agent.run(until_idle=True)
    finally:
        agent.aclose() if impl.is_async else agent.close()
    assert (root / "notes.txt").read_text() == EXPECTED_FILES["notes.txt"]
    assert len(git(root, "log", "--format=%H", "--grep=Todo-Id: t-0001").split()) == 1


def test_a_checkpoint_without_commit_at_committed_is_an_error(impl: Impl, tmp_path: Path, stub: Any) -> None:
    root = workspace(tmp_path / "ws", stub.url)
    impl.checkpoints(root).save(Checkpoint(todo_id="t-0002", stage=Stage.COMMITTED))
    agent = impl.agent(root, stub.url)
    try:
        state = agent.process(impl.todos(root).get("t-0002"))
    finally:
        agent.aclose() if impl.is_async else agent.close()
    assert state.error == "checkpoint of t-0002 is at committed without a commit"
