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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pydantic
import pytest
from psycopg.types.json import Jsonb

import core_async.checkpoints
import core_async.pg_state as apg
import core_async.status
import core_async.todos
import core_sync.checkpoints
import core_sync.pg_state as spg
import core_sync.status
import core_sync.todos
from codeagent.errors import StateFileError, TodoCancelled, WorkspaceViolation
from codeagent.models import (
    AgentState,
    Checkpoint,
    Operation,
    Stage,
    StatusFile,
    Todo,
    TodoState,
    TodoStatus,
)
from codeagent.state_v2 import CheckpointV2
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


# -- PostgreSQL only: the database, its refusals and the event log, for the async stores and their twin --------

PG_TWINS = ("pg-async", "pg-sync")
UNREACHABLE = "postgresql://agent:s3cret@127.0.0.1:1/nowhere"


@dataclass
class Pg:
    """One PostgreSQL twin: its module, an open database (through one sync face) and the DSN."""

    name: str
    mod: Any
    db: Driver
    dsn: str
    runner: asyncio.Runner

    @property
    def prefix(self) -> str:
        return "Async" if self.name == "pg-async" else "Sync"

    def driver(self, target: Any) -> Driver:
        return Driver(target, self.runner if self.name == "pg-async" else None)

    def store(self, kind: str, ident: str) -> Driver:
        """``kind`` is ``Todo``, ``Status`` or ``Checkpoint``."""
        return self.driver(getattr(self.mod, f"{self.prefix}Pg{kind}Store")(self.db.target, ident))

    def event_log(self) -> Driver:
        return self.driver(getattr(self.mod, f"{self.prefix}PgEventLog")(self.db.target))

    def register(self, root: Path) -> str:
        ident = uuid.uuid4().hex
        self.db.register(ident, root, root.name)
        return ident


@pytest.fixture(params=PG_TWINS)
def pg(request: pytest.FixtureRequest, shared_pg_dsn: str) -> Iterator[Pg]:
    pg_dsn = shared_pg_dsn
    with debug_runner() as runner:
        if request.param == "pg-async":
            adb = runner.run(apg.PgDatabase(pg_dsn, max_size=4).open())
            try:
                yield Pg(request.param, apg, Driver(adb, runner), pg_dsn, runner)
            finally:
                runner.run(adb.aclose())
        else:
            sdb = spg.PgDatabase(pg_dsn, max_size=4).open()
            try:
                yield Pg(request.param, spg, Driver(sdb, None), pg_dsn, runner)
            finally:
                sdb.close()


@pytest.mark.parametrize("mod", [apg, spg], ids=["async", "sync"])
def test_a_dsn_in_a_message_never_shows_its_password(mod: Any) -> None:
    shown = mod.redacted("postgresql://agent:s3cret@db.example:5433/fleet")
    assert "s3cret" not in shown and "password=***" in shown and "host=db.example" in shown
    assert sorted(mod.redacted("host=db user=agent").split()) == ["host=db", "user=agent"]  # nothing to hide
    assert mod.redacted("postgresql://[::1") == "(an invalid DSN)"
    error = mod.DatabaseUnavailable("password=s3cret host=db", "refused")
    assert (
        "s3cret" not in str(error)
        and str(error).endswith(": refused")
        and error.dsn == "password=*** host=db"
    )


@pytest.mark.parametrize("name", PG_TWINS)
def test_an_unreachable_database_is_one_clear_error(name: str) -> None:
    with debug_runner() as runner:
        if name == "pg-async":
            with pytest.raises(apg.DatabaseUnavailable) as caught:
                runner.run(apg.PgDatabase(UNREACHABLE).open())
        else:
            with pytest.raises(spg.DatabaseUnavailable) as caught:
                spg.PgDatabase(UNREACHABLE).open()
    message = str(caught.value)
    assert message.startswith("cannot reach the fleet's database ") and "\n" not in message
    assert "s3cret" not in message and "port=1" in message
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)


