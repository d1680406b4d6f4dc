"""The workspace's state in PostgreSQL: todos, status, checkpoints and events, behind the store protocols.

For deployments whose workspaces are driven by workers on several hosts
(``codeagent worker --queue DSN``): any node then reads and writes the same
state. Each store answers exactly as its file counterpart does (same models,
same ids, same refusals; the parity suite runs one test source over both), so
the loops cannot tell them apart. Files on disk stay the embedded default.

One database holds many workspaces, each registered once with its path and an
id (:class:`PgDatabase`). Every change is one transaction; the status of a
workspace is serialised against an operator's retry or cancel by a lock on the
workspace's row (``FOR SHARE`` for a todo's update, ``FOR UPDATE`` for the
operation), as the file stores use one file lock.

Written once, async (psycopg 3); ``core_sync/pg_state.py`` is generated from it
(the migration moves state with the sync twin).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from codeagent.errors import AgentError, StateFileError, TodoCancelled
from codeagent.models import (
    TODO_ID_RE,
    AgentState,
    Checkpoint,
    Operation,
    OperatorAction,
    StatusFile,
    Todo,
    TodoChange,
    TodoState,
    apply_operation,
    new_todo_id,
    refuses_start,
)
from codeagent.paths import check_relative_path
from codeagent.state_v2 import CheckpointV2

SCHEMA = """
CREATE TABLE IF NOT EXISTS codeagent_workspaces (
    id text PRIMARY KEY,
    path text NOT NULL UNIQUE,
    label text NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS codeagent_todos (
    workspace text NOT NULL REFERENCES codeagent_workspaces (id) ON DELETE CASCADE,
    position integer NOT NULL,
    id text NOT NULL,
    doc jsonb NOT NULL,
    PRIMARY KEY (workspace, id)
);
CREATE TABLE IF NOT EXISTS codeagent_todo_states (
    workspace text NOT NULL REFERENCES codeagent_workspaces (id) ON DELETE CASCADE,
    todo_id text NOT NULL,
    doc jsonb NOT NULL,
    PRIMARY KEY (workspace, todo_id)
);
CREATE TABLE IF NOT EXISTS codeagent_agent_states (
    workspace text PRIMARY KEY REFERENCES codeagent_workspaces (id) ON DELETE CASCADE,
    doc jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS codeagent_operations (
    workspace text NOT NULL REFERENCES codeagent_workspaces (id) ON DELETE CASCADE,
    position bigserial NOT NULL,
    doc jsonb NOT NULL,
    PRIMARY KEY (workspace, position)
);
CREATE TABLE IF NOT EXISTS codeagent_checkpoints (
    workspace text NOT NULL REFERENCES codeagent_workspaces (id) ON DELETE CASCADE,
    todo_id text NOT NULL,
    seq integer NOT NULL,
    doc jsonb NOT NULL,
    PRIMARY KEY (workspace, todo_id)
);
CREATE TABLE IF NOT EXISTS codeagent_events (
    id bigserial PRIMARY KEY,
    workspace text,
    type text NOT NULL,
    time text NOT NULL,
    data jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS codeagent_events_workspace ON codeagent_events (workspace, id);
"""

#: The channel ``NOTIFY`` announces new events on (the payload is the event's id).
EVENTS_CHANNEL = "codeagent_events"
#: Taken while the schema is created, so that workers starting together do not race.
_SCHEMA_LOCK = 72_410_001


# An event's data is informative: a value JSON has no type for (a path, a set) is stored as its text.
_event_dumps = partial(json.dumps, default=str)


class DatabaseUnavailable(AgentError):
    """The fleet's database cannot be reached (or refuses us)."""

    def __init__(self, dsn: str, reason: str) -> None:
        self.dsn = redacted(dsn)
        super().__init__(f"cannot reach the fleet's database {self.dsn}: {reason}")


def redacted(dsn: str) -> str:
    """A DSN fit for a message: the password, if any, replaced."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(an invalid DSN)"
    if params.get("password"):
        params["password"] = "***"
    return make_conninfo("", **params)


class UnknownWorkspace(StateFileError):
    """A workspace the database has no row for."""

    def __init__(self, what: str) -> None:
        super().__init__("postgresql", f"no workspace {what} is registered", field="workspace")


class PgDatabase:
    """A connection pool to the fleet's database, and its workspaces."""

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 10) -> None:
        self.dsn = dsn
        self.pool = AsyncConnectionPool(dsn, min_size=min_size, max_size=max_size, open=False)

    async def open(self) -> PgDatabase:
        """Connect, and create the tables when they are missing (:class:`DatabaseUnavailable` when it cannot)."""
        try:
            probe = await AsyncConnection.connect(self.dsn, connect_timeout=5)
        except psycopg.Error as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            raise DatabaseUnavailable(self.dsn, lines[0] if lines else type(exc).__name__) from exc
        await probe.close()
        await self.pool.open(wait=True)
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            await conn.execute(SCHEMA)
        return self

    async def aclose(self) -> None:
        """Close every connection."""
        await self.pool.close()

    async def register(self, workspace_id: str, path: Path, label: str) -> None:
        """Record a workspace (idempotent for the same id and path; a second path for an id is refused)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO codeagent_workspaces (id, path, label) VALUES (%s, %s, %s)"
                " ON CONFLICT (id) DO NOTHING RETURNING id",
                (workspace_id, str(path), label),
            )
            if await cur.fetchone() is None:
                cur = await conn.execute(
                    "SELECT path FROM codeagent_workspaces WHERE id = %s", (workspace_id,)
                )
                row = await cur.fetchone()
                if row is not None and row[0] != str(path):
                    raise StateFileError(
                        "postgresql",
                        f"workspace {workspace_id} is registered at {row[0]}, not at {path}",
                        field="workspace.path",
                    )

    async def workspaces(self) -> list[tuple[str, str, str]]:
        """``(id, path, label)`` of every registered workspace, in registration order."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, path, label FROM codeagent_workspaces ORDER BY registered_at, id"
            )
            return [(str(r[0]), str(r[1]), str(r[2])) for r in await cur.fetchall()]

    async def workspace_path(self, workspace_id: str) -> str:
        """Where a workspace is checked out (every host mounts it at this path)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT path FROM codeagent_workspaces WHERE id = %s", (workspace_id,))
            row = await cur.fetchone()
        if row is None:
            raise UnknownWorkspace(workspace_id)
        return str(row[0])

    async def forget(self, workspace_id: str) -> None:
        """Remove a workspace and all its state (the migration back to files does this last)."""
        async with self.pool.connection() as conn:
            await conn.execute("DELETE FROM codeagent_workspaces WHERE id = %s", (workspace_id,))

    async def replace_state(
        self,
        workspace_id: str,
        todos: Sequence[Todo],
        status: StatusFile,
        checkpoints: Sequence[CheckpointV2],
    ) -> None:
        """Make a workspace's todos, status and checkpoints exactly these, in one transaction.

        The migration's import: ids, order, timestamps and sequence numbers are
        kept as given. A crash leaves the state as it was before, or all of it new.
        """
        async with self.pool.connection() as conn, conn.transaction():
            await _lock_workspace(conn, workspace_id, "UPDATE")
            for table in _STATE_TABLES:
                await conn.execute(f"DELETE FROM {table} WHERE workspace = %s", (workspace_id,))
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO codeagent_todos (workspace, position, id, doc) VALUES (%s, %s, %s, %s)",
                    [
                        (workspace_id, position, todo.id, Jsonb(todo.model_dump(mode="json")))
                        for position, todo in enumerate(todos)
                    ],
                )
                await cur.executemany(
                    "INSERT INTO codeagent_checkpoints (workspace, todo_id, seq, doc) VALUES (%s, %s, %s, %s)",
                    [
                        (workspace_id, record.todo_id, record.seq, Jsonb(record.model_dump(mode="json")))
                        for record in checkpoints
                    ],
                )
            await _write_status(conn, workspace_id, status)

    async def forget_unchanged(
        self,
        workspace_id: str,
        todos: Sequence[Todo],
        status: StatusFile,
        checkpoints: Sequence[CheckpointV2],
    ) -> bool:
        """Remove a workspace only while its state is exactly this; ``False`` (nothing removed) otherwise.

        The migration back to files ends with it: the state is compared and
        deleted under the workspace's row lock, so an operator's retry or cancel
        made meanwhile through a node's API is never lost.
        """
        async with self.pool.connection() as conn, conn.transaction():
            await _lock_workspace(conn, workspace_id, "UPDATE")
            current = await _read_state(conn, workspace_id)
            if _state_doc(*current) != _state_doc(todos, status, checkpoints):
                return False
            await conn.execute("DELETE FROM codeagent_workspaces WHERE id = %s", (workspace_id,))
        return True


#: The tables holding one workspace's state (events are the fleet's log, kept apart).
_STATE_TABLES = (
    "codeagent_todos",
    "codeagent_todo_states",
    "codeagent_agent_states",
    "codeagent_operations",
    "codeagent_checkpoints",
)


async def _lock_workspace(conn: AsyncConnection[Any], workspace: str, mode: str) -> None:
    cur = await conn.execute(f"SELECT id FROM codeagent_workspaces WHERE id = %s FOR {mode}", (workspace,))
    if await cur.fetchone() is None:
        raise UnknownWorkspace(workspace)


def _model(source: str, model: Any, doc: Any) -> Any:
    try:
        return model.model_validate(doc)
    except ValueError as exc:
        raise StateFileError(source, f"invalid row: {exc}") from exc


class AsyncPgTodoStore:
    """The todo list of one workspace, in file order, with the file store's ids."""

    def __init__(self, db: PgDatabase, workspace: str) -> None:
        self.db = db
        self.workspace = workspace

    async def load(self) -> list[Todo]:
        """Every todo, in the order they were added."""
        async with self.db.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT doc FROM codeagent_todos WHERE workspace = %s ORDER BY position", (self.workspace,)
            )
            return [_model("codeagent_todos", Todo, row[0]) for row in await cur.fetchall()]

    async def get(self, todo_id: str) -> Todo | None:
        """One todo by id, or ``None``."""
        async with self.db.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT doc FROM codeagent_todos WHERE workspace = %s AND id = %s", (self.workspace, todo_id)
            )
            row = await cur.fetchone()
        return None if row is None else _model("codeagent_todos", Todo, row[0])

    async def add(self, text: str, files: Sequence[str] = ()) -> Todo:
        """Append a new todo with the next free id and return it (validated as the file store does)."""
        paths = [check_relative_path(path) for path in files]
        async with self.db.pool.connection() as conn, conn.transaction():
            await _lock_workspace(conn, self.workspace, "UPDATE")
            cur = await conn.execute("SELECT id FROM codeagent_todos WHERE workspace = %s", (self.workspace,))
            existing = {str(row[0]) for row in await cur.fetchall()}
            todo = Todo(id=new_todo_id(existing), text=text, files=paths)
            await conn.execute(
                "INSERT INTO codeagent_todos (workspace, position, id, doc) VALUES (%s, %s, %s, %s)",
                (self.workspace, len(existing), todo.id, Jsonb(todo.model_dump(mode="json"))),
            )
        return todo

    async def replace_all(self, todos: Sequence[Todo]) -> None:
        """Make the list exactly ``todos`` (the migration's import; ids kept as they are)."""
        async with self.db.pool.connection() as conn, conn.transaction():
            await _lock_workspace(conn, self.workspace, "UPDATE")
            await conn.execute("DELETE FROM codeagent_todos WHERE workspace = %s", (self.workspace,))
            for position, todo in enumerate(todos):
                await conn.execute(
                    "INSERT INTO codeagent_todos (workspace, position, id, doc) VALUES (%s, %s, %s, %s)",
                    (self.workspace, position, todo.id, Jsonb(todo.model_dump(mode="json"))),
                )


