"""The state stores over files and over PostgreSQL, async and generated sync: one test source, same answers.

Each behaviour below runs against the file stores of ``core_async`` and
``core_sync`` and the PostgreSQL stores of ``core_async/pg_state.py`` and its
generated twin, through one sync face (the async ones on the test's own
debug-mode loop). A loop cannot tell them apart.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import pytest

import core_async.checkpoints
import core_async.pg_state as apg
import core_async.status
import core_async.todos
import core_sync.checkpoints
import core_sync.pg_state as spg
import core_sync.status
import core_sync.todos
from codeagent.errors import TodoCancelled, WorkspaceViolation
from codeagent.models import AgentState, Checkpoint, Stage, TodoState, TodoStatus
from tests.parity._support import Driver, debug_runner

BACKENDS = ("files-async", "files-sync", "pg-async", "pg-sync")


@dataclass
class Backend:
    name: str
    todos: Driver
    status: Driver
    checkpoints: Driver
    runner: asyncio.Runner

    @property
    def is_async(self) -> bool:
        return self.name.endswith("async")

    def run(self, value: Any) -> Any:
        return self.runner.run(value) if asyncio.iscoroutine(value) else value


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    name: str = request.param
    with debug_runner() as runner:
        loop_runner = runner if name.endswith("async") else None
        if name == "files-async":
            stores: tuple[Any, ...] = (
                core_async.todos.AsyncTodoJsonStore(tmp_path),
                core_async.status.AsyncStatusJsonStore(tmp_path),
                core_async.checkpoints.AsyncCheckpointJsonStore(tmp_path),
            )
            yield Backend(name, *(Driver(s, loop_runner) for s in stores), runner)
            return
        if name == "files-sync":
            stores = (
                core_sync.todos.SyncTodoJsonStore(tmp_path),
                core_sync.status.SyncStatusJsonStore(tmp_path),
                core_sync.checkpoints.SyncCheckpointJsonStore(tmp_path),
            )
            yield Backend(name, *(Driver(s, None) for s in stores), runner)
            return
        dsn = request.getfixturevalue("pg_dsn")
        ident = uuid.uuid4().hex
        if name == "pg-async":
            db: Any = runner.run(apg.PgDatabase(dsn).open())
            runner.run(db.register(ident, tmp_path, tmp_path.name))
            stores = (
                apg.AsyncPgTodoStore(db, ident),
                apg.AsyncPgStatusStore(db, ident),
                apg.AsyncPgCheckpointStore(db, ident),
            )
            try:
                yield Backend(name, *(Driver(s, loop_runner) for s in stores), runner)
            finally:
                runner.run(db.aclose())
            return
        sdb = spg.PgDatabase(dsn).open()
        sdb.register(ident, tmp_path, tmp_path.name)
        stores = (
            spg.SyncPgTodoStore(sdb, ident),
            spg.SyncPgStatusStore(sdb, ident),
            spg.SyncPgCheckpointStore(sdb, ident),
        )
        try:
            yield Backend(name, *(Driver(s, None) for s in stores), runner)
        finally:
            sdb.close()


def test_todos_get_the_same_ids_in_the_same_order(backend: Backend) -> None:
    assert backend.todos.load() == []
    assert backend.todos.get("t-0001") is None
    first = backend.todos.add("do one thing", ["a.txt", "./src//b.py"])
    second = backend.todos.add("do another")
    assert (first.id, second.id) == ("t-0001", "t-0002")
    assert first.files == ["a.txt", "src/b.py"]
    assert [t.id for t in backend.todos.load()] == ["t-0001", "t-0002"]
    assert backend.todos.get("t-0002") == second


def test_bad_todos_are_refused_and_nothing_is_stored(backend: Backend) -> None:
    with pytest.raises(pydantic.ValidationError):
        backend.todos.add("")
    for bad in ("../x", "/etc/passwd", ".git/config", ".agent/status.json"):
        with pytest.raises(WorkspaceViolation):
            backend.todos.add("work", [bad])
    assert backend.todos.load() == []


def test_concurrent_additions_are_not_lost(backend: Backend) -> None:
    count = 20
    if backend.is_async:

        async def add_all() -> list[Any]:
            store = backend.todos.target
            return list(await asyncio.gather(*(store.add(f"todo {i}") for i in range(count))))

        added = backend.run(add_all())
    else:
        added = []
        lock = threading.Lock()

        def add(i: int) -> None:
            todo = backend.todos.add(f"todo {i}")
            with lock:
                added.append(todo)

        threads = [threading.Thread(target=add, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    ids = sorted(t.id for t in backend.todos.load())
    assert ids == sorted(t.id for t in added) == [f"t-{i:04d}" for i in range(1, count + 1)]


def test_status_records_todos_and_the_agent(backend: Backend) -> None:
    assert backend.status.load().todos == {}
    running = TodoState(status=TodoStatus.RUNNING, attempts=1)
    backend.status.set_todo("t-0001", running)
    backend.status.set_todo("t-0002", TodoState(status=TodoStatus.DONE, attempts=2, commit="abc"))
    backend.status.set_agent(AgentState(state="working", current_todo="t-0001", pid=42, loop="async"))
    doc = backend.status.load()
    assert doc.todos["t-0001"] == running
    assert doc.todos["t-0002"].commit == "abc"
    assert doc.agent is not None and (doc.agent.state, doc.agent.current_todo, doc.agent.pid) == (
        "working",
        "t-0001",
        42,
    )


def test_a_cancelled_todo_is_never_started(backend: Backend) -> None:
    backend.todos.add("never run me")
    changes = backend.status.operate("cancel", ["t-0001"], source="cli", loop_running=False)
    assert [(c.todo_id, c.after.value, c.refused) for c in changes] == [("t-0001", "cancelled", None)]
    with pytest.raises(TodoCancelled):
        backend.status.set_todo("t-0001", TodoState(status=TodoStatus.RUNNING, attempts=1))
    assert backend.status.load().todos["t-0001"].status is TodoStatus.CANCELLED


def test_retry_and_cancel_are_recorded_as_operations(backend: Backend) -> None:
    backend.status.set_todo("t-0001", TodoState(status=TodoStatus.FAILED, attempts=3, error="boom"))
    backend.status.set_todo("t-0002", TodoState(status=TodoStatus.RUNNING, attempts=1))
    retried = backend.status.operate("retry", ["t-0001"], source="api", loop_running=True)
    refused = backend.status.operate("cancel", ["t-0002"], source="api", loop_running=True)
    assert (retried[0].after.value, retried[0].refused) == ("pending", None)
    assert refused[0].refused is not None and not refused[0].changed
    doc = backend.status.load()
    assert (doc.todos["t-0001"].status, doc.todos["t-0001"].attempts) == (TodoStatus.PENDING, 3)
    assert [(o.todo_id, o.action, o.previous.value, o.error) for o in doc.operations] == [
        ("t-0001", "retry", "failed", "boom")
    ]


def test_checkpoints_are_versioned_and_listed(backend: Backend) -> None:
    assert backend.checkpoints.load("t-0001") is None
    assert backend.checkpoints.load("../evil") is None
    backend.checkpoints.save(Checkpoint(todo_id="t-0002", stage=Stage.STARTED))
    backend.checkpoints.save(Checkpoint(todo_id="t-0001", stage=Stage.STARTED))
    answered = Checkpoint(todo_id="t-0001", stage=Stage.ANSWERED, reply="r", writes={"a.txt": "x\n"})
    backend.checkpoints.save(answered)
    loaded = backend.checkpoints.load("t-0001")
    assert (loaded.stage, loaded.reply, loaded.writes) == (Stage.ANSWERED, "r", {"a.txt": "x\n"})
    assert backend.checkpoints.load_versioned("t-0001").seq == 2
    assert backend.checkpoints.list_ids() == ["t-0001", "t-0002"]
    with pytest.raises(ValueError, match="invalid todo id"):
        backend.checkpoints.save(Checkpoint.model_construct(todo_id="../x", stage=Stage.STARTED))