def test_a_workspace_is_registered_once_at_one_path(pg: Pg, tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    ident = pg.register(first)
    pg.db.register(ident, first, "one again")  # the same id and path: nothing happens
    other = pg.register(second)
    with pytest.raises(StateFileError, match=f"registered at {first}, not at {second}") as caught:
        pg.db.register(ident, second, "two")
    assert caught.value.field == "workspace.path"
    mine = [w for w in pg.db.workspaces() if w[0] in (ident, other)]  # the database is the module's
    assert mine == [(ident, str(first), "one"), (other, str(second), "two")]
    assert pg.db.workspace_path(other) == str(second)

    pg.db.forget(ident)
    with pytest.raises(pg.mod.UnknownWorkspace, match=f"no workspace {ident} is registered"):
        pg.db.workspace_path(ident)
    with pytest.raises(pg.mod.UnknownWorkspace):  # a forgotten workspace takes no more todos
        pg.store("Todo", ident).add("too late")
    with pytest.raises(pg.mod.UnknownWorkspace):
        pg.db.replace_state(ident, [], StatusFile(), [])
    assert [w[0] for w in pg.db.workspaces() if w[0] in (ident, other)] == [other]


def _sample_state() -> tuple[list[Todo], StatusFile, list[CheckpointV2]]:
    at = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
    todos = [
        Todo(id=i, text=f"todo {i}", files=["a.txt"], created_at=at) for i in ("t-0002", "t-0001", "x-9")
    ]
    status = StatusFile(
        agent=AgentState(state="stopped", current_todo=None, pid=7, loop="sync", processed=3, updated_at=at),
        todos={
            "t-0002": TodoState(status=TodoStatus.DONE, attempts=1, commit="c" * 40, updated_at=at),
            "t-0001": TodoState(status=TodoStatus.FAILED, attempts=3, error="boom", updated_at=at),
        },
        operations=[
            Operation(at=at, todo_id="x-9", action="cancel", source="api", previous=TodoStatus.PENDING)
        ],
    )
    checkpoints = [
        CheckpointV2.from_checkpoint(Checkpoint(todo_id="t-0001", stage=Stage.EDITED, updated_at=at), 7),
        CheckpointV2.from_checkpoint(
            Checkpoint(todo_id="t-0002", stage=Stage.ANSWERED, reply="r", updated_at=at), 1
        ),
    ]
    return todos, status, checkpoints


def test_the_migration_import_is_kept_as_given_and_forgotten_only_unchanged(pg: Pg, tmp_path: Path) -> None:
    ident = pg.register(tmp_path)
    todos_store, status_store = pg.store("Todo", ident), pg.store("Status", ident)
    checkpoints = pg.store("Checkpoint", ident)
    todos_store.add("replaced by the import")
    todos, status, records = _sample_state()
    pg.db.replace_state(ident, todos, status, records)

    assert todos_store.load() == todos  # ids and order as given, not renumbered
    assert status_store.load() == status
    assert checkpoints.list_ids() == ["t-0001", "t-0002"]
    assert checkpoints.load_versioned("t-0001").seq == 7  # sequence numbers kept
    checkpoints.save(Checkpoint(todo_id="t-0001", stage=Stage.COMMITTED))
    assert checkpoints.load_versioned("t-0001").seq == 8

    # The state moved on (a loop saved a checkpoint): the migration back must not remove it.
    assert pg.db.forget_unchanged(ident, todos, status, records) is False
    assert pg.db.workspace_path(ident) == str(tmp_path)
    now = [checkpoints.load_versioned(i) for i in checkpoints.list_ids()]
    assert pg.db.forget_unchanged(ident, todos_store.load(), status_store.load(), now[::-1]) is True
    with pytest.raises(pg.mod.UnknownWorkspace):
        pg.db.workspace_path(ident)
    assert todos_store.load() == [] and checkpoints.list_ids() == []  # the rows went with it


def test_each_store_replaces_its_part_alone(pg: Pg, tmp_path: Path) -> None:
    ident = pg.register(tmp_path)
    todos, status, records = _sample_state()
    todos_store, status_store = pg.store("Todo", ident), pg.store("Status", ident)
    checkpoints = pg.store("Checkpoint", ident)
    todos_store.add("first")
    status_store.set_todo("t-0001", TodoState(status=TodoStatus.RUNNING, attempts=1))
    todos_store.replace_all(todos)
    status_store.replace_all(status)
    for record in records:
        checkpoints.put_versioned(record)
    checkpoints.put_versioned(records[0].model_copy(update={"seq": 9}))  # replaced, seq as given
    assert [t.id for t in todos_store.load()] == ["t-0002", "t-0001", "x-9"]
    assert status_store.load() == status
    assert checkpoints.load_versioned("t-0001").seq == 9
    assert checkpoints.load("t-0002").reply == "r"
    assert todos_store.add("after the import").id == "t-0004"  # the file store's rule: count + 1, free
    status_store.replace_all(StatusFile())
    assert status_store.load() == StatusFile(agent=status_store.load().agent)
    assert status_store.load().todos == {} and status_store.load().operations == []


@pytest.mark.parametrize(
    ("table", "doc", "read"),
    [
        ("codeagent_todos", {"id": "t-0001"}, lambda pg, ident: pg.store("Todo", ident).load()),
        (
            "codeagent_todos",
            {"id": "t-0001", "text": ""},
            lambda pg, ident: pg.store("Todo", ident).get("t-0001"),
        ),
        (
            "codeagent_checkpoints",
            {"stage": "nowhere"},
            lambda pg, ident: pg.store("Checkpoint", ident).load("t-0001"),
        ),
        ("codeagent_todo_states", {"status": "lost"}, lambda pg, ident: pg.store("Status", ident).load()),
    ],
)
def test_a_row_that_does_not_validate_is_a_state_error(
    pg: Pg, tmp_path: Path, table: str, doc: dict[str, Any], read: Any
) -> None:
    ident = pg.register(tmp_path)
    key = "id" if table == "codeagent_todos" else "todo_id"
    columns = {"workspace": ident, key: "t-0001", "doc": Jsonb(doc)}
    if table == "codeagent_todos":
        columns["position"] = 0
    if table == "codeagent_checkpoints":
        columns["seq"] = 1
    with psycopg.connect(pg.dsn) as conn:
        conn.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})",
            list(columns.values()),
        )
    with pytest.raises(StateFileError, match=f"^{table}: invalid row: "):
        read(pg, ident)