class AsyncPgStatusStore:
    """Where each todo stands and what the loop is doing, in one workspace."""

    def __init__(self, db: PgDatabase, workspace: str) -> None:
        self.db = db
        self.workspace = workspace

    async def _read(self, conn: AsyncConnection[Any]) -> StatusFile:
        return await _read_status(conn, self.workspace)

    async def load(self) -> StatusFile:
        """The whole status document, as the file store would read it."""
        async with self.db.pool.connection() as conn:
            return await self._read(conn)

    async def set_todo(self, todo_id: str, state: TodoState) -> None:
        """Record one todo's state; starting a cancelled todo is refused (:class:`TodoCancelled`)."""
        async with self.db.pool.connection() as conn, conn.transaction():
            await _lock_workspace(conn, self.workspace, "SHARE")
            cur = await conn.execute(
                "SELECT doc FROM codeagent_todo_states WHERE workspace = %s AND todo_id = %s FOR UPDATE",
                (self.workspace, todo_id),
            )
            row = await cur.fetchone()
            current = None if row is None else _model("codeagent_todo_states", TodoState, row[0])
            if refuses_start(current, state):
                raise TodoCancelled(todo_id)
            await conn.execute(
                "INSERT INTO codeagent_todo_states (workspace, todo_id, doc) VALUES (%s, %s, %s)"
                " ON CONFLICT (workspace, todo_id) DO UPDATE SET doc = EXCLUDED.doc",
                (self.workspace, todo_id, Jsonb(state.model_dump(mode="json"))),
            )

    async def set_agent(self, agent: AgentState) -> None:
        """Record what the loop is doing."""
        async with self.db.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO codeagent_agent_states (workspace, doc) VALUES (%s, %s)"
                " ON CONFLICT (workspace) DO UPDATE SET doc = EXCLUDED.doc",
                (self.workspace, Jsonb(agent.model_dump(mode="json"))),
            )

    async def operate(
        self, action: OperatorAction, todo_ids: Sequence[str], *, source: str, loop_running: bool
    ) -> list[TodoChange]:
        """An operator's ``retry`` or ``cancel`` of ``todo_ids`` (see :func:`codeagent.models.apply_operation`)."""
        async with self.db.pool.connection() as conn, conn.transaction():
            await _lock_workspace(conn, self.workspace, "UPDATE")
            doc = await self._read(conn)
            changes = apply_operation(doc, action, list(todo_ids), source=source, loop_running=loop_running)
            if not any(change.changed for change in changes):
                return changes
            for change in changes:
                if change.changed:
                    await conn.execute(
                        "INSERT INTO codeagent_todo_states (workspace, todo_id, doc) VALUES (%s, %s, %s)"
                        " ON CONFLICT (workspace, todo_id) DO UPDATE SET doc = EXCLUDED.doc",
                        (
                            self.workspace,
                            change.todo_id,
                            Jsonb(doc.todos[change.todo_id].model_dump(mode="json")),
                        ),
                    )
            # apply_operation keeps the newest operations only: the table is rewritten to match.
            await conn.execute("DELETE FROM codeagent_operations WHERE workspace = %s", (self.workspace,))
            for operation in doc.operations:
                await conn.execute(
                    "INSERT INTO codeagent_operations (workspace, doc) VALUES (%s, %s)",
                    (self.workspace, Jsonb(operation.model_dump(mode="json"))),
                )
        return changes

    async def replace_all(self, doc: StatusFile) -> None:
        """Make the status exactly ``doc`` (the migration's import)."""
        async with self.db.pool.connection() as conn, conn.transaction():
            await _lock_workspace(conn, self.workspace, "UPDATE")
            for table in ("codeagent_todo_states", "codeagent_agent_states", "codeagent_operations"):
                await conn.execute(f"DELETE FROM {table} WHERE workspace = %s", (self.workspace,))
            await _write_status(conn, self.workspace, doc)


