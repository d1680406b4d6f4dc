"""Test support shared by the parity and core_async suites: implementations, a sync driver, servers.

:class:`Impl` builds one component of one implementation (``legacy``,
``core_sync`` or ``core_async``) and wraps it in :class:`Driver`, a uniform
sync face: the async implementation's coroutine methods run on the test's own
debug-mode event loop (an :class:`asyncio.Runner`). So each behaviour is
written once and checked against all three.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import core_async.agent
import core_async.checkpoints
import core_async.config
import core_async.files
import core_async.git
import core_async.llm
import core_async.status
import core_async.todos
import core_sync.agent
import core_sync.checkpoints
import core_sync.config
import core_sync.files
import core_sync.git
import core_sync.llm
import core_sync.status
import core_sync.todos
import legacy.agent
import legacy.checkpoints
import legacy.config
import legacy.files
import legacy.git
import legacy.llm
import legacy.status
import legacy.todos
from codeagent.config import AgentConfig
from tests.conftest import SLOW_CALLBACK_SECONDS  # one threshold for every loop the tests make

IMPLS = ("legacy", "core_sync", "core_async")

FAST_RETRY = {"backoff_base": 0.01, "backoff_max": 0.05}

_CLASSES: dict[str, dict[str, Any]] = {
    "legacy": {
        "todos": legacy.todos.TodoStore,
        "status": legacy.status.StatusStore,
        "checkpoints": legacy.checkpoints.CheckpointStore,
        "files": legacy.files.Files,
        "git": legacy.git.GitRepo,
        "llm": legacy.llm.LLMClient,
        "agent": legacy.agent.LegacyAgent,
        "load_config": legacy.config.load_config,
    },
    "core_sync": {
        "todos": core_sync.todos.SyncTodoJsonStore,
        "status": core_sync.status.SyncStatusJsonStore,
        "checkpoints": core_sync.checkpoints.SyncCheckpointJsonStore,
        "files": core_sync.files.SyncWorkspaceFiles,
        "git": core_sync.git.SyncGitRepo,
        "llm": core_sync.llm.SyncLLMClient,
        "agent": core_sync.agent.SyncAgent,
        "load_config": core_sync.config.load_config,
    },
    "core_async": {
        "todos": core_async.todos.AsyncTodoJsonStore,
        "status": core_async.status.AsyncStatusJsonStore,
        "checkpoints": core_async.checkpoints.AsyncCheckpointJsonStore,
        "files": core_async.files.AsyncWorkspaceFiles,
        "git": core_async.git.AsyncGitRepo,
        "llm": core_async.llm.AsyncLLMClient,
        "agent": core_async.agent.AsyncAgent,
        "load_config": core_async.config.load_config,
    },
}


def debug_runner() -> asyncio.Runner:
    """A runner whose loop is in debug mode with the project's slow-callback threshold."""
    runner = asyncio.Runner(debug=True)
    runner.get_loop().slow_callback_duration = SLOW_CALLBACK_SECONDS
    return runner


class Driver:
    """A sync face over a component: coroutine methods run on ``runner``, the rest pass through."""

    def __init__(self, target: Any, runner: asyncio.Runner | None) -> None:
        self._target = target
        self._runner = runner

    @property
    def target(self) -> Any:
        return self._target

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        runner = self._runner
        if runner is not None and inspect.iscoroutinefunction(value):

            def call(*args: Any, **kwargs: Any) -> Any:
                return runner.run(value(*args, **kwargs))

            return call
        return value


