"""The agent's loop (not until idle): polling, wake-ups, stop requests and bad state files, for each implementation."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import legacy.todos
from codeagent.errors import StateFileError
from tests.parity._support import Impl
from tests.parity.test_agent_parity import workspace


def _later(impl: Impl, seconds: float, action: Callable[[], None]) -> None:
    """Run ``action`` after ``seconds`` while the agent's loop runs (a timer thread or the event loop)."""
    if impl.is_async:
        impl.runner.get_loop().call_later(seconds, action)
    else:
        threading.Timer(seconds, action).start()


def _stop_event(impl: Impl) -> Any:
    return asyncio.Event() if impl.is_async else threading.Event()


def _empty_workspace(tmp_path: Path, url: str) -> Path:
    root = workspace(tmp_path / "ws", url)
    (root / ".agent/todos.json").write_text('{"version": 1, "todos": []}')
    return root


def test_idle_loop_picks_up_a_new_todo_and_stops_on_request(impl: Impl, tmp_path: Path, stub: Any) -> None:
    root = _empty_workspace(tmp_path, stub.url)
    agent = impl.agent(root, stub.url)

    def add_and_wake() -> None:
        legacy.todos.TodoStore(root).add('create file new.txt with content "n"')
        agent.wake()

    _later(impl, 0.15, add_and_wake)
    _later(impl, 0.6, agent.request_stop)
    try:
        assert agent.run() == 1
    finally:
        agent.aclose() if impl.is_async else agent.close()
    assert (root / "new.txt").read_text() == "n\n"
    status = json.loads((root / ".agent/status.json").read_text())
    assert status["agent"]["state"] == "stopped"
    assert status["todos"]["t-0001"]["status"] == "done"


def test_external_stop_event_ends_an_idle_loop(impl: Impl, tmp_path: Path, stub: Any) -> None:
    root = _empty_workspace(tmp_path, stub.url)
    agent = impl.agent(root, stub.url)
    stop = _stop_event(impl)
    _later(impl, 0.2, stop.set)
    try:
        assert agent.run(stop=stop) == 0
    finally:
        agent.aclose() if impl.is_async else agent.close()


def test_a_bad_todo_file_is_reported_and_retried(
    impl: Impl, tmp_path: Path, stub: Any, caplog: pytest.LogCaptureFixture
) -> None:
    root = _empty_workspace(tmp_path, stub.url)
    (root / ".agent/todos.json").write_text("{broken")
    agent = impl.agent(root, stub.url)
    try:
        with pytest.raises(StateFileError):
            agent.run(until_idle=True)
        stop = _stop_event(impl)
        _later(impl, 0.3, stop.set)
        with caplog.at_level(logging.ERROR):
            assert agent.run(stop=stop) == 0
    finally:
        agent.aclose() if impl.is_async else agent.close()
    reports = [r for r in caplog.records if "cannot work on the todo list" in r.getMessage()]
    assert len(reports) == 1  # said once, not at every poll


def test_cannot_record_stopped_state(
    impl: Impl, tmp_path: Path, stub: Any, caplog: pytest.LogCaptureFixture
) -> None:
    root = _empty_workspace(tmp_path, stub.url)
    (root / ".agent/status.json").write_text("{broken")
    agent = impl.agent(root, stub.url)
    try:
        with caplog.at_level(logging.ERROR), pytest.raises(StateFileError):
            agent.run(until_idle=True)
    finally:
        agent.aclose() if impl.is_async else agent.close()
    assert any("cannot record the agent's state" in r.getMessage() for r in caplog.records)
