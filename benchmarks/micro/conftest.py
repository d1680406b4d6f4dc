"""Micro-benchmark fixtures: every operation under four callers.

* ``legacy``        the original sync component;
* ``core_sync``     the generated twin of the async component;
* ``core_async``    the async component awaited on a persistent event loop (``Runner.run`` per call);
* ``async_to_sync`` the async component called through ``asgiref.sync.async_to_sync``
  (what a sync caller would do without the twin).

Run with ``python -m pytest benchmarks/micro --benchmark-only`` (not part of the tests);
``python -m benchmarks.micro.report FILE.json`` prints the ratios to legacy.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from asgiref.sync import async_to_sync

import core_async.checkpoints
import core_async.files
import core_async.git
import core_async.llm
import core_async.status
import core_async.todos
import core_sync.checkpoints
import core_sync.files
import core_sync.git
import core_sync.llm
import core_sync.status
import core_sync.todos
import legacy.checkpoints
import legacy.files
import legacy.git
import legacy.llm
import legacy.status
import legacy.todos

VARIANTS = ("legacy", "core_sync", "core_async", "async_to_sync")

CLASSES: dict[str, dict[str, Any]] = {
    "legacy": {
        "todos": legacy.todos.TodoStore,
        "status": legacy.status.StatusStore,
        "checkpoints": legacy.checkpoints.CheckpointStore,
        "files": legacy.files.Files,
        "git": legacy.git.GitRepo,
        "llm": legacy.llm.LLMClient,
    },
    "core_sync": {
        "todos": core_sync.todos.SyncTodoJsonStore,
        "status": core_sync.status.SyncStatusJsonStore,
        "checkpoints": core_sync.checkpoints.SyncCheckpointJsonStore,
        "files": core_sync.files.SyncWorkspaceFiles,
        "git": core_sync.git.SyncGitRepo,
        "llm": core_sync.llm.SyncLLMClient,
    },
    "core_async": {
        "todos": core_async.todos.AsyncTodoJsonStore,
        "status": core_async.status.AsyncStatusJsonStore,
        "checkpoints": core_async.checkpoints.AsyncCheckpointJsonStore,
        "files": core_async.files.AsyncWorkspaceFiles,
        "git": core_async.git.AsyncGitRepo,
        "llm": core_async.llm.AsyncLLMClient,
    },
}


@dataclass
class Caller:
    """Builds a component for one variant and turns a method call into a zero-argument sync callable."""

    variant: str
    runner: asyncio.Runner

    def make(self, kind: str, *args: Any, **kwargs: Any) -> Any:
        family = "core_async" if self.variant == "async_to_sync" else self.variant
        return CLASSES[family][kind](*args, **kwargs)

    def bind(self, method: Callable[..., Any], *args: Any) -> Callable[[], Any]:
        if not inspect.iscoroutinefunction(method):
            return lambda: method(*args)
        if self.variant == "async_to_sync":
            blocking = async_to_sync(method)
            return lambda: blocking(*args)
        return lambda: self.runner.run(method(*args))


@pytest.fixture(scope="session")
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as runner:  # no debug mode: figures, not checks
        yield runner


@pytest.fixture(params=VARIANTS)
def caller(request: pytest.FixtureRequest, runner: asyncio.Runner) -> Caller:
    return Caller(request.param, runner)
