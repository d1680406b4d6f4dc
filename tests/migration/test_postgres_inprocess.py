"""``migrate ... --to postgres|files`` in this process: the dry runs, the refusals, interrupted moves, verify.

``test_postgres.py`` drives the moves through the real command line, one
process each; here the same commands run through typer's ``CliRunner`` and the
functions they call, on the sample workspace and real PostgreSQL (the module's
database, where every workspace registers at its own path with its own id,
or a fresh one where a test needs a database without the fleet's tables).
Every refusal is checked to have changed nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import Result
from psycopg.types.json import Jsonb
from typer.testing import CliRunner

from codeagent.errors import StateFileError
from codeagent.models import Checkpoint, Stage, dump_json
from codeagent.state_v2 import CheckpointV2
from core_sync.pg_state import PgDatabase, SyncPgCheckpointStore, SyncPgTodoStore
from fleet.workspaces import write_identity
from migration import engine, layout, postgres
from migration.cli import migrate_app
from migration.store import (
    POSTGRESQL,
    StoreMarker,
    read_store_marker,
    write_store_journal,
    write_store_marker,
)
from tests.migration.conftest import state_bytes

UNREACHABLE = "postgresql://agent:s3cret@127.0.0.1:1/nowhere"


def migrate(*args: str) -> Result:
    return CliRunner().invoke(migrate_app, list(args))


@pytest.fixture
def database(shared_pg_dsn: str) -> Iterator[PgDatabase]:
    db = PgDatabase(shared_pg_dsn, max_size=2).open()
    try:
        yield db
    finally:
        db.close()


def _moved(root: Path, dsn: str) -> str:
    """Move ``root`` to the database; its fleet id."""
    outcome = postgres.to_postgres(root, dsn)
    assert outcome.ok, outcome.lines
    marker = read_store_marker(root)
    assert marker is not None
    return marker.workspace_id


def tree_hash(root: Path) -> str:
    """The conftest's digest of every file, without the workspace lock a refused move may leave."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".lock"):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _tables(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT to_regclass('codeagent_workspaces') IS NOT NULL").fetchone()
    return bool(row and row[0])


# ----------------------------------------------------------------- the command line's refusals


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ("apply", "--to", "pg", "postgresql://a@h/x", "--dsn", "postgresql://b@h/y"),
            2,
            "two different DSNs given",
        ),
        (("plan", "postgresql://a@h/x"), 2, "a DSN goes with --to postgres DSN"),
        (("plan", "--to", "sideways"), 2, "--to must be 'postgres' or 'files', got 'sideways'"),
        (("plan", "--to", "postgres"), 2, "--to postgres needs the database's DSN"),
        (("apply", "--to", "files", "--quarantine"), 2, "--quarantine goes with the file-format migration"),
        (("plan", "--to", "PostgreSQL", "not a dsn"), 2, "the DSN 'not a dsn' is not valid"),
        (
            ("plan", "--to", "postgres", UNREACHABLE),
            1,
            "cannot use the database postgresql://agent:***@127.0.0.1:1",
        ),
        (
            ("plan", "--to", "files"),
            0,
            "the state is in the workspace's files already: apply would do nothing",
        ),
        (
            ("apply", "--to", "files", "--dsn", UNREACHABLE),
            0,
            "the state is in the workspace's files already",
        ),
    ],
)
def test_bad_targets_are_one_line_and_change_nothing(
    legacy_ws: Path, args: tuple[str, ...], code: int, message: str
) -> None:
    tree = tree_hash(legacy_ws)
    result = migrate(args[0], "-w", str(legacy_ws), *args[1:])
    out = result.stderr if code else result.stdout
    assert result.exit_code == code, result.output
    assert message in out and len(out.strip().splitlines()) == 1, out
    assert "s3cret" not in result.output
    assert tree_hash(legacy_ws) == tree