async def _read_status(conn: AsyncConnection[Any], workspace: str) -> StatusFile:
    cur = await conn.execute("SELECT doc FROM codeagent_agent_states WHERE workspace = %s", (workspace,))
    agent = await cur.fetchone()
    cur = await conn.execute(
        "SELECT todo_id, doc FROM codeagent_todo_states WHERE workspace = %s ORDER BY todo_id",
        (workspace,),
    )
    states = {str(r[0]): _model("codeagent_todo_states", TodoState, r[1]) for r in await cur.fetchall()}
    cur = await conn.execute(
        "SELECT doc FROM codeagent_operations WHERE workspace = %s ORDER BY position", (workspace,)
    )
    operations = [_model("codeagent_operations", Operation, r[0]) for r in await cur.fetchall()]
    doc = StatusFile(todos=states, operations=operations)
    if agent is not None:
        doc.agent = _model("codeagent_agent_states", AgentState, agent[0])
    return doc


async def _write_status(conn: AsyncConnection[Any], workspace: str, doc: StatusFile) -> None:
    if doc.agent is not None:
        await conn.execute(
            "INSERT INTO codeagent_agent_states (workspace, doc) VALUES (%s, %s)",
            (workspace, Jsonb(doc.agent.model_dump(mode="json"))),
        )
    for todo_id, state in doc.todos.items():
        await conn.execute(
            "INSERT INTO codeagent_todo_states (workspace, todo_id, doc) VALUES (%s, %s, %s)",
            (workspace, todo_id, Jsonb(state.model_dump(mode="json"))),
        )
    for operation in doc.operations:
        await conn.execute(
            "INSERT INTO codeagent_operations (workspace, doc) VALUES (%s, %s)",
            (workspace, Jsonb(operation.model_dump(mode="json"))),
        )


