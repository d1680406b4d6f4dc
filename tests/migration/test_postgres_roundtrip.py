"""Property: files -> PostgreSQL -> files loses nothing, for generated workspaces; twice is stable.

Each example writes a workspace's state as the legacy agent (and the new core)
leave it: todos with odd texts and file names, statuses of every kind with
their errors, commits and timestamps (in several time zones), the agent state,
the operators' operations, and checkpoints of every stage in the legacy (v1)
and the v2 format. It is moved into the test's database and back, through the
same functions the command line calls. What comes back is compared through
the domain models: every todo, state, operation and checkpoint is what it was
(a v1 checkpoint comes back v2 with ``seq`` 1 and the same content); a second
round trip writes the very same bytes.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codeagent.models import (
    AgentState,
    Checkpoint,
    Operation,
    Stage,
    StatusFile,
    Todo,
    TodoFile,
    TodoState,
    TodoStatus,
    dump_json,
)
from codeagent.state_v2 import CheckpointV2
from core_sync.pg_state import PgDatabase
from migration import layout, postgres
from tests.migration.conftest import state_bytes

ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
# Anything a JSON file can hold but NUL, which PostgreSQL refuses (apply says so: see test_postgres.py).
chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
texts = st.text(alphabet=chars, max_size=30)
odd = st.text(alphabet=chars, min_size=1, max_size=30)
times = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.sampled_from(ZONES)
)
shas = st.from_regex(r"[0-9a-f]{40}", fullmatch=True)
counts = st.integers(min_value=-(2**62), max_value=2**62)

Generated = tuple[list[Todo], StatusFile, list[Checkpoint], dict[str, int], bool]


@st.composite
def workspaces(draw: st.DrawFn) -> Generated:
    """Todos, status, checkpoints, which checkpoints are v2 (their seq), and whether format.json exists."""
    todo_ids = draw(st.lists(ids, min_size=0, max_size=6, unique=True))
    todos = [
        Todo(id=i, text=draw(odd), files=draw(st.lists(odd, max_size=3)), created_at=draw(times))
        for i in todo_ids
    ]
    status = StatusFile(
        agent=AgentState(
            state=draw(st.sampled_from(["idle", "working", "stopped"])),
            current_todo=draw(st.none() | ids),
            pid=draw(st.none() | st.integers(1, 2**22)),
            loop=draw(odd),
            processed=draw(counts),
            updated_at=draw(times),
        )
    )
    stranger = draw(st.lists(ids, max_size=2))  # states of todos the list does not have (kept as they are)
    for todo_id in [*todo_ids, *stranger]:
        if draw(st.booleans()):
            status.todos[todo_id] = TodoState(
                status=draw(st.sampled_from(list(TodoStatus))),
                error=draw(st.none() | texts),
                commit=draw(st.none() | shas),
                attempts=draw(counts),
                started_at=draw(st.none() | times),
                finished_at=draw(st.none() | times),
                updated_at=draw(times),
            )
    status.operations = draw(
        st.lists(
            st.builds(
                Operation,
                at=times,
                todo_id=ids,
                action=st.sampled_from(["retry", "cancel"]),
                source=odd,
                previous=st.sampled_from(list(TodoStatus)),
                error=st.none() | texts,
                commit=st.none() | shas,
                attempts=counts,
            ),
            max_size=4,
        )
    )
    checkpoints: list[Checkpoint] = []
    v2: dict[str, int] = {}
    for todo_id in todo_ids:
        if draw(st.booleans()):
            checkpoints.append(
                Checkpoint(
                    todo_id=todo_id,
                    stage=draw(st.sampled_from(list(Stage))),
                    reply=draw(st.none() | texts),
                    writes=draw(st.dictionaries(odd, texts, max_size=3)),
                    commit=draw(st.none() | shas),
                    updated_at=draw(times),
                )
            )
            if draw(st.booleans()):
                v2[todo_id] = draw(st.integers(1, 10_000))
    return todos, status, checkpoints, v2, draw(st.booleans())


def _write(root: Path, state: Generated) -> None:
    todos, status, checkpoints, v2, marker = state
    agent = root / ".agent"
    (agent / "checkpoints").mkdir(parents=True)
    (agent / "todos.json").write_text(dump_json(TodoFile(todos=todos)), encoding="utf-8")
    (agent / "status.json").write_text(dump_json(status), encoding="utf-8")
    for checkpoint in checkpoints:
        seq = v2.get(checkpoint.todo_id)
        doc = checkpoint if seq is None else CheckpointV2.from_checkpoint(checkpoint, seq)
        (agent / "checkpoints" / f"{checkpoint.todo_id}.json").write_text(dump_json(doc), encoding="utf-8")
    if marker:
        (agent / "format.json").write_text(
            '{"format": 2, "migrated_at": "2024-01-01T00:00:00Z", "backup": "x"}\n'
        )


def _dumps(models: list[Todo]) -> list[object]:
    return [m.model_dump(mode="json") for m in models]


def _assert_is(state: postgres.State, generated: Generated) -> None:
    """``state`` holds exactly the generated todos, states, operations and checkpoints."""
    todos, status, checkpoints, v2, _marker = generated
    assert _dumps(state.todos) == _dumps(todos)  # ids, order, texts, files, timestamps
    assert state.status.model_dump(mode="json") == status.model_dump(mode="json")
    assert state.status == status
    assert sorted(state.checkpoints) == sorted(c.todo_id for c in checkpoints)
    for checkpoint in checkpoints:
        record = state.checkpoints[checkpoint.todo_id]
        assert record.seq == v2.get(checkpoint.todo_id, 1)  # a v1 file becomes seq 1, as `migrate apply` does
        assert record.to_checkpoint().model_dump(mode="json") == checkpoint.model_dump(mode="json")
        assert record.to_checkpoint() == checkpoint


def _state_file_bytes(root: Path) -> dict[str, bytes]:
    return {rel: data for rel, data in state_bytes(root).items() if rel != layout.MARKER}


def _rows(dsn: str, root: Path) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM codeagent_workspaces WHERE path = %s", (str(root),)
        ).fetchone()
    return int(row[0]) if row else 0


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(generated=workspaces())
def test_files_postgres_files_loses_nothing_and_twice_is_stable(pg_dsn: str, generated: Generated) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp).resolve() / "ws"
        _write(root, generated)

        moved = postgres.to_postgres(root, pg_dsn)
        assert moved.ok, moved.lines
        assert postgres._live_state_files(root) == []  # the files are no longer the state
        marker = postgres.read_store_marker(root)
        assert marker is not None
        db = PgDatabase(pg_dsn, max_size=2).open()
        try:
            _assert_is(postgres.read_database_state(db, marker.workspace_id), generated)
        finally:
            db.close()
        problems, _notes = postgres.verify_postgres(root)
        assert problems == []

        back = postgres.to_files(root)
        assert back.ok, back.lines
        assert not (root / layout.STORE).exists() and not (root / layout.STORE_JOURNAL).exists()
        assert _rows(pg_dsn, root) == 0  # the database let go of the workspace
        _assert_is(postgres.read_file_state(root), generated)
        first = _state_file_bytes(root)

        assert postgres.to_postgres(root, pg_dsn).ok
        assert postgres.to_files(root).ok
        _assert_is(postgres.read_file_state(root), generated)
        assert _state_file_bytes(root) == first
