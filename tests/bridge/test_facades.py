"""Every component, every mode, both faces: the implementation the flags name is the one that runs.

Real implementations (legacy, the generated sync twin, core_async) are wrapped
in spies that log each call they receive; the test then checks the log.
Shadow reads must reach both; shadow writes must reach the candidate only
through a scratch copy, leaving the real workspace as one write left it.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import core_async.checkpoints as a_checkpoints
import core_async.files as a_files
import core_async.git as a_git
import core_async.status as a_status
import core_async.todos as a_todos
import core_sync.checkpoints as s_checkpoints
import core_sync.files as s_files
import core_sync.git as s_git
import core_sync.status as s_status
import core_sync.todos as s_todos
import legacy.checkpoints as l_checkpoints
import legacy.files as l_files
import legacy.git as l_git
import legacy.status as l_status
import legacy.todos as l_todos
from bridge import facades
from bridge.runtime import BridgeRuntime
from codeagent.context import current_todo
from codeagent.models import AgentState, Checkpoint, Stage, TodoState, TodoStatus
from feature_flags import ComponentChange, Mode, update_flags

Log = list[tuple[str, str, str]]  # (implementation, method, where: real|scratch)


class Spy:
    """Forwards every method call to ``inner`` after logging it."""

    def __init__(self, inner: Any, name: str, log: Log, where: str) -> None:
        self._inner, self._name, self._log, self._where = inner, name, log, where

    def __getattr__(self, attr: str) -> Any:
        target = getattr(self._inner, attr)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            self._log.append((self._name, attr, self._where))
            return target(*args, **kwargs)

        return call


NAME, EMAIL = "Bridge Test", "bridge@localhost"

# component -> (legacy factory, sync twin factory, async factory, facade classes)
FACTORIES: dict[str, tuple[Callable[[Path], Any], Callable[[Path], Any], Callable[[Path], Any], Any, Any]] = {
    "todos": (l_todos.TodoStore, s_todos.SyncTodoJsonStore, a_todos.AsyncTodoJsonStore, facades.SyncTodosFacade, facades.AsyncTodosFacade),
    "status": (l_status.StatusStore, s_status.SyncStatusJsonStore, a_status.AsyncStatusJsonStore, facades.SyncStatusFacade, facades.AsyncStatusFacade),
    "checkpoints": (l_checkpoints.CheckpointStore, s_checkpoints.SyncCheckpointJsonStore, a_checkpoints.AsyncCheckpointJsonStore, facades.SyncCheckpointsFacade, facades.AsyncCheckpointsFacade),
    "files": (l_files.Files, s_files.SyncWorkspaceFiles, a_files.AsyncWorkspaceFiles, facades.SyncFilesFacade, facades.AsyncFilesFacade),
    "git": (
        lambda r: l_git.GitRepo(r, NAME, EMAIL),
        lambda r: s_git.SyncGitRepo(r, NAME, EMAIL),
        lambda r: a_git.AsyncGitRepo(r, NAME, EMAIL),
        facades.SyncGitFacade,
        facades.AsyncGitFacade,
    ),
}  # fmt: skip


def _git(root: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": NAME,
        "GIT_AUTHOR_EMAIL": EMAIL,
        "GIT_COMMITTER_NAME": NAME,
        "GIT_COMMITTER_EMAIL": EMAIL,
    }
    return subprocess.run(
        ["git", "-c", "commit.gpgsign=false", *args], cwd=root, env={**env, "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    (root / "a.txt").write_text("a\n")
    _git(root, "add", "a.txt")
    _git(root, "commit", "-q", "-m", "init")
    l_todos.TodoStore(root).add("first", ["a.txt"])
    return root


@pytest.fixture
def runtime(workspace: Path) -> Iterator[BridgeRuntime]:
    rt = BridgeRuntime(workspace, watch=False)
    yield rt
    rt.close()


def _set(
    rt: BridgeRuntime, component: str, mode: Mode, *, serve: str | None = None, percent: float | None = None
) -> None:
    update_flags(
        rt.flags_path,
        components={component: ComponentChange(mode=mode, serve=serve, percent=percent)},
        source="cli",
        reason="test",
    )
    rt.store.reload()


def _facade(component: str, face: str, rt: BridgeRuntime, root: Path, log: Log) -> Any:
    legacy_f, twin_f, async_f, sync_cls, async_cls = FACTORIES[component]
    new_f = twin_f if face == "sync" else async_f
    cls = sync_cls if face == "sync" else async_cls
    return cls(
        rt.dispatcher,
        root,
        Spy(legacy_f(root), "legacy", log, "real"),
        Spy(new_f(root), "new", log, "real"),
        lambda r: Spy(legacy_f(r), "legacy", log, "scratch"),
        lambda r: Spy(new_f(r), "new", log, "scratch"),
    )


# component -> (a read call, a write call); each takes the facade and returns a value or awaitable
def _calls(component: str, root: Path) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    if component == "todos":
        return (lambda f: f.load(), lambda f: f.add("second", ["a.txt"]))
    if component == "status":
        state = TodoState(status=TodoStatus.RUNNING, attempts=1)
        return (lambda f: f.load(), lambda f: f.set_todo("t-0001", state))
    if component == "checkpoints":
        cp = Checkpoint(todo_id="t-0001", stage=Stage.STARTED)
        return (lambda f: f.list_ids(), lambda f: f.save(cp))
    if component == "files":
        return (lambda f: f.read("a.txt"), lambda f: f.write_many({"b.txt": "b\n"}))

    def commit(f: Any) -> Any:
        (root / "a.txt").write_text("changed\n")
        return f.commit("change a\n\nTodo-Id: t-0001\n", ["a.txt"])

    return (lambda f: f.head(), commit)


def _invoke(face: str, rt: BridgeRuntime, call: Callable[[], Any]) -> Any:
    if face == "sync":
        return call()

    async def go() -> Any:
        value = await call()
        await rt.dispatcher.drain()
        return value

    return asyncio.run(go(), debug=True)


COMPONENTS = list(FACTORIES)
FACES = ["sync", "async"]


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize("component", COMPONENTS)
def test_legacy_and_new_modes_run_exactly_one_implementation(
    component: str, face: str, workspace: Path, runtime: BridgeRuntime
) -> None:
    read, write = _calls(component, workspace)
    for mode, expected in ((Mode.LEGACY, "legacy"), (Mode.NEW, "new")):
        _set(runtime, component, mode)
        log: Log = []
        facade = _facade(component, face, runtime, workspace, log)
        _invoke(face, runtime, lambda f=facade: read(f))
        _invoke(face, runtime, lambda f=facade: write(f))
        assert {impl for impl, _, _ in log} == {expected}, (mode, log)
        assert {where for _, _, where in log} == {"real"}


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize("component", COMPONENTS)
@pytest.mark.parametrize("serve", ["legacy", "new"])
def test_shadow_runs_both_and_writes_the_candidate_only_to_scratch(
    component: str, face: str, serve: str, workspace: Path, runtime: BridgeRuntime
) -> None:
    _set(runtime, component, Mode.SHADOW, serve=serve)
    other = "new" if serve == "legacy" else "legacy"
    read, write = _calls(component, workspace)
    log: Log = []
    facade = _facade(component, face, runtime, workspace, log)
    _invoke(face, runtime, lambda: read(facade))
    assert {(impl, where) for impl, _, where in log} == {(serve, "real"), (other, "real")}
    log.clear()
    _invoke(face, runtime, lambda: write(facade))
    assert {(impl, where) for impl, _, where in log} == {(serve, "real"), (other, "scratch")}
    runtime.mismatches.close()
    assert runtime.dispatcher.counters[component].mismatches == 0
    assert runtime.monitor.snapshot()[component].mismatches == 0


def test_shadow_write_leaves_the_workspace_as_one_write_does(workspace: Path, runtime: BridgeRuntime) -> None:
    _set(runtime, "git", Mode.SHADOW)
    _set(runtime, "files", Mode.SHADOW, serve="new")
    log: Log = []
    files = _facade("files", "sync", runtime, workspace, log)
    git = _facade("git", "sync", runtime, workspace, log)
    files.write_many({"a.txt": "edited\n"})
    git.commit("edit\n\nTodo-Id: t-0001\n", ["a.txt"])
    assert (workspace / "a.txt").read_text() == "edited\n"
    assert _git(workspace, "rev-list", "--count", "HEAD").strip() == "2"
    assert not list(workspace.glob("codeagent-shadow-*"))


@pytest.mark.parametrize("face", FACES)
def test_canary_follows_the_current_todo(face: str, workspace: Path, runtime: BridgeRuntime) -> None:
    for percent, expected in ((0, "legacy"), (100, "new")):
        _set(runtime, "status", Mode.CANARY, percent=percent)
        log: Log = []
        facade = _facade("status", face, runtime, workspace, log)
        token = current_todo.set("t-0001")
        try:
            _invoke(face, runtime, lambda f=facade: f.set_agent(AgentState(state="idle")))
        finally:
            current_todo.reset(token)
        assert {impl for impl, _, _ in log} == {expected}