async def _read_state(
    conn: AsyncConnection[Any], workspace: str
) -> tuple[list[Todo], StatusFile, list[CheckpointV2]]:
    """A workspace's todos, status and checkpoints (by todo id), read on ``conn``."""
    cur = await conn.execute(
        "SELECT doc FROM codeagent_todos WHERE workspace = %s ORDER BY position", (workspace,)
    )
    todos = [_model("codeagent_todos", Todo, row[0]) for row in await cur.fetchall()]
    status = await _read_status(conn, workspace)
    cur = await conn.execute(
        "SELECT doc FROM codeagent_checkpoints WHERE workspace = %s ORDER BY todo_id", (workspace,)
    )
    checkpoints = [_model("codeagent_checkpoints", CheckpointV2, row[0]) for row in await cur.fetchall()]
    return todos, status, checkpoints


def _state_doc(todos: Sequence[Todo], status: StatusFile, checkpoints: Sequence[CheckpointV2]) -> Any:
    """A workspace's state as plain JSON values, to compare (checkpoints by todo id)."""
    return (
        [todo.model_dump(mode="json") for todo in todos],
        status.model_dump(mode="json"),
        sorted((record.model_dump(mode="json") for record in checkpoints), key=lambda doc: doc["todo_id"]),
    )


class AsyncPgCheckpointStore:
    """The last stage each todo of one workspace reached, versioned as the new file format is."""

    def __init__(self, db: PgDatabase, workspace: str) -> None:
        self.db = db
        self.workspace = workspace

    async def load_versioned(self, todo_id: str) -> CheckpointV2 | None:
        """The checkpoint with its sequence number, or ``None`` (also for an impossible id)."""
        if not TODO_ID_RE.match(todo_id):
            return None
        async with self.db.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT doc FROM codeagent_checkpoints WHERE workspace = %s AND todo_id = %s",
                (self.workspace, todo_id),
            )
            row = await cur.fetchone()
        return None if row is None else _model("codeagent_checkpoints", CheckpointV2, row[0])

    async def load(self, todo_id: str) -> Checkpoint | None:
        """The checkpoint of one todo, or ``None``."""
        record = await self.load_versioned(todo_id)
        return None if record is None else record.to_checkpoint()

    async def save(self, checkpoint: Checkpoint) -> None:
        """Write (replace) the checkpoint as the next sequence number, in one statement."""
        if not TODO_ID_RE.match(checkpoint.todo_id):
            raise ValueError(f"invalid todo id {checkpoint.todo_id!r}")
        async with self.db.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT seq FROM codeagent_checkpoints WHERE workspace = %s AND todo_id = %s FOR UPDATE",
                (self.workspace, checkpoint.todo_id),
            )
            row = await cur.fetchone()
            record = CheckpointV2.from_checkpoint(checkpoint, (int(row[0]) if row else 0) + 1)
            await conn.execute(
                "INSERT INTO codeagent_checkpoints (workspace, todo_id, seq, doc) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (workspace, todo_id) DO UPDATE SET seq = EXCLUDED.seq, doc = EXCLUDED.doc",
                (self.workspace, checkpoint.todo_id, record.seq, Jsonb(record.model_dump(mode="json"))),
            )

    async def list_ids(self) -> list[str]:
        """Ids of every todo with a checkpoint, sorted."""
        async with self.db.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT todo_id FROM codeagent_checkpoints WHERE workspace = %s ORDER BY todo_id",
                (self.workspace,),
            )
            return [str(row[0]) for row in await cur.fetchall()]

    async def put_versioned(self, record: CheckpointV2) -> None:
        """Store ``record`` as it is, sequence number included (the migration's import)."""
        async with self.db.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO codeagent_checkpoints (workspace, todo_id, seq, doc) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (workspace, todo_id) DO UPDATE SET seq = EXCLUDED.seq, doc = EXCLUDED.doc",
                (self.workspace, record.todo_id, record.seq, Jsonb(record.model_dump(mode="json"))),
            )


