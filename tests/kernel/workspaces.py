"""Helpers shared by the kernel and API tests: sample git workspaces, waiting for kernel events."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from codeagent.models import Todo, TodoFile, dump_json
from core_async.kernel.events import Event
from core_async.kernel.server_core import AsyncServerCore, KernelOptions

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@localhost",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@localhost",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(root: Path, *args: str) -> str:
    """Run git in ``root`` and return its stdout."""
    done = subprocess.run(
        ["git", "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main", *args],
        cwd=root,
        env={**os.environ, **GIT_ENV},
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


def append_todos(n: int, *, start: int = 0, prefix: str = "t") -> list[Todo]:
    """``n`` todos ``append a line "line i" to file f<i>.txt``, each naming its own file."""
    return [
        Todo(
            id=f"{prefix}-{i + 1:04d}",
            text=f'append a line "line {i}" to file f{i}.txt',
            files=[f"f{i}.txt"],
        )
        for i in range(start, start + n)
    ]


def make_workspace(
    root: Path, n: int, *, config: str | None = None, todos: Sequence[Todo] | None = None
) -> list[Todo]:
    """A git workspace at ``root`` with files ``f0.txt ...`` and ``n`` append todos (or the given ones)."""
    root.mkdir(parents=True, exist_ok=True)
    todo_list = list(todos) if todos is not None else append_todos(n)
    for i in range(max(n, len(todo_list))):
        (root / f"f{i}.txt").write_text(f"file {i}\n", encoding="utf-8")
    state = root / ".agent"
    state.mkdir(exist_ok=True)
    (state / "todos.json").write_text(dump_json(TodoFile(todos=todo_list)), encoding="utf-8")
    if config is not None:
        (state / "config.json").write_text(config, encoding="utf-8")
    (root / ".gitignore").write_text(".agent/\n", encoding="utf-8")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return todo_list


def write_todos(root: Path, todos: Sequence[Todo]) -> None:
    """Replace the todo list the way ``codeagent todo add`` does (temp file renamed over it)."""
    path = root / ".agent" / "todos.json"
    tmp = path.with_name(".todos.json.tmp")
    tmp.write_text(dump_json(TodoFile(todos=list(todos))), encoding="utf-8")
    os.replace(tmp, path)


def trailers(root: Path) -> list[str]:
    """Every ``Todo-Id`` trailer value in the history, newest first."""
    out = git(root, "log", "--format=%(trailers:key=Todo-Id,valueonly)")
    return [line.strip() for line in out.splitlines() if line.strip()]


@asynccontextmanager
async def running_kernel(
    workspaces: Sequence[Path], llm_url: str | None, **options: Any
) -> AsyncIterator[AsyncServerCore]:
    """A started kernel whose main loop runs in a task; shut down (gracefully) on exit."""
    options.setdefault("install_signal_handlers", False)
    core = AsyncServerCore(list(workspaces), llm_url=llm_url, options=KernelOptions(**options))
    await core.start()
    main = asyncio.create_task(core.run_main_loop())
    try:
        yield core
    finally:
        await core.handle_shutdown()
        await main


async def wait_for_events(
    core: AsyncServerCore, predicate: Callable[[list[Event]], bool], *, within: float = 30.0, after: int = 0
) -> list[Event]:
    """Collect the kernel's events (from ``after``) until ``predicate(events)`` holds."""
    seen: list[Event] = []
    subscription = core.events.subscribe(after=after)
    try:
        async with asyncio.timeout(within):
            while not predicate(seen):
                event = await subscription.next()
                if event is None:
                    break
                seen.append(event)
    finally:
        subscription.close()
    return seen


def done_ids(events: Sequence[Event]) -> set[str]:
    """Todo ids with a ``todo.done`` event."""
    return {str(e.data["todo_id"]) for e in events if e.type == "todo.done"}
