"""The loops as the application wires them, routed through the bridge: what each flag really changes.

Each test here failed before the routing holes it names were closed: canary
on the legacy loop, the configuration on the async loop, the shutdown's
``interrupted`` write, shadow under concurrency, and the shared LLM pool.
Real git workspaces, the stub LLM over loopback HTTP, the real kernel.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import core_async.files
import legacy.status
from bridge.routing import canary_point
from bridge.runtime import BridgeRuntime
from bridge.wiring import RoutedComponents, recording_transport
from codeagent.models import TodoStatus
from codeagent_app.sample import create_sample_workspace
from core_async.kernel.components import ComponentProvider
from core_async.kernel.limits import ResourceLimits
from feature_flags import COMPONENTS, ComponentChange, Mode, read_flags, update_flags
from feature_flags.mismatches import read_mismatches
from llm_stub import StubOptions, StubServer
from tests.kernel.workspaces import make_workspace, running_kernel, trailers, wait_for_events

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    with StubServer(StubOptions(latency_ms=20)) as server:
        yield server


def _flags(root: Path, reason: str = "test", **modes: ComponentChange) -> None:
    update_flags(root / ".agent/flags.toml", components=modes, source="cli", reason=reason)


class Routed:
    """The kernel's component provider factory as ``codeagent run`` builds it, keeping each runtime."""

    def __init__(self) -> None:
        self.runtimes: dict[Path, BridgeRuntime] = {}

    def __call__(self, root: Path) -> ComponentProvider:
        runtime = self.runtimes[root] = BridgeRuntime(root, watch=False)
        return RoutedComponents(runtime)


def _codeagent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codeagent_app.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )


# -- canary: the same todos go the same way on both loops -------------------------------------------


def _new_path_calls(root: Path, component: str) -> int:
    shown = _codeagent("flags", "show", "--json", "-w", str(root))
    assert shown.returncode == 0, shown.stderr
    rows = {row["component"]: row for row in json.loads(shown.stdout)["components"]}
    return int(rows[component]["calls"])


@pytest.mark.parametrize("percent", [100, 50])
def test_canary_routes_the_same_todos_on_both_loops(tmp_path: Path, stub: StubServer, percent: int) -> None:
    calls = {}
    for loop in ("legacy", "async"):
        root = tmp_path / loop
        todos = create_sample_workspace(root)
        _flags(root, files=ComponentChange(mode=Mode.CANARY, percent=percent))
        done = _codeagent("run", "-w", str(root), "--loop", loop, "--until-idle", "--llm-url", stub.url)
        assert done.returncode == 0, done.stderr
        calls[loop] = _new_path_calls(root, "files")
    assert calls["legacy"] == calls["async"] > 0
    if percent == 50:
        # Sticky per todo id: the calls are those of the todos whose canary point is below 50, on both loops.
        chosen = [t for t in todos if canary_point("files", t.id) < percent]
        assert 0 < len(chosen) < len(todos)
        assert calls["legacy"] < _full_run_calls(tmp_path, stub)


def _full_run_calls(tmp_path: Path, stub: StubServer) -> int:
    root = tmp_path / "all-new"
    create_sample_workspace(root)
    _flags(root, files=ComponentChange(mode=Mode.CANARY, percent=100))
    assert (
        _codeagent(
            "run", "-w", str(root), "--loop", "legacy", "--until-idle", "--llm-url", stub.url
        ).returncode
        == 0
    )
    return _new_path_calls(root, "files")


# -- the configuration is routed on the async loop too ----------------------------------------------


@pytest.mark.parametrize("mode", [Mode.LEGACY, Mode.NEW, Mode.SHADOW])
async def test_config_is_routed_on_the_async_loop_at_start_and_on_reload(
    tmp_path: Path, stub: StubServer, mode: Mode
) -> None:
    root = tmp_path / "ws"
    make_workspace(root, 1, config='{"poll_interval": 0.5}')
    _flags(root, config=ComponentChange(mode=mode))
    routed = Routed()
    async with running_kernel([root], stub.url, components=routed) as core:
        await wait_for_events(core, lambda seen: any(e.type == "todo.done" for e in seen))
        assert core.runtimes[0].config.poll_interval == 0.5
        counters = routed.runtimes[root].counters["config"]
        loads = counters.legacy + counters.new + counters.shadow
        assert loads == 1
        seen_after = core.events.last_seq
        (root / ".agent/config.json").write_text('{"poll_interval": 0.25}\n')
        await wait_for_events(
            core, lambda seen: any(e.type == "config.reloaded" for e in seen), after=seen_after
        )
        assert core.runtimes[0].config.poll_interval == 0.25
    expected = {Mode.LEGACY: (2, 0, 0), Mode.NEW: (0, 2, 0), Mode.SHADOW: (0, 0, 2)}[mode]
    assert (counters.legacy, counters.new, counters.shadow) == expected
    assert counters.mismatches == 0


# -- a shutdown's interrupted writes go through the routed status store -----------------------------