def test_an_operation_that_changes_nothing_records_nothing(pg: Pg, tmp_path: Path) -> None:
    ident = pg.register(tmp_path)
    status = pg.store("Status", ident)
    status.set_todo("t-0001", TodoState(status=TodoStatus.DONE, attempts=1, commit="a" * 40))
    refused = status.operate("retry", ["t-0001"], source="cli", loop_running=False)
    assert refused[0].refused is not None and not refused[0].changed
    assert status.load().operations == []
    mixed = status.operate("cancel", ["t-0001", "t-0002"], source="cli", loop_running=False)
    assert [(c.todo_id, c.changed) for c in mixed] == [("t-0001", False), ("t-0002", True)]
    doc = status.load()
    assert (
        doc.todos["t-0001"].status is TodoStatus.DONE and doc.todos["t-0002"].status is TodoStatus.CANCELLED
    )
    assert [(o.todo_id, o.action) for o in doc.operations] == [("t-0002", "cancel")]


def test_the_event_log_numbers_stores_and_announces(pg: Pg) -> None:
    log = pg.event_log()
    start = max([0, *(e[0] for e in log.since(0))])  # the module's database: others may have written
    assert log.append([]) == [] and log.since(start) == []
    with psycopg.connect(pg.dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {pg.mod.EVENTS_CHANNEL}")
        ids = log.append(
            [
                ("w1", "todo.started", "2024-01-01T00:00:00Z", {"todo": "t-0001"}),
                (None, "todo.added", "2024-01-01T00:00:01Z", {"todo": "t-0002", "n": [1, 2]}),
                ("w1", "todo.done", "2024-01-01T00:00:02Z", {}),
            ]
        )
        payloads = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert ids == sorted(ids) and ids == list(range(ids[0], ids[0] + 3))
    assert payloads == [str(ids[-1])]  # one announcement per batch, naming its newest event
    assert log.since(start) == [
        (ids[0], "w1", "todo.started", "2024-01-01T00:00:00Z", {"todo": "t-0001"}),
        (ids[1], None, "todo.added", "2024-01-01T00:00:01Z", {"todo": "t-0002", "n": [1, 2]}),
        (ids[2], "w1", "todo.done", "2024-01-01T00:00:02Z", {}),
    ]
    assert [e[0] for e in log.since(ids[0])] == ids[1:]
    assert [e[0] for e in log.since(start, limit=2)] == ids[:2]
    assert log.since(ids[-1]) == []