@pytest.mark.parametrize(
    "args",
    [(), ("--to", "postgres", "postgresql://a@h/x"), ("--to", "files")],
)
def test_a_directory_without_agent_state_is_not_a_workspace(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = migrate("plan", "-w", str(tmp_path), *args)
    assert result.exit_code == 2 and "has no .agent/ directory: not a Code Agent workspace" in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing created
    assert postgres.to_postgres(tmp_path, "postgresql://a@h/x").code == engine.EXIT_BAD_STATE
    assert postgres.to_files(tmp_path).code == engine.EXIT_BAD_STATE


# ----------------------------------------------------------------- dry runs


def test_the_dry_run_to_postgres_says_what_would_move_and_touches_nothing(
    legacy_ws: Path, pg_dsn: str
) -> None:
    ws, root = str(legacy_ws), legacy_ws.resolve()
    tree = tree_hash(legacy_ws)
    plan = migrate("plan", "-w", ws, "--to", "postgres", pg_dsn)
    assert plan.exit_code == 0, plan.output
    lines = plan.stdout.splitlines()
    assert (
        lines[0].startswith("target ")
        and "PostgreSQL 15" in lines[0]
        and "tables will be created" in lines[0]
    )
    assert (
        f"register   .agent/workspace.json  (a new fleet id is written; the database records it with the path {root})"
        in lines
    )
    assert "copy       .agent/todos.json  (12 todos, ids and order kept; then removed)" in lines
    assert any(
        line.startswith("copy       .agent/status.json  (4 todo states (3 done, 1 interrupted)")
        for line in lines
    )
    assert "backup     .agent/backup/<timestamp>/  (6 files, sha256 manifest)" in lines
    assert lines[-1] == "dry run: nothing was changed"
    assert tree_hash(legacy_ws) == tree and not _tables(pg_dsn)

    # No status file, a v2 checkpoint, a corrupt one, the file-format marker, a fleet id already given.
    (legacy_ws / layout.STATUS).unlink()
    v2 = CheckpointV2.from_checkpoint(Checkpoint(todo_id="t-0002", stage=Stage.COMMITTED), 3)
    (legacy_ws / layout.CHECKPOINTS / "t-0002.json").write_text(dump_json(v2))
    (legacy_ws / layout.CHECKPOINTS / "t-0003.json").write_text('{"todo_id": "t-0003", "stage": "edi')
    (legacy_ws / layout.MARKER).write_text(
        '{"format": 2, "migrated_at": "2024-01-01T00:00:00Z", "backup": ""}\n'
    )
    ident = write_identity(legacy_ws)
    tree = tree_hash(legacy_ws)
    plan = migrate("plan", "-w", ws, "--to", "postgres", pg_dsn)
    assert plan.exit_code == 2, plan.output
    lines = plan.stderr.splitlines()  # exit 2: the whole plan goes to stderr
    assert (
        f"register   .agent/workspace.json  (fleet id {ident}, kept; the database records it with the path {root})"
        in lines
    )
    assert "copy       .agent/status.json  (absent: an empty status and the default agent state)" in lines
    assert (
        "copy       .agent/checkpoints/t-0002.json  (v2 (seq 3 kept), stage committed; then removed)" in lines
    )
    assert any(
        line.startswith("quarantine .agent/checkpoints/t-0003.json  (.agent/checkpoints/t-0003.json:1")
        for line in lines
    )
    assert "remove     .agent/format.json  (the file-format marker (in the backup))" in lines
    assert "1 problem(s); apply will stop unless they are fixed:" in lines
    assert "  (apply --quarantine would move the bad checkpoint files aside into the backup)" in lines
    assert tree_hash(legacy_ws) == tree and not _tables(pg_dsn)


def test_the_dry_run_names_what_the_database_already_knows(
    legacy_ws: Path, tmp_path: Path, shared_pg_dsn: str, database: PgDatabase
) -> None:
    root = legacy_ws.resolve()
    elsewhere = write_identity(legacy_ws)
    database.register(elsewhere, tmp_path / "original", "original")  # this workspace is a copy of it
    squatter = "f" * 32
    database.register(squatter, root, "squatter")  # and another workspace is registered at its path
    tree = tree_hash(legacy_ws)
    plan = migrate("plan", "-w", str(legacy_ws), "--to", "postgres", shared_pg_dsn)
    assert plan.exit_code == 2, plan.output
    assert "the fleet's tables exist" in plan.stderr
    assert f"names workspace {elsewhere}, which the database knows at {tmp_path / 'original'}" in plan.stderr
    assert f"the database has another workspace ({squatter}) registered at {root}" in plan.stderr
    assert "apply --quarantine would" not in plan.stderr  # not a problem quarantine solves
    applied = postgres.to_postgres(legacy_ws, shared_pg_dsn)
    assert applied.code == engine.EXIT_BAD_STATE and applied.lines[0] == "stopped before changing anything:"
    assert tree_hash(legacy_ws) == tree

    (legacy_ws / layout.IDENTITY).write_text("{broken")
    plan = migrate("plan", "-w", str(legacy_ws), "--to", "postgres", shared_pg_dsn)
    assert plan.exit_code == 2 and "(remove it to give the workspace a new fleet id)" in plan.stderr
    database.forget(squatter)
    database.forget(elsewhere)


# ----------------------------------------------------------------- a workspace in the database, through the CLI


def test_a_workspace_in_the_database_through_every_verb(
    legacy_ws: Path, shared_pg_dsn: str, pg_server: str
) -> None:
    ws = str(legacy_ws)
    before = postgres.state_from_survey(postgres.survey(legacy_ws))
    applied = migrate("apply", "-w", ws, "--to", "postgres", shared_pg_dsn)
    assert applied.exit_code == 0, applied.output
    assert "9 unfinished todos: queued a drain" in applied.stdout

    plain = migrate("plan", "-w", ws)
    assert (
        plain.exit_code == 0
        and "the workspace's files are not its state: its state lives in PostgreSQL" in plain.stdout
    )
    same = migrate("plan", "-w", ws, "--to", "postgres", shared_pg_dsn)
    assert same.exit_code == 0 and "apply would do nothing" in same.stdout
    other = migrate("plan", "-w", ws, "--to", "postgres", pg_server)
    assert other.exit_code == 2 and f"not in {pg_server}: move it back first" in other.stderr
    refused = migrate(
        "apply", "-w", ws, "--to", "postgres", pg_server
    )  # a database that answers, but not this one
    assert refused.exit_code == 2 and "bring it back with `apply --to files` first" in refused.stderr
    assert "format:      in PostgreSQL (" in migrate("status", "-w", ws).stdout

    back = migrate("plan", "-w", ws, "--to", "files")
    assert back.exit_code == 0, back.output
    assert "write      .agent/checkpoints/t-0004.json  (v2 (seq 1), stage edited)" in back.stdout
    assert "counts: 12 todos, 4 todo states, 1 agent state, 0 operations, 4 checkpoints" in back.stdout
    verified = migrate("verify", "-w", ws)
    assert verified.exit_code == 0, verified.output
    assert "the database holds exactly what the files held" in verified.stdout

    rolled = migrate("rollback", "-w", ws)
    assert rolled.exit_code == 0, rolled.output
    assert "moved back to files" in rolled.stdout and "run `migrate rollback` again" in rolled.stdout
    assert postgres.compare_states(before, postgres.read_file_state(legacy_ws), postgres.TO_FILES) == []
    assert migrate("verify", "-w", ws).exit_code == 0


def test_what_stops_the_way_back_is_named(legacy_ws: Path, shared_pg_dsn: str, database: PgDatabase) -> None:
    ident = _moved(legacy_ws, shared_pg_dsn)
    tree = tree_hash(legacy_ws)
    identity = (legacy_ws / layout.IDENTITY).read_bytes()

    (legacy_ws / layout.TODOS).write_text('{"version": 1, "todos": []}\n')
    plan = postgres.plan_to_files(legacy_ws)
    assert (
        plan.code == 2
        and "  .agent/todos.json exists although the state lives in PostgreSQL: move it aside first"
        in plan.lines
    )
    (legacy_ws / layout.TODOS).unlink()

    stranger = write_identity(legacy_ws)  # another workspace's id file at this path
    plan = postgres.plan_to_files(legacy_ws)
    assert (
        plan.code == 2
        and f"  .agent/workspace.json says {stranger}, .agent/store.json says {ident}" in plan.lines
    )
    problems, _notes = postgres.verify_postgres(legacy_ws)
    assert problems == [f".agent/workspace.json says {stranger}, .agent/store.json says {ident}"]
    (legacy_ws / layout.IDENTITY).write_text("{broken")
    problems, _notes = postgres.verify_postgres(legacy_ws)
    assert len(problems) == 1 and ".agent/workspace.json" in problems[0] and "unreadable" in problems[0]
    (legacy_ws / layout.IDENTITY).write_bytes(identity)

    # The loops moved on: verify no longer compares with the backup; a stray checkpoint is named.
    SyncPgTodoStore(database, ident).add("added through the fleet")
    SyncPgCheckpointStore(database, ident).save(Checkpoint(todo_id="t-0099", stage=Stage.STARTED))
    problems, notes = postgres.verify_postgres(legacy_ws)
    assert problems == ["checkpoints.t-0099: checkpoint of a todo that is not in the todo list"]
    assert any("the database has moved on since backup" in n for n in notes)
    todos, status = postgres.load_todos_and_status(legacy_ws)
    assert len(todos) == 13 and status.todos["t-0001"].status.value == "done"
    with pytest.raises(StateFileError, match=r"cannot read the state in postgresql://agent:\*\*\*@"):
        postgres.load_todos_and_status(legacy_ws, UNREACHABLE)

    # A row no store can read: verify and the dry run say so, in one line.
    with psycopg.connect(shared_pg_dsn) as conn:
        conn.execute(
            "UPDATE codeagent_todos SET doc = %s WHERE workspace = %s AND id = 't-0001'",
            (Jsonb({"id": 1}), ident),
        )
    problems, _notes = postgres.verify_postgres(legacy_ws)
    assert len(problems) == 1 and problems[0].startswith(
        "the database's state does not read back: codeagent_todos"
    )
    plan = postgres.plan_to_files(legacy_ws)
    assert plan.code == engine.EXIT_FAILED and plan.lines[0].startswith(
        "cannot read the state in user=postgres"
    )

    assert postgres.verify_postgres(legacy_ws, "not a dsn")[0][0].startswith(
        "the DSN 'not a dsn' is not valid"
    )
    write_store_journal(legacy_ws, {"op": "to-files"})
    assert "an interrupted move (to-files) is pending" in postgres.verify_postgres(legacy_ws)[0][0]
    (legacy_ws / layout.STORE_JOURNAL).unlink()
    assert tree_hash(legacy_ws) == tree  # every check read, none wrote


def test_a_marker_naming_a_database_without_the_fleet(
    legacy_ws: Path, pg_dsn: str, shared_pg_dsn: str
) -> None:
    marker = StoreMarker(POSTGRESQL, pg_dsn, "0" * 32, "2024-01-01T00:00:00Z", "")
    write_store_marker(legacy_ws, marker)
    tree = tree_hash(legacy_ws)
    no_tables = "has no fleet tables: is it the fleet's database?"
    plan = postgres.plan_to_files(legacy_ws)
    assert plan.code == engine.EXIT_BAD_STATE and no_tables in plan.lines[0]
    assert no_tables in postgres.verify_postgres(legacy_ws)[0][0]
    moved = postgres.to_files(legacy_ws)
    assert (
        moved.code == engine.EXIT_BAD_STATE
        and moved.lines[0].startswith("refused: ")
        and no_tables in moved.lines[0]
    )

    # A database with the tables, but not this workspace: nothing to write back, the problems said.
    plan = postgres.plan_to_files(legacy_ws, shared_pg_dsn)
    assert plan.code == engine.EXIT_BAD_STATE
    assert f"  the database has no workspace {'0' * 32}: is this the fleet's database?" in plan.lines
    assert not any(line.startswith("write ") or line.startswith("counts:") for line in plan.lines)
    assert tree_hash(legacy_ws) == tree

    (legacy_ws / layout.STORE).write_text('{"store": "mysql", "dsn": "x", "workspace_id": "y"}')
    for outcome in (postgres.plan_to_files(legacy_ws), postgres.to_files(legacy_ws)):
        assert outcome.code == engine.EXIT_BAD_STATE and outcome.lines[0].startswith(
            "refused: .agent/store.json"
        )


# ----------------------------------------------------------------- interrupted moves back to files


def _journal(root: Path, dsn: str, ident: str, op: str = "to-files") -> None:
    write_store_journal(
        root,
        {"op": op, "dsn": dsn, "workspace_id": ident, "backup": "", "started_at": "2024-01-01T00:00:00Z"},
    )


def test_a_move_back_cut_short_is_undone_or_finished(
    legacy_ws: Path, shared_pg_dsn: str, database: PgDatabase
) -> None:
    files = postgres.state_from_survey(postgres.survey(legacy_ws))
    ident = _moved(legacy_ws, shared_pg_dsn)
    state = postgres.read_database_state(database, ident)

    # Killed after writing the files, before the database let go: the files are discarded, then it moves.
    postgres.write_state_files(legacy_ws, state)
    _journal(legacy_ws, shared_pg_dsn, ident)
    plan = postgres.plan_to_files(legacy_ws)
    assert (
        plan.lines[0] == "note: an interrupted move (to-files) is pending; apply finishes or undoes it first"
    )
    back = postgres.to_files(legacy_ws)
    assert back.ok, back.lines
    assert (
        back.lines[0]
        == "undid an interrupted move back to files: the state is still in PostgreSQL, as before"
    )
    assert back.lines[1].startswith("moved back to files from PostgreSQL")
    assert postgres.compare_states(files, postgres.read_file_state(legacy_ws), postgres.TO_FILES) == []

    # Killed after the database let go (the commit point): the tidying is finished.
    ident = _moved(legacy_ws, shared_pg_dsn)
    postgres.write_state_files(legacy_ws, postgres.read_database_state(database, ident))
    _journal(legacy_ws, shared_pg_dsn, ident)
    database.forget(ident)
    back = postgres.to_files(legacy_ws)
    assert back.ok and back.lines == [
        "finished an interrupted move back to files (the database had let go)",
        "the state is in the workspace's files: nothing to do",
    ]
    assert not (legacy_ws / layout.STORE).exists() and not (legacy_ws / layout.STORE_JOURNAL).exists()
    assert json.loads((legacy_ws / layout.MARKER).read_text())["migrated_at"] == "2024-01-01T00:00:00Z"

    # Killed after the store marker went, before the journal did.
    _journal(legacy_ws, shared_pg_dsn, ident)
    plan = postgres.plan_to_files(legacy_ws)
    assert plan.lines == ["an interrupted move back to files is pending: apply --to files finishes it"]
    back = postgres.to_files(legacy_ws)
    assert back.ok and back.lines[0] == "finished an interrupted move back to files"
    assert postgres.compare_states(files, postgres.read_file_state(legacy_ws), postgres.TO_FILES) == []


def test_a_journal_that_cannot_be_acted_on_is_refused(legacy_ws: Path, shared_pg_dsn: str) -> None:
    before = state_bytes(legacy_ws)
    _journal(legacy_ws, shared_pg_dsn, "x", op="to-postgres")
    assert (
        postgres.plan_to_files(legacy_ws).lines[0].startswith("an interrupted move to PostgreSQL is pending")
    )
    plan = postgres.plan_to_postgres(legacy_ws, shared_pg_dsn)
    assert plan.lines[0].startswith("note: an interrupted move (to-postgres) is pending")
    (legacy_ws / layout.IDENTITY).parent.mkdir(exist_ok=True)
    (legacy_ws / layout.IDENTITY).write_text("{broken")  # the undo cannot tell which workspace to forget
    failed = postgres.to_postgres(legacy_ws, shared_pg_dsn)
    assert failed.code == engine.EXIT_FAILED
    assert failed.lines[0].startswith(
        "an interrupted move (.agent/store-journal.json) could not be finished or undone"
    )
    assert (legacy_ws / layout.STORE_JOURNAL).exists()

    (legacy_ws / layout.STORE_JOURNAL).write_text("[not an object]")
    refused = postgres.to_files(legacy_ws, shared_pg_dsn)
    assert refused.code == engine.EXIT_BAD_STATE
    assert refused.lines == [
        "refused: .agent/store-journal.json is unreadable or unknown ('unknown'); look at it and remove it by hand"
    ]
    assert postgres.to_files(legacy_ws).lines == [
        "no DSN given: --to postgres postgresql://user@host:5432/db"
    ]  # no marker, and the journal records none
    assert state_bytes(legacy_ws) == before


def test_a_move_back_that_fails_before_or_after_its_commit_point(
    legacy_ws: Path, shared_pg_dsn: str, database: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = postgres.state_from_survey(postgres.survey(legacy_ws))
    ident = _moved(legacy_ws, shared_pg_dsn)

    monkeypatch.setenv(layout.FAIL_ENV, "files-write")  # before the database let go: the files written go
    failed = postgres.to_files(legacy_ws)
    assert failed.code == engine.EXIT_FAILED and failed.lines == [
        "apply --to files failed: fault injected at step 'files-write' (CODEAGENT_MIGRATE_FAIL_AT)",
        "nothing was changed: the state is still in PostgreSQL",
    ]
    assert postgres._live_state_files(legacy_ws) == [] and not (legacy_ws / layout.STORE_JOURNAL).exists()
    assert postgres.verify_postgres(legacy_ws)[0] == []

    monkeypatch.setenv(layout.FAIL_ENV, "files-forget")  # after it: only the tidying is left
    failed = postgres.to_files(legacy_ws)
    assert failed.code == engine.EXIT_FAILED
    assert failed.lines[0].startswith(
        "moved back to files and verified, but tidying up failed: fault injected"
    )
    assert failed.lines[1] == "run `apply --to files` again to finish"
    assert not postgres._registered(database, ident) and (legacy_ws / layout.STORE_JOURNAL).exists()

    monkeypatch.delenv(layout.FAIL_ENV)
    finished = postgres.to_files(legacy_ws)
    assert (
        finished.ok
        and finished.lines[0] == "finished an interrupted move back to files (the database had let go)"
    )
    assert not (legacy_ws / layout.STORE).exists() and (legacy_ws / layout.MARKER).exists()
    assert postgres.compare_states(files, postgres.read_file_state(legacy_ws), postgres.TO_FILES) == []
