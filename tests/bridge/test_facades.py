"""Every component, every mode, both faces: the implementation the flags name is the one that runs.

Real implementations (legacy, the generated sync twin, core_async) are wrapped
in spies that log each call they receive; the test then checks the log.
Shadow must reach both implementations, the candidate never on the live
workspace for a write: reads of live state run both paths there, reads of
state others keep rewriting run both on one snapshot, writes run the served
path live and compare both implementations on copies of one snapshot (a git
commit compares the live result with the candidate's in a scratch clone).
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
from bridge._async import facades as async_facades
from bridge._sync import facades as sync_facades
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
    "todos": (l_todos.TodoStore, s_todos.SyncTodoJsonStore, a_todos.AsyncTodoJsonStore, sync_facades.SyncTodosFacade, async_facades.AsyncTodosFacade),
    "status": (l_status.StatusStore, s_status.SyncStatusJsonStore, a_status.AsyncStatusJsonStore, sync_facades.SyncStatusFacade, async_facades.AsyncStatusFacade),
    "checkpoints": (l_checkpoints.CheckpointStore, s_checkpoints.SyncCheckpointJsonStore, a_checkpoints.AsyncCheckpointJsonStore, sync_facades.SyncCheckpointsFacade, async_facades.AsyncCheckpointsFacade),
    "files": (l_files.Files, s_files.SyncWorkspaceFiles, a_files.AsyncWorkspaceFiles, sync_facades.SyncFilesFacade, async_facades.AsyncFilesFacade),
    "git": (
        lambda r: l_git.GitRepo(r, NAME, EMAIL),
        lambda r: s_git.SyncGitRepo(r, NAME, EMAIL),
        lambda r: a_git.AsyncGitRepo(r, NAME, EMAIL),
        sync_facades.SyncGitFacade,
        async_facades.AsyncGitFacade,
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
        rt.sync_dispatcher() if face == "sync" else rt.async_dispatcher(),
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
        await rt.drain()
        return value

    return asyncio.run(go(), debug=True)


COMPONENTS = list(FACTORIES)
FACES = ["sync", "async"]

# How shadow runs each component's read and write (see bridge/_async/dispatch.py).
READ_KIND = {"todos": "snapshot", "status": "snapshot", "checkpoints": "live", "files": "live", "git": "live"}
WRITE_KIND = {
    "todos": "same-base",
    "status": "same-base",
    "checkpoints": "same-base",
    "files": "same-base",
    "git": "live",
}


def _expected(kind: str, serve: str, other: str) -> set[tuple[str, str]]:
    return {
        "live read": {(serve, "real"), (other, "real")},
        "snapshot read": {(serve, "scratch"), (other, "scratch")},
        "same-base write": {(serve, "real"), (serve, "scratch"), (other, "scratch")},
        "live write": {(serve, "real"), (other, "scratch")},
    }[kind]


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
    assert {(impl, where) for impl, _, where in log} == _expected(
        f"{READ_KIND[component]} read", serve, other
    )
    log.clear()
    _invoke(face, runtime, lambda: write(facade))
    assert {(impl, where) for impl, _, where in log} == _expected(
        f"{WRITE_KIND[component]} write", serve, other
    )
    runtime.mismatches.close()
    assert runtime.counters[component].mismatches == 0
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


class _Chat:
    """A minimal LLM client over real loopback HTTP to the stub (sync)."""

    def __init__(self, url: str) -> None:
        import httpx

        self.client = httpx.Client(base_url=url, timeout=10)

    def chat(self, messages: list[dict[str, str]]) -> str:
        body = self.client.post(
            "/chat/completions", json={"model": "stub-coder", "messages": messages}
        ).json()
        return str(body["choices"][0]["message"]["content"])

    def close(self) -> None:
        self.client.close()


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize(
    ("mode", "serve"), [(Mode.LEGACY, None), (Mode.NEW, None), (Mode.SHADOW, "legacy"), (Mode.SHADOW, "new")]
)
def test_llm_routing(
    face: str, mode: Mode, serve: str | None, workspace: Path, runtime: BridgeRuntime
) -> None:
    import httpx

    import core_async.llm as a_llm
    import core_async.llm_transport as a_transport
    import core_sync.llm as s_llm
    import core_sync.llm_transport as s_transport
    import legacy.llm as l_llm
    from bridge._async.llm import AsyncLLMFacade, AsyncRecordingTransport, AsyncReplayTransport
    from bridge._sync.llm import SyncLLMFacade
    from bridge._sync.llm import SyncRecordingTransport as RecordingTransport
    from bridge._sync.llm import SyncReplayTransport as ReplayTransport
    from llm_stub import StubServer

    _set(runtime, "llm", mode, serve=serve)
    log: Log = []
    messages = [{"role": "user", "content": 'Task t-0001: append a line "x" to file a.txt'}]
    no_wait = {"backoff_base": 0.0, "backoff_max": 0.0, "max_retry_after": 0.0}
    with StubServer() as stub:
        args = {"base_url": stub.url, "api_key": "k", "model": "stub-coder", "timeout": 10, "max_retries": 1}
        legacy = Spy(
            l_llm.LLMClient(**args, transport=RecordingTransport(httpx.HTTPTransport())),
            "legacy",
            log,
            "real",
        )
        legacy_replay = Spy(
            l_llm.LLMClient(**args, **no_wait, transport=ReplayTransport()), "legacy", log, "replay"
        )
        if face == "sync":
            pools = [
                s_transport.SyncEndpointPool(wrap_transport=RecordingTransport),
                s_transport.SyncEndpointPool(wrap_transport=lambda _t: ReplayTransport()),
            ]
            new = Spy(s_llm.SyncLLMClient(**args, pool=pools[0]), "new", log, "real")
            new_replay = Spy(s_llm.SyncLLMClient(**args, **no_wait, pool=pools[1]), "new", log, "replay")
            facade = SyncLLMFacade(
                runtime.sync_dispatcher(), legacy, new, legacy_replay, new_replay, closing=pools
            )
            answer = facade.chat(messages)
            facade.close()
        else:

            async def go() -> str:
                apools = [
                    a_transport.AsyncEndpointPool(wrap_transport=AsyncRecordingTransport),
                    a_transport.AsyncEndpointPool(wrap_transport=lambda _t: AsyncReplayTransport()),
                ]
                anew = Spy(a_llm.AsyncLLMClient(**args, pool=apools[0]), "new", log, "real")
                anew_replay = Spy(
                    a_llm.AsyncLLMClient(**args, **no_wait, pool=apools[1]), "new", log, "replay"
                )
                afacade = AsyncLLMFacade(
                    runtime.async_dispatcher(), legacy, anew, legacy_replay, anew_replay, closing=apools
                )
                try:
                    return await afacade.chat(messages)
                finally:
                    await runtime.drain()
                    await afacade.aclose()

            answer = asyncio.run(go(), debug=True)
        chat_requests = stub.stats()["by_path"].get("/v1/chat/completions", 0)
    assert "<<<<<<< SEARCH" in answer
    chats = {(impl, where) for impl, method, where in log if method == "chat"}
    if mode is Mode.SHADOW:
        other = "new" if serve == "legacy" else "legacy"
        assert chats == {(serve, "real"), (other, "replay")}
        assert runtime.counters["llm"].mismatches == 0
    else:
        assert chats == {(mode.value, "real")}
    # One real request, whatever the mode: shadow replays the recording instead of asking again.
    assert chat_requests == 1


@pytest.mark.parametrize("mode", [Mode.LEGACY, Mode.NEW])
def test_config_is_routed(mode: Mode, workspace: Path, runtime: BridgeRuntime) -> None:
    from bridge.wiring import routed_sync_config

    (workspace / ".agent/config.json").write_text('{"poll_interval": 0.5}\n')
    _set(runtime, "config", mode)
    assert routed_sync_config(runtime, workspace).load().poll_interval == 0.5
    counters = runtime.counters["config"]
    assert (counters.legacy, counters.new) == ((1, 0) if mode is Mode.LEGACY else (0, 1))