@dataclass
class Impl:
    """One implementation under test, able to build each of its components."""

    name: str
    runner: asyncio.Runner
    http_version: str = "auto"

    @property
    def is_async(self) -> bool:
        return self.name == "core_async"

    def run(self, value: Any) -> Any:
        """The value of a call: awaited on the runner when it is a coroutine."""
        return self.runner.run(value) if inspect.iscoroutine(value) else value

    def wrap(self, component: Any) -> Driver:
        return Driver(component, self.runner if self.is_async else None)

    def cls(self, kind: str) -> Any:
        return _CLASSES[self.name][kind]

    def todos(self, root: Path) -> Driver:
        return self.wrap(self.cls("todos")(root))

    def status(self, root: Path) -> Driver:
        return self.wrap(self.cls("status")(root))

    def checkpoints(self, root: Path) -> Driver:
        return self.wrap(self.cls("checkpoints")(root))

    def files(self, root: Path, max_bytes: int = 1_000_000) -> Driver:
        return self.wrap(self.cls("files")(root, max_bytes))

    def git(self, root: Path) -> Driver:
        return self.wrap(self.cls("git")(root, "Code Agent", "codeagent@localhost"))

    def llm(self, url: str, *, timeout: float = 5.0, max_retries: int = 3, **extra: Any) -> Driver:
        kwargs: dict[str, Any] = {**FAST_RETRY, **extra}
        if self.name != "legacy":
            kwargs.setdefault("http_version", self.http_version)
        return self.wrap(self.cls("llm")(url, "sk-test", "stub-coder", timeout, max_retries, 0.0, **kwargs))

    def load_config(self, root: Path) -> AgentConfig:
        config: AgentConfig = self.run(self.cls("load_config")(root))
        return config

    def agent(self, root: Path, url: str, config: AgentConfig | None = None, **llm_extra: Any) -> Driver:
        config = config or self.load_config(root)
        llm = self.cls("llm")(
            url,
            "sk-test",
            "stub-coder",
            config.llm.timeout,
            config.llm.max_retries,
            0.0,
            **FAST_RETRY,
            **llm_extra,
        )
        return self.wrap(
            self.cls("agent")(
                root,
                config,
                self.cls("todos")(root),
                self.cls("status")(root),
                self.cls("checkpoints")(root),
                self.cls("files")(root, config.max_file_bytes),
                self.cls("git")(root, config.git.author_name, config.git.author_email),
                llm,
            )
        )

    def close_llm(self, llm: Driver) -> None:
        """Close an LLM client of any implementation."""
        if self.is_async:
            self.runner.run(llm.target.aclose())
        else:
            llm.target.close()


def git(root: Path, *args: str) -> str:
    """Run git in ``root`` for a test's own inspection."""
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True)
    return done.stdout


def make_repo(root: Path, files: dict[str, str] | None = None) -> Path:
    """A git repository with one initial commit holding ``files``."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    for name, text in (files or {"README.md": "hello\n"}).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    git(root, "add", "-A")
    git(
        root,
        "-c",
        "user.name=T",
        "-c",
        "user.email=t@t",
        "-c",
        "commit.gpgsign=false",
        "commit",
        "-q",
        "-m",
        "init",
    )
    return root


def chat_messages(
    text: str = 'append a line "x" to file notes.txt', todo_id: str = "t-0001"
) -> list[dict[str, str]]:
    """A user message the stub's rules answer."""
    return [{"role": "user", "content": f"Task {todo_id}: {text}\n"}]


class _HTTP1Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    reply: Callable[[dict[str, Any]], str] = staticmethod(lambda payload: "hello over HTTP/1.1")

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        payload = json.loads(self.rfile.read(length) or b"{}")
        body = json.dumps(
            {"choices": [{"index": 0, "message": {"role": "assistant", "content": self.reply(payload)}}]}
        )
        data = body.encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.send_response(404)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class HTTP1OnlyServer:
    """A tiny OpenAI-style server that speaks HTTP/1.1 only (the stdlib's), on loopback."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _HTTP1Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HTTP1OnlyServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


def fresh_stub(stub: Any) -> Any:
    """``stub`` with no faults, no latency and zeroed counters, once the last test's requests are over.

    A request a previous test left hanging is counted when it ends (its client closing the
    connection); resetting before that would let it land in the next test's counters.
    """
    deadline = time.monotonic() + 10
    while stub.stats(recent=0)["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.02)
    stub.reset()
    stub.set_options(latency_ms=0, fail_rate=0.0, retry_after_s=0.2, hang_s=30)
    return stub


def stub_server_fixture() -> Iterator[Any]:
    """One stub LLM for a module; reset (no faults, no latency, counters zeroed) before each use."""
    from llm_stub import StubOptions, StubServer

    with StubServer(StubOptions(latency_ms=0, seed=0, retry_after_s=0.2, hang_s=30)) as stub:
        yield stub
