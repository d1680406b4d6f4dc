"""Smaller kernel parts: metered components, the directory watcher, the uvicorn wrapper, a runtime."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from codeagent.config import AgentConfig
from codeagent.models import Checkpoint, Stage, TodoState, TodoStatus
from core_async.checkpoints import AsyncCheckpointJsonStore
from core_async.files import AsyncWorkspaceFiles
from core_async.git import AsyncGitRepo
from core_async.kernel import inotify
from core_async.kernel.api_app import StoreWorkspace, create_api_app
from core_async.kernel.events import EventBus
from core_async.kernel.http_server import ApiServer
from core_async.kernel.instrumented import (
    MeteredCheckpoints,
    MeteredFiles,
    MeteredGit,
    MeteredStatus,
    MeteredTodos,
    finish_step,
)
from core_async.kernel.limits import CapacityLimiter, ResourceLimits, ResourcePool
from core_async.kernel.metrics import MetricsCollector
from core_async.kernel.watching import DirectoryWatcher, default_backend
from core_async.kernel.workspace import WorkspaceRuntime
from core_async.llm_transport import AsyncEndpointPool
from core_async.status import AsyncStatusJsonStore
from core_async.todos import AsyncTodoJsonStore
from tests.kernel.workspaces import make_workspace


async def test_finish_step_completes_the_step_then_delivers_the_cancellation() -> None:
    finished = []

    async def step() -> str:
        await asyncio.sleep(0.05)
        finished.append(1)
        return "written"

    async def caller() -> str:
        return await finish_step(step())

    task = asyncio.create_task(caller())
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.sleep(0)
    task.cancel()  # a second cancel while the step runs changes nothing
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished == [1]

    async def failing() -> None:
        await asyncio.sleep(0.02)
        raise OSError("disk full")

    task = asyncio.create_task(finish_step(failing()))
    await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await finish_step(asyncio.sleep(0, "x")) == "x"


async def test_metered_components_pass_through_and_count(tmp_path: Path) -> None:
    make_workspace(tmp_path, 2)
    metrics = MetricsCollector()
    files = MeteredFiles(AsyncWorkspaceFiles(tmp_path), CapacityLimiter("files", 2), metrics)
    await files.write("new.txt", "hello\n")
    assert await files.read("new.txt") == "hello\n"
    assert await files.read_many(["f0.txt", "nope.txt"]) == {"f0.txt": "file 0\n", "nope.txt": None}
    git = MeteredGit(
        AsyncGitRepo(tmp_path, "T", "t@x"), ResourcePool(ResourceLimits()), str(tmp_path), metrics
    )
    await git.ensure_repo()
    head = await git.head()
    sha = await git.commit("add new\n\nTodo-Id: t-0009\n", ["new.txt"])
    assert sha != head and await git.find_commit("t-0009") == sha
    todos = MeteredTodos(AsyncTodoJsonStore(tmp_path), metrics)
    assert (await todos.get("t-0002")) is not None
    added = await todos.add("another", ["f1.txt"])
    assert added.id == "t-0003"
    seen: list[tuple[str, float]] = []
    checkpoints = MeteredCheckpoints(
        AsyncCheckpointJsonStore(tmp_path), metrics, lambda cp, s: seen.append((cp.stage.value, s))
    )
    await checkpoints.save(Checkpoint(todo_id="t-0001", stage=Stage.STARTED))  # no clock: not a timed step
    checkpoints.begin("t-0001")
    await checkpoints.save(Checkpoint(todo_id="t-0001", stage=Stage.ANSWERED, reply="r"))
    checkpoints.end("t-0001")
    assert await checkpoints.list_ids() == ["t-0001"]
    assert [stage for stage, _ in seen] == ["started", "answered"]
    text = metrics.render().decode()
    for component, operation in [
        ("files", "write"),
        ("files", "read"),
        ("git", "head"),
        ("todos", "get"),
        ("checkpoints", "list_ids"),
    ]:
        assert f'component="{component}",operation="{operation}"' in text
    assert 'codeagent_todo_step_seconds_count{step="plan"} 1.0' in text


async def test_held_interrupts_are_written_at_once(tmp_path: Path) -> None:
    metrics = MetricsCollector()
    inner = AsyncStatusJsonStore(tmp_path)
    await inner.set_todo("t-0001", TodoState(status=TodoStatus.RUNNING, attempts=3))
    await inner.set_todo("t-0002", TodoState(status=TodoStatus.DONE, attempts=1))
    for held, status in (
        ("t-0003", MeteredStatus(inner, metrics)),
        ("t-0004", MeteredStatus(inner, metrics)),
    ):
        status.hold_interrupts()
        await status.set_todo(held, TodoState(status=TodoStatus.INTERRUPTED, attempts=1))
        assert held not in (await status.load()).todos  # held back
        recorded = await status.flush_interrupted(["t-0001", "t-0002", "t-0404"])
        assert sorted(recorded) == ["t-0001", held]
        states = (await status.load()).todos
        assert states["t-0001"].status is TodoStatus.INTERRUPTED and states["t-0001"].attempts == 3
        assert states["t-0002"].status is TodoStatus.DONE
        assert await status.flush_interrupted() == []
        await inner.set_todo("t-0001", TodoState(status=TodoStatus.RUNNING, attempts=3))


@pytest.mark.parametrize("backend", ["inotify", "watchfiles"])
async def test_the_directory_watcher(tmp_path: Path, backend: str) -> None:
    calls: list[str] = []
    called = asyncio.Event()

    async def on_a() -> None:
        calls.append("a")
        called.set()

    async def broken() -> None:
        raise RuntimeError("callback bug")

    watcher = DirectoryWatcher(backend=backend)
    watcher.add(tmp_path, "a.json", on_a)
    watcher.add(tmp_path, "b.json", on_a)  # the same callback: called once per batch
    watcher.add(tmp_path, "c.json", broken)
    assert watcher.directories == [tmp_path]
    ready = asyncio.Event()
    task = asyncio.create_task(watcher.run(ready))
    await ready.wait()
    with pytest.raises(RuntimeError, match="before the watcher runs"):
        watcher.add(tmp_path, "d.json", on_a)
    for name in ("a.json", "b.json", "c.json", "unrelated.txt"):
        (tmp_path / name).write_text("{}")
    await asyncio.wait_for(called.wait(), 10)
    await asyncio.sleep(0.3)  # the rest of the batch (and nothing more) arrives
    watcher.stop()
    await asyncio.wait_for(task, 5)
    assert calls == ["a"]
    idle = DirectoryWatcher(backend=backend)
    ready = asyncio.Event()
    task = asyncio.create_task(idle.run(ready))
    await ready.wait()
    idle.stop()
    await task


async def test_inotify_overflow_and_removed_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    called = asyncio.Event()

    async def on_change() -> None:
        calls.append("x")
        called.set()

    gone = tmp_path / "gone"
    gone.mkdir()
    watcher = DirectoryWatcher(backend="inotify")
    watcher.add(tmp_path, "x.json", on_change)
    watcher.add(gone, "y.json", on_change)
    ready = asyncio.Event()
    task = asyncio.create_task(watcher.run(ready))
    await ready.wait()
    gone.rmdir()  # the watch goes away: logged, the rest keeps working
    original = inotify.Inotify.read_events

    def overflowing(self: inotify.Inotify) -> list[inotify.RawEvent]:
        return [*original(self), inotify.RawEvent(-1, inotify.IN_Q_OVERFLOW, "")]

    monkeypatch.setattr(inotify.Inotify, "read_events", overflowing)
    (tmp_path / "other.txt").write_text("wake up")
    await asyncio.wait_for(called.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == ["x"]

    def no_inotify() -> None:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(inotify.Inotify, "__init__", lambda self: no_inotify())
    fallback = DirectoryWatcher(backend="inotify")
    fallback.add(tmp_path, "x.json", on_change)
    ready = asyncio.Event()
    task = asyncio.create_task(fallback.run(ready))
    await ready.wait()
    assert fallback.backend == "watchfiles"
    fallback.stop()
    await asyncio.wait_for(task, 5)
    with pytest.raises(ValueError, match="unknown watch backend"):
        DirectoryWatcher(backend="polling")
    monkeypatch.setenv("CODEAGENT_WATCH_BACKEND", "watchfiles")
    assert default_backend() == "watchfiles"
    assert list(inotify.parse_events(b"")) == []


async def test_the_api_server_reports_a_taken_port() -> None:
    app = create_api_app(
        [StoreWorkspace("w", None, None, None)],  # type: ignore[arg-type]
        metrics=MetricsCollector(),
        events=EventBus(),
    )
    first = ApiServer(app, "127.0.0.1", 0)
    with pytest.raises(RuntimeError, match="not listening"):
        _ = first.port
    await first.aclose()  # not started: nothing to do
    await first.start()
    assert first.started and first.url == f"http://127.0.0.1:{first.port}"
    second = ApiServer(app, "127.0.0.1", first.port)
    with pytest.raises(OSError, match="could not listen"):
        await second.start()
    await first.aclose()
    with pytest.raises(ValueError, match="at least one workspace"):
        create_api_app([], metrics=MetricsCollector(), events=EventBus())


async def runtime_for(root: Path, llm_url: str | None) -> WorkspaceRuntime:
    return WorkspaceRuntime(
        root,
        root.name,
        llm_url=llm_url,
        pool=AsyncEndpointPool(),
        resources=ResourcePool(ResourceLimits()),
        metrics=MetricsCollector(),
        events=EventBus(),
    )


async def test_a_runtime_keeps_its_components_when_a_new_config_has_no_llm(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    make_workspace(root, 1, config=json.dumps({"llm": {"base_url": "http://127.0.0.1:9/v1"}}))
    runtime = await runtime_for(root, None)
    with pytest.raises(RuntimeError, match="not started"):
        await runtime.process((await runtime.todos.load())[0])
    await runtime.start()
    before = runtime._generation
    await runtime._on_config_change(runtime.config, AgentConfig())  # no endpoint any more: keep the old
    assert runtime._generation is before
    await runtime._on_config_change(
        runtime.config, AgentConfig.model_validate({"llm": {"base_url": "http://h/v1"}})
    )
    assert runtime._generation is not before and before is not None and before.closed
    await runtime.aclose()
    await runtime.pool.aclose()
    bare = await runtime_for(tmp_path / "empty", None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no LLM endpoint"):
        await bare.start()


async def test_a_todo_whose_state_cannot_be_written_is_an_error_event(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    todos = make_workspace(root, 1)
    runtime = await runtime_for(root, "http://127.0.0.1:9/v1")
    await runtime.start()
    assert runtime._generation is not None

    async def broken(todo: object) -> TodoState:
        raise PermissionError("status.json is read-only")

    runtime._generation.agent.process = broken  # type: ignore[method-assign]
    with pytest.raises(PermissionError):
        await runtime.process(todos[0])
    # It never reached "running" on disk, so it never started: only the error is published.
    assert [e.type for e in runtime.events.since(0)] == ["todo.error"]
    await runtime.aclose()
    await runtime.pool.aclose()