async def test_interrupted_todos_are_written_through_the_status_path_the_flags_choose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[tuple[str, str]] = []
    original = legacy.status.StatusStore.set_todo

    def spy(self: legacy.status.StatusStore, todo_id: str, state: Any) -> None:
        written.append((todo_id, state.status.value))
        original(self, todo_id, state)

    monkeypatch.setattr(legacy.status.StatusStore, "set_todo", spy)
    root = tmp_path / "ws"
    make_workspace(root, 4)
    _flags(root, status=ComponentChange(mode=Mode.LEGACY))
    routed = Routed()
    with StubServer(StubOptions(latency_ms=5_000)) as slow:
        async with running_kernel([root], slow.url, components=routed, grace_seconds=0.0) as core:
            # Every todo is running on disk and waiting for the LLM: its ``started`` checkpoint is saved.
            await wait_for_events(core, lambda seen: sum(e.type == "todo.checkpoint" for e in seen) == 4)
    interrupted = sorted(todo for todo, status in written if status == "interrupted")
    assert interrupted == ["t-0001", "t-0002", "t-0003", "t-0004"]
    doc = json.loads((root / ".agent/status.json").read_text())
    assert {s["status"] for s in doc["todos"].values()} == {TodoStatus.INTERRUPTED.value}
    counters = routed.runtimes[root].counters["status"]
    assert counters.new == 0 and counters.legacy > 0


# -- shadow under concurrency: like with like ------------------------------------------------------


def _all_shadow(root: Path, rollback: str = "") -> None:
    (root / ".agent/flags.toml").write_text(f'version = 1\nloop = "async"\n{rollback}')
    _flags(root, **{c: ComponentChange(mode=Mode.SHADOW) for c in COMPONENTS})


def _todos_over_files(n: int, files: int) -> list[Any]:
    from codeagent.models import Todo

    return [
        Todo(
            id=f"t-{i + 1:04d}",
            text=f'append a line "line {i}" to file f{i % files}.txt',
            files=[f"f{i % files}.txt"],
        )
        for i in range(n)
    ]


@pytest.mark.slow
@pytest.mark.parametrize(("todos", "files"), [(100, 10), (100, 100)])
async def test_shadow_of_every_component_under_concurrency_finds_no_mismatch(
    tmp_path: Path, todos: int, files: int
) -> None:
    root = tmp_path / "ws"
    make_workspace(root, files, todos=_todos_over_files(todos, files))
    _all_shadow(root)
    routed = Routed()
    limits = ResourceLimits(max_concurrency=100, per_workspace=100, llm_slots=100)
    with StubServer(StubOptions(latency_ms=300)) as stub:
        async with running_kernel([root], stub.url, components=routed, limits=limits) as core:
            events = await wait_for_events(
                core, lambda seen: sum(e.type == "todo.done" for e in seen) == todos, within=120
            )
            peak = _peak_running(events)
    runtime = routed.runtimes[root]
    assert sum(c.mismatches for c in runtime.counters.values()) == 0, read_mismatches(
        root / ".agent/shadow-mismatches.jsonl"
    )
    assert read_mismatches(root / ".agent/shadow-mismatches.jsonl") == []
    assert all(runtime.counters[c].shadow > 0 for c in COMPONENTS)
    assert sorted(trailers(root)) == [f"t-{i + 1:04d}" for i in range(todos)]
    assert {f.mode for f in read_flags(root / ".agent/flags.toml").components.values()} == {Mode.SHADOW}
    assert peak >= min(files, todos) * 0.8, f"only {peak} todos were in flight at once"


def _peak_running(events: list[Any]) -> int:
    running = peak = 0
    for event in events:
        if event.type == "todo.started":
            running += 1
            peak = max(peak, running)
        elif event.type in ("todo.done", "todo.failed", "todo.error", "todo.interrupted"):
            running -= 1
    return peak


@pytest.mark.slow
async def test_a_planted_divergence_rolls_back_that_component_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original: Callable[..., Any] = core_async.files.AsyncWorkspaceFiles.write_many

    async def upper(self: core_async.files.AsyncWorkspaceFiles, contents: dict[str, str]) -> None:
        await original(self, {path: text.upper() for path, text in contents.items()})

    monkeypatch.setattr(core_async.files.AsyncWorkspaceFiles, "write_many", upper)
    root = tmp_path / "ws"
    make_workspace(root, 100)
    _all_shadow(root, "[rollback]\nmin_samples = 10\nwindow = 50\n")
    routed = Routed()
    limits = ResourceLimits(max_concurrency=100, per_workspace=100, llm_slots=100)
    with StubServer(StubOptions(latency_ms=300)) as stub:
        async with running_kernel([root], stub.url, components=routed, limits=limits) as core:
            await wait_for_events(
                core, lambda seen: sum(e.type == "todo.done" for e in seen) == 100, within=120
            )
    flags = read_flags(root / ".agent/flags.toml")
    assert flags.flag("files").mode is Mode.LEGACY
    assert {c: flags.flag(c).mode for c in COMPONENTS if c != "files"} == {
        c: Mode.SHADOW for c in COMPONENTS if c != "files"
    }
    counters = routed.runtimes[root].counters
    assert counters["files"].mismatches >= 1
    assert sum(counters[c].mismatches for c in COMPONENTS if c != "files") == 0
    recorded = {m["component"] for m in read_mismatches(root / ".agent/shadow-mismatches.jsonl")}
    assert recorded == {"files"}
    # The served path was legacy all along: the workspace holds what the legacy writes made.
    assert (root / "f0.txt").read_text() == "file 0\nline 0\n"


