"""One benchmark per component operation, under each caller (see conftest.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from benchmarks.micro.conftest import VARIANTS, Caller
from codeagent.models import Checkpoint, Stage, Todo, TodoFile, TodoState, TodoStatus, dump_json

WHEN = datetime(2026, 1, 1, tzinfo=UTC)
TODOS_DOC = dump_json(
    TodoFile(
        todos=[
            Todo(id=f"t-{n:04d}", text=f"task {n}", files=["a.txt"], created_at=WHEN) for n in range(1, 51)
        ]
    )
)
TEXT_4K = ("0123456789abcdef" * 16 + "\n") * 15


def _state(root: Path) -> Path:
    (root / ".agent").mkdir(parents=True, exist_ok=True)
    return root


def test_todos_load(benchmark: Any, caller: Caller, tmp_path: Path) -> None:
    (_state(tmp_path) / ".agent/todos.json").write_text(TODOS_DOC)
    store = caller.make("todos", tmp_path)
    benchmark(caller.bind(store.load))


def test_todos_add(benchmark: Any, caller: Caller, tmp_path: Path) -> None:
    path = _state(tmp_path) / ".agent/todos.json"
    store = caller.make("todos", tmp_path)
    add = caller.bind(store.add, "one more task", ["b.txt"])

    def fresh_list() -> None:
        path.write_text(TODOS_DOC)

    benchmark.pedantic(add, setup=fresh_list, rounds=150, warmup_rounds=5)


def test_status_set_todo(benchmark: Any, caller: Caller, tmp_path: Path) -> None:
    store = caller.make("status", _state(tmp_path))
    benchmark(caller.bind(store.set_todo, "t-0001", TodoState(status=TodoStatus.DONE, commit="abc")))


def test_status_load(benchmark: Any, caller: Caller, tmp_path: Path) -> None:
    store = caller.make("status", _state(tmp_path))
    for n in range(30):
        caller.bind(store.set_todo, f"t-{n:04d}", TodoState())()
    benchmark(caller.bind(store.load))


def test_checkpoint_save(benchmark: Any, caller: Caller, tmp_path: Path) -> None:
    store = caller.make("checkpoints", tmp_path)
    checkpoint = Checkpoint(
        todo_id="t-0001", stage=Stage.ANSWERED, reply="r" * 500, writes={"a.txt": TEXT_4K}
    )
    benchmark(caller.bind(store.save, checkpoint))


def test_checkpoint_load(benchmark: Any, caller: Caller, tmp_path: Path) -> None:
    store = caller.make("checkpoints", tmp_path)
    checkpoint = Checkpoint(
        todo_id="t-0001", stage=Stage.ANSWERED, reply="r" * 500, writes={"a.txt": TEXT_4K}
    )
    caller.bind(store.save, checkpoint)()
    benchmark(caller.bind(store.load, "t-0001"))


def test_file_read(benchmark: Any, caller: Caller, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text(TEXT_4K)
    files = caller.make("files", tmp_path)
    benchmark(caller.bind(files.read, "a.txt"))


def test_file_write(benchmark: Any, caller: Caller, tmp_path: Path) -> None:
    files = caller.make("files", tmp_path)
    benchmark(caller.bind(files.write, "a.txt", TEXT_4K))


def test_file_read_many_20(benchmark: Any, caller: Caller, tmp_path: Path) -> None:
    names = [f"src/f{n}.py" for n in range(20)]
    (tmp_path / "src").mkdir()
    for name in names:
        (tmp_path / name).write_text(TEXT_4K)
    files = caller.make("files", tmp_path)
    benchmark(caller.bind(files.read_many, names))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q", "-b", "main", str(tmp_path)], check=True)
    for n in range(20):
        subprocess.run(
            [
                "git",
                "-c",
                "user.name=b",
                "-c",
                "user.email=b@b",
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                f"c{n}\n\nTodo-Id: t-{n:04d}",
            ],
            cwd=tmp_path,
            check=True,
        )
    return tmp_path


def test_git_find_commit(benchmark: Any, caller: Caller, repo: Path) -> None:
    git = caller.make("git", repo, "Code Agent", "codeagent@localhost")
    find = caller.bind(git.find_commit, "t-0003")
    assert find() is not None
    benchmark(find)


def test_git_commit(benchmark: Any, caller: Caller, repo: Path) -> None:
    git = caller.make("git", repo, "Code Agent", "codeagent@localhost")
    benchmark.pedantic(caller.bind(git.commit, "bench\n\nTodo-Id: t-9999\n", []), rounds=40, warmup_rounds=2)


@pytest.fixture(scope="module")
def stub_url() -> Iterator[str]:
    from llm_stub import StubOptions, start_stub_process, stop_stub_process

    process, url = start_stub_process(StubOptions(latency_ms=0, seed=0))
    try:
        yield url
    finally:
        stop_stub_process(process)


# Not through async_to_sync: it runs each call on a new event loop, and a pooled client cannot cross loops.
@pytest.mark.parametrize("caller", [v for v in VARIANTS if v != "async_to_sync"], indirect=True)
def test_llm_chat(benchmark: Any, caller: Caller, stub_url: str) -> None:
    llm = caller.make("llm", stub_url, "sk", "stub-coder", 10.0, 0)
    chat = caller.bind(llm.chat, [{"role": "user", "content": 'Task t-1: append a line "x" to file a.txt'}])
    chat()
    try:
        benchmark(chat)
    finally:
        if caller.variant == "core_async":
            caller.runner.run(llm.aclose())
        else:
            llm.close()