class AsyncPgEventLog:
    """The fleet's event log: every worker appends, every node reads (``?after=N`` is the row id)."""

    def __init__(self, db: PgDatabase) -> None:
        self.db = db

    async def append(self, events: Sequence[tuple[str | None, str, str, dict[str, Any]]]) -> list[int]:
        """Store ``(workspace, type, time, data)`` events in order and announce them; return their ids."""
        ids: list[int] = []
        if not events:
            return ids
        async with self.db.pool.connection() as conn, conn.transaction():
            for workspace, kind, time, data in events:
                cur = await conn.execute(
                    "INSERT INTO codeagent_events (workspace, type, time, data) VALUES (%s, %s, %s, %s) RETURNING id",
                    (workspace, kind, time, Jsonb(data, dumps=_event_dumps)),
                )
                row = await cur.fetchone()
                assert row is not None
                ids.append(int(row[0]))
            await conn.execute("SELECT pg_notify(%s, %s)", (EVENTS_CHANNEL, str(ids[-1])))
        return ids

    async def since(
        self, after: int, limit: int = 10_000
    ) -> list[tuple[int, str | None, str, str, dict[str, Any]]]:
        """Events with an id above ``after``, oldest first: ``(id, workspace, type, time, data)``."""
        async with self.db.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, workspace, type, time, data FROM codeagent_events WHERE id > %s ORDER BY id LIMIT %s",
                (after, limit),
            )
            return [(int(r[0]), r[1], str(r[2]), str(r[3]), dict(r[4])) for r in await cur.fetchall()]