# -- one LLM pool for every workspace, routed or not -------------------------------------------------


@pytest.mark.parametrize(("mode", "serve"), [(Mode.NEW, None), (Mode.SHADOW, "new")])
async def test_every_routed_workspace_shares_the_kernels_llm_pool(
    tmp_path: Path, stub: StubServer, mode: Mode, serve: str | None
) -> None:
    """The new path's real requests (mode new, or shadow serving new) go over the kernel's one pool."""
    roots = [tmp_path / "a", tmp_path / "b"]
    for root in roots:
        make_workspace(root, 3)
        _flags(root, llm=ComponentChange(mode=mode, serve=serve))
    routed = Routed()
    async with running_kernel(
        roots, stub.url, components=routed, wrap_llm_transport=recording_transport
    ) as core:
        await wait_for_events(core, lambda seen: sum(e.type == "todo.done" for e in seen) == 6)
        pool = core.services.pool
        clients = [runtime._generation.agent.llm.inner.new for runtime in core.runtimes]  # type: ignore[union-attr]
        assert all(client.pool is pool for client in clients)
        endpoints = pool.endpoints()
        assert len(endpoints) == 1 and endpoints[0].tail.requests == 6  # both workspaces, one endpoint
    for root in roots:
        assert routed.runtimes[root].counters["llm"].mismatches == 0


# -- how deep a routed call goes ------------------------------------------------------------------

PROJECT = {
    "codeagent",
    "codeagent_app",
    "llm_stub",
    "legacy",
    "core_async",
    "core_sync",
    "bridge",
    "feature_flags",
}


def _project_frame(filename: str) -> str | None:
    try:
        rel = Path(filename).resolve().relative_to(REPO)
    except ValueError:
        return None
    return rel.as_posix() if rel.parts[0] in PROJECT else None


def _await_chain(task: Any) -> list[tuple[str, str]]:
    """A suspended task's await chain, outermost first, as (file, function)."""
    chain = []
    coro = task.get_coro()
    while coro is not None and hasattr(coro, "cr_frame"):
        if coro.cr_frame is not None:
            chain.append((coro.cr_frame.f_code.co_filename, coro.cr_frame.f_code.co_name))
        coro = coro.cr_await
    return chain


async def test_a_routed_call_is_at_most_ten_project_frames_below_the_agents_step(
    tmp_path: Path, stub: StubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the agent's step (``_advance``) down to the commit's I/O (libgit2's thread hop, or the git process)."""
    import asyncio
    import sys as _sys

    import core_async.git as git_module

    seen: list[list[str]] = []

    def capture() -> None:
        inner = []
        frame = _sys._getframe(2)
        while frame is not None:
            inner.append((frame.f_code.co_filename, frame.f_code.co_name))
            frame = frame.f_back
        inner.reverse()
        if not any(
            name == "commit" and (_project_frame(f) or "").endswith("core_async/git.py") for f, name in inner
        ):
            return
        me = asyncio.current_task()
        chains = [_await_chain(task) for task in asyncio.all_tasks() if task is not me]
        outer = next(chain for chain in chains if any(name == "_advance" for _, name in chain))
        start = next(i for i, (_, name) in enumerate(outer) if name == "_advance")
        path = [_project_frame(f) for f, _ in outer[start + 1 :]] + [_project_frame(f) for f, _ in inner]
        seen.append([p for p in path if p is not None])

    hop, spawn = git_module.ato_thread_settled, git_module.arun_process

    async def spied_hop(*args: Any, **kwargs: Any) -> Any:
        if not seen:
            capture()
        return await hop(*args, **kwargs)

    async def spied_spawn(*args: Any, **kwargs: Any) -> Any:
        if not seen:
            capture()
        return await spawn(*args, **kwargs)

    monkeypatch.setattr(git_module, "ato_thread_settled", spied_hop)
    monkeypatch.setattr(git_module, "arun_process", spied_spawn)
    root = tmp_path / "ws"
    make_workspace(root, 1)
    _flags(root, **{c: ComponentChange(mode=Mode.NEW) for c in COMPONENTS})
    async with running_kernel([root], stub.url, components=Routed()) as core:
        await wait_for_events(core, lambda events: any(e.type == "todo.done" for e in events))
    assert seen, "no commit was made"
    frames = seen[0]
    print(f"{len(frames) + 1} project frames from the step to the commit's I/O:", " > ".join(frames))
    assert len(frames) + 1 <= 10, frames  # + the hop itself
    assert frames[-1] == "core_async/git.py"
