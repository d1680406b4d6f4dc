"""AsyncServerCore in-process: concurrent todos across workspaces, event-driven wake-ups, shutdown, resume."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from codeagent.errors import ConfigError, StateFileError
from codeagent.models import Todo
from core_async.kernel.entry import run_kernel
from core_async.kernel.limits import ResourceLimits
from core_async.kernel.server_core import AsyncServerCore, KernelOptions
from llm_stub import StubOptions, StubServer
from tests.kernel.workspaces import (
    append_todos,
    done_ids,
    make_workspace,
    running_kernel,
    trailers,
    wait_for_events,
    write_todos,
)


def load_status(root: Path) -> dict:
    return json.loads((root / ".agent/status.json").read_text(encoding="utf-8"))


async def test_until_idle_processes_every_workspace_concurrently(tmp_path: Path, stub_url: str) -> None:
    roots = [tmp_path / "alpha", tmp_path / "beta"]
    for root in roots:
        make_workspace(root, 8)
    core = AsyncServerCore(
        roots,
        llm_url=stub_url,
        until_idle=True,
        options=KernelOptions(install_signal_handlers=False, limits=ResourceLimits(max_concurrency=6)),
    )
    async with core:
        processed = await core.run_main_loop()
        exposition = core.metrics.render().decode()
    events = core.events.since(0)
    assert processed == 16
    for root in roots:
        status = load_status(root)
        assert {s["status"] for s in status["todos"].values()} == {"done"}
        assert status["agent"]["state"] == "stopped" and status["agent"]["loop"] == "async"
        assert sorted(trailers(root)) == [f"t-{i:04d}" for i in range(1, 9)]
        assert (root / "f3.txt").read_text() == "file 3\nline 3\n"

    one = [e.type for e in events if e.data.get("todo_id") == "t-0001" and e.data.get("workspace") == "alpha"]
    assert one == [
        "todo.queued",
        "todo.started",
        "todo.checkpoint",
        "todo.checkpoint",
        "todo.checkpoint",
        "todo.checkpoint",
        "todo.done",
    ]
    stages = [
        e.data["stage"]
        for e in events
        if e.type == "todo.checkpoint" and e.data["todo_id"] == "t-0002" and e.data["workspace"] == "beta"
    ]
    assert stages == ["started", "answered", "edited", "committed"]
    assert [events[0].type, events[-2].type, events[-1].type] == [
        "server.started",
        "server.draining",
        "server.stopped",
    ]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))

    found = {f.name: f for f in text_string_to_metric_families(exposition)}
    steps = {
        s.labels["step"] for s in found["codeagent_todo_step_seconds"].samples if s.name.endswith("_count")
    }
    assert steps == {"start", "plan", "edit", "commit", "total"}
    components = {
        s.labels["component"]
        for s in found["codeagent_component_latency_seconds"].samples
        if s.name.endswith("_count")
    }
    assert {"llm", "files", "git", "status", "checkpoints", "todos"} <= components
    done = {
        (s.labels["workspace"], s.labels["outcome"]): s.value
        for s in found["codeagent_todos"].samples
        if s.name.endswith("_total")
    }
    assert done == {("alpha", "done"): 8, ("beta", "done"): 8}


async def test_serving_wakes_on_the_todo_file_the_api_and_config_edits(tmp_path: Path, stub_url: str) -> None:
    root = tmp_path / "ws"
    todos = make_workspace(root, 2)
    async with running_kernel([root], stub_url, port=0) as core:
        await wait_for_events(core, lambda ev: done_ids(ev) >= {"t-0001", "t-0002"})
        # `codeagent todo add` rewrites .agent/todos.json: the watcher wakes the loop (no polling)
        extra = append_todos(1, start=2)
        write_todos(root, [*todos, *extra])
        mark = core.events.last_seq
        await wait_for_events(core, lambda ev: "t-0003" in done_ids(ev), after=mark)
        # a todo added through the API
        async with httpx.AsyncClient(base_url=str(core.api_url)) as client:
            reply = await client.post(
                "/v1/todos", json={"text": 'append a line "api" to file f0.txt', "files": ["f0.txt"]}
            )
            assert reply.status_code == 201
            new_id = reply.json()["id"]
            await wait_for_events(core, lambda ev: new_id in done_ids(ev), after=mark)
            assert (await client.get(f"/todos/{new_id}")).json()["status"] == "done"
        # a config edit is picked up (hot reload) and a broken one is refused
        config = root / ".agent/config.json"
        config.write_text(json.dumps({"git": {"author_name": "Hot Reload"}}), encoding="utf-8")
        await wait_for_events(core, lambda ev: any(e.type == "config.reloaded" for e in ev), after=mark)
        assert core.runtimes[0].config.git.author_name == "Hot Reload"
        config.write_text('{"git": {"author_name": 5}}', encoding="utf-8")
        await wait_for_events(core, lambda ev: any(e.type == "config.rejected" for e in ev), after=mark)
        assert core.runtimes[0].config.git.author_name == "Hot Reload"
        write_todos(
            root,
            [*todos, *extra, Todo(id="t-0100", text='append a line "x" to file f1.txt', files=["f1.txt"])],
        )
        await wait_for_events(core, lambda ev: "t-0100" in done_ids(ev), after=mark)
    log = (root / ".git").exists() and trailers(root)
    assert sorted(log) == sorted(["t-0001", "t-0002", "t-0003", new_id, "t-0100"])
    from tests.kernel.workspaces import git

    assert git(root, "log", "-1", "--format=%an").strip() == "Hot Reload"


async def test_a_bad_todo_file_is_reported_and_picked_up_again_once_fixed(
    tmp_path: Path, stub_url: str
) -> None:
    root = tmp_path / "ws"
    todos = make_workspace(root, 1)
    (root / ".agent/todos.json").write_text('{"version": 1, "todos": [}', encoding="utf-8")
    async with running_kernel([root], stub_url) as core:
        await wait_for_events(core, lambda ev: any(e.type == "workspace.error" for e in ev))
        write_todos(root, todos)
        await wait_for_events(core, lambda ev: "t-0001" in done_ids(ev))


async def test_until_idle_raises_for_an_unreadable_todo_file(tmp_path: Path, stub_url: str) -> None:
    root = tmp_path / "ws"
    make_workspace(root, 1)
    (root / ".agent/todos.json").write_text("[]", encoding="utf-8")
    with pytest.raises(StateFileError, match=r"todos\.json"):
        await run_kernel(
            [root], llm_url=stub_url, until_idle=True, options=KernelOptions(install_signal_handlers=False)
        )


async def test_a_failing_todo_is_recorded_and_the_others_go_on(tmp_path: Path, stub_url: str) -> None:
    root = tmp_path / "ws"
    todos = [
        Todo(id="t-0001", text="do something nobody understands", files=["f0.txt"]),
        *append_todos(2, start=1)[0:2],
    ]
    make_workspace(root, 3, todos=todos)
    processed = await run_kernel(
        [root], llm_url=stub_url, until_idle=True, options=KernelOptions(install_signal_handlers=False)
    )
    assert processed == 3
    states = load_status(root)["todos"]
    assert states["t-0001"]["status"] == "failed" and "no edit blocks" in states["t-0001"]["error"]
    assert states["t-0002"]["status"] == states["t-0003"]["status"] == "done"


async def test_shutdown_interrupts_running_todos_and_a_restart_resumes_them(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    make_workspace(root, 4)
    with StubServer(StubOptions(latency_ms=60_000)) as slow:
        async with running_kernel([root], slow.url, grace_seconds=0.3) as core:
            await wait_for_events(core, lambda ev: sum(e.type == "todo.checkpoint" for e in ev) == 4)
        interrupted = core.events.since(0)
    assert sum(e.type == "todo.interrupted" for e in interrupted) == 4
    states = load_status(root)["todos"]
    assert {s["status"] for s in states.values()} == {"interrupted"}
    assert all((root / f".agent/checkpoints/t-{i:04d}.json").exists() for i in range(1, 5))
    assert trailers(root) == []
    with StubServer(StubOptions()) as fast:
        processed = await run_kernel(
            [root], llm_url=fast.url, until_idle=True, options=KernelOptions(install_signal_handlers=False)
        )
    assert processed == 4
    states = load_status(root)["todos"]
    assert {s["status"] for s in states.values()} == {"done"}
    assert all(s["attempts"] == 2 for s in states.values())
    assert sorted(trailers(root)) == [f"t-{i:04d}" for i in range(1, 5)]


async def test_no_llm_configured_gets_the_injected_fallback_lazily(tmp_path: Path) -> None:
    from codeagent_app.endpoint import aembedded_stub

    root = tmp_path / "ws"
    make_workspace(root, 1, config='{"llm": {"base_url": "http://127.0.0.1:9/v1"}}')
    options = KernelOptions(install_signal_handlers=False, fallback_llm=aembedded_stub)
    async with AsyncServerCore([root], options=options, until_idle=True) as configured:
        assert "fallback-llm" not in configured.container.created()  # every workspace has an endpoint
    root = tmp_path / "bare"
    make_workspace(root, 1)
    core = AsyncServerCore([root], options=options, until_idle=True)
    async with core:
        assert "fallback-llm" in core.container.created()
        assert await core.run_main_loop() == 1
    assert core.container.closed and core.close_failures == []


async def test_start_errors_name_the_workspace_or_the_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        async with AsyncServerCore(
            [tmp_path / "missing"], options=KernelOptions(install_signal_handlers=False)
        ):
            pass
    root = tmp_path / "ws"
    make_workspace(root, 1, config='{"llm": {"timeout": "soon"}}')
    core = AsyncServerCore(
        [root], llm_url="http://127.0.0.1:9/v1", options=KernelOptions(install_signal_handlers=False)
    )
    with pytest.raises(ConfigError, match=r"llm\.timeout"):
        async with core:
            pass
    assert core.container.closed
    with pytest.raises(ValueError, match="at least one workspace"):
        AsyncServerCore([])
    other = tmp_path / "other"
    make_workspace(other, 0)
    async with running_kernel([other], "http://127.0.0.1:9/v1", port=0) as first:
        taken = int(str(first.api_url).rsplit(":", 1)[1])
        clash = AsyncServerCore(
            [other],
            llm_url="http://127.0.0.1:9/v1",
            options=KernelOptions(install_signal_handlers=False, port=taken),
        )
        with pytest.raises(ConfigError, match=r"api\.port"):
            async with clash:
                pass
    with pytest.raises(RuntimeError, match="not started"):
        _ = AsyncServerCore([root]).metrics


async def test_a_second_signal_cuts_the_grace_period_short(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    make_workspace(root, 2)
    with StubServer(StubOptions(latency_ms=60_000)) as slow:
        core = AsyncServerCore(
            [root], llm_url=slow.url, options=KernelOptions(grace_seconds=120, install_signal_handlers=True)
        )
        await core.start()
        main = asyncio.create_task(core.run_main_loop())
        try:
            await wait_for_events(core, lambda ev: sum(e.type == "todo.checkpoint" for e in ev) == 2)
            os.kill(os.getpid(), signal.SIGTERM)
            await wait_for_events(core, lambda ev: any(e.type == "server.draining" for e in ev))
            assert core.stopping
            os.kill(os.getpid(), signal.SIGINT)
            assert await asyncio.wait_for(main, 30) == 0
        finally:
            await core.handle_shutdown()
            assert await core.handle_shutdown() == []  # idempotent
    assert {s["status"] for s in load_status(root)["todos"].values()} == {"interrupted"}


async def test_cancelling_the_main_loop_interrupts_at_once(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    make_workspace(
        root, 1, todos=[Todo(id="t-0001", text='append a line "x" to file ../f0.txt', files=["../f0.txt"])]
    )
    with StubServer(StubOptions(latency_ms=60_000)) as slow:
        core = AsyncServerCore([root], llm_url=slow.url, options=KernelOptions(install_signal_handlers=False))
        await core.start()
        core.wake()
        main = asyncio.create_task(core.run_main_loop())
        await wait_for_events(core, lambda ev: any(e.type == "todo.failed" for e in ev))  # a bad path: failed
        main.cancel()
        with pytest.raises(asyncio.CancelledError):
            await main
        await core.handle_shutdown()
    assert load_status(root)["todos"]["t-0001"]["status"] == "failed"


async def test_until_idle_ends_with_the_error_when_a_todo_cannot_be_recorded(
    tmp_path: Path, stub_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chaos campaign finding: on a full disk `run --until-idle` exited 0 with todos left unrecorded."""
    import errno

    import core_async.status as status_module

    root = tmp_path / "ws"
    make_workspace(root, 3)
    real_write = status_module.atomic_write_text
    writes = 0

    def fills_up(path: Path, text: str, **kwargs: object) -> None:
        nonlocal writes
        writes += 1
        if writes > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, text, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(status_module, "atomic_write_text", fills_up)
    with pytest.raises(StateFileError, match=r"status\.json: cannot write: No space left on device"):
        await run_kernel(
            [root], llm_url=stub_url, until_idle=True, options=KernelOptions(install_signal_handlers=False)
        )
    monkeypatch.undo()
    done_before = [i for i, s in load_status(root)["todos"].items() if s["status"] == "done"]
    processed = await run_kernel(
        [root], llm_url=stub_url, until_idle=True, options=KernelOptions(install_signal_handlers=False)
    )
    assert processed == 3 - len(done_before) > 0
    assert {s["status"] for s in load_status(root)["todos"].values()} == {"done"}
    assert sorted(trailers(root)) == ["t-0001", "t-0002", "t-0003"]
