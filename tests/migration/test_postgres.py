"""``migrate plan|apply --to postgres DSN`` and ``--to files``: the real command line, errors, and crashes.

The workspace is the sample one advanced part-way by the legacy loop (3 todos
done, the 4th halted after ``edited``: legacy checkpoints). Every test gets a
database of its own (``pg_dsn``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from core_sync.pg_state import PgDatabase
from legacy.workspace_lock import hold_workspace
from migration import engine, layout, postgres
from migration.store import read_store_marker, state_elsewhere
from tests.migration.conftest import state_bytes, tree_hash

REPO = Path(__file__).resolve().parents[2]
UNREACHABLE = "postgresql://agent:s3cret@127.0.0.1:1/nowhere"


def codeagent(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codeagent_app.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


def migrate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``codeagent migrate`` without the rest of the application (quicker to start)."""
    return subprocess.run(
        [sys.executable, "-m", "migration", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


def _files_state(root: Path) -> postgres.State:
    """What the files say, as the legacy readers read them (legacy checkpoints as v2, seq 1)."""
    return postgres.state_from_survey(postgres.survey(root))


def _database_state(dsn: str, root: Path) -> postgres.State:
    marker = read_store_marker(root)
    assert marker is not None
    db = PgDatabase(dsn, max_size=2).open()
    try:
        return postgres.read_database_state(db, marker.workspace_id)
    finally:
        db.close()


def _workspace_rows(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        exists = conn.execute("SELECT to_regclass('codeagent_workspaces') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return 0
        row = conn.execute("SELECT count(*) FROM codeagent_workspaces").fetchone()
    return int(row[0]) if row else 0


def _same(a: postgres.State, b: postgres.State) -> bool:
    return postgres.compare_states(a, b, postgres.TO_DATABASE) == []


def test_cli_plan_apply_status_verify_and_back(legacy_ws: Path, pg_dsn: str) -> None:
    ws = str(legacy_ws)
    before, files = state_bytes(legacy_ws), _files_state(legacy_ws)
    tree = tree_hash(legacy_ws)

    plan = codeagent("migrate", "plan", "-w", ws, "--to", "postgres", pg_dsn)
    assert plan.returncode == 0, plan.stderr
    assert "convert    .agent/checkpoints/t-0004.json  (legacy -> v2 (seq 1), stage edited" in plan.stdout
    assert "counts: 12 todos, 4 todo states, 1 agent state, 0 operations, 4 checkpoints" in plan.stdout
    assert "dry run: nothing was changed" in plan.stdout
    assert tree_hash(legacy_ws) == tree and _workspace_rows(pg_dsn) == 0  # not even the tables

    with hold_workspace(legacy_ws, "legacy"):
        busy = codeagent("migrate", "apply", "-w", ws, "--to", "postgres", pg_dsn)
    assert busy.returncode == 3 and "held by" in busy.stderr

    applied = codeagent("migrate", "apply", "-w", ws, "--to", "postgres", pg_dsn)
    assert applied.returncode == 0, applied.stderr
    assert "4 checkpoints converted to v2" in applied.stdout and "verified:" in applied.stdout
    assert postgres._live_state_files(legacy_ws) == []
    moved = _database_state(pg_dsn, legacy_ws)
    assert _same(files, moved)
    assert {r.seq for r in moved.checkpoints.values()} == {1}
    assert "drive it with `codeagent worker --queue DSN`" in (
        state_elsewhere(legacy_ws) or ""
    )  # `run` refuses
    assert "9 unfinished todos: queued a drain" in applied.stdout

    info = json.loads(codeagent("migrate", "status", "-w", ws, "--json").stdout)
    assert info["store"]["kind"] == "postgresql" and info["store"]["workspace_id"]
    assert info["format"].startswith("in PostgreSQL (")
    status = codeagent("status", "-w", ws, "--json")
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["total"] == 12 and doc["counts"]["done"] == 3  # read from the database
    assert doc["state_format"]["store"]["kind"] == "postgresql"
    assert "state format:  in PostgreSQL" in codeagent("status", "-w", ws).stdout

    verified = codeagent("migrate", "verify", "-w", ws)
    assert verified.returncode == 0, verified.stderr
    assert "the database holds exactly what the files held" in verified.stdout
    refused = codeagent("migrate", "apply", "-w", ws)
    assert refused.returncode == 2 and "its state lives in PostgreSQL" in refused.stderr
    again = codeagent("migrate", "apply", "-w", ws, "--to", "postgres", pg_dsn)
    assert again.returncode == 0 and "nothing to do" in again.stdout

    plan_back = codeagent("migrate", "plan", "-w", ws, "--to", "files")
    assert plan_back.returncode == 0, plan_back.stderr
    assert "write      .agent/checkpoints/t-0004.json  (v2 (seq 1), stage edited)" in plan_back.stdout
    back = codeagent("migrate", "apply", "-w", ws, "--to", "files")
    assert back.returncode == 0, back.stderr
    assert _workspace_rows(pg_dsn) == 0 and not (legacy_ws / layout.STORE).exists()
    assert _same(files, postgres.read_file_state(legacy_ws))
    assert json.loads((legacy_ws / layout.MARKER).read_text())["format"] == 2
    backups = json.loads(codeagent("migrate", "status", "-w", ws, "--json").stdout)["backups"]
    assert [b["op"] for b in backups] == ["to-postgres", "to-files"] and all(b["intact"] for b in backups)
    assert (legacy_ws / layout.BACKUPS / backups[1]["name"] / postgres.DATABASE_DOCUMENT).is_file()

    assert codeagent("migrate", "verify", "-w", ws).returncode == 0
    assert codeagent("migrate", "rollback", "-w", ws).returncode == 0  # the file format, back to legacy
    assert state_bytes(legacy_ws) == before  # byte for byte what the legacy loop had written


def test_rollback_of_a_move_is_the_way_back(legacy_ws: Path, pg_dsn: str) -> None:
    files = _files_state(legacy_ws)
    assert postgres.to_postgres(legacy_ws, pg_dsn).ok
    rolled = migrate("rollback", "-w", str(legacy_ws))
    assert rolled.returncode == 0, rolled.stderr
    assert "moved back to files" in rolled.stdout and "rollback` again" in rolled.stdout
    assert _same(files, postgres.read_file_state(legacy_ws)) and _workspace_rows(pg_dsn) == 0


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--to", "postgres", "not a dsn"], 2, "the DSN 'not a dsn' is not valid"),
        (
            ["--to", "postgres", UNREACHABLE],
            1,
            "cannot use the database postgresql://agent:***@127.0.0.1:1/nowhere",
        ),
        (["--to", "postgres"], 2, "--to postgres needs the database's DSN"),
        (["--to", "sideways"], 2, "--to must be 'postgres' or 'files'"),
        (["--to", "files"], 0, "already: nothing to do"),
    ],
)
def test_bad_dsn_or_no_database_is_one_line_and_changes_nothing(
    legacy_ws: Path, args: list[str], code: int, message: str
) -> None:
    tree = tree_hash(legacy_ws)
    result = migrate("apply", "-w", str(legacy_ws), *args)
    out = result.stderr if code else result.stdout
    assert result.returncode == code, (result.stdout, result.stderr)
    assert message in out and len(out.strip().splitlines()) == 1, out
    assert "s3cret" not in out
    assert tree_hash(legacy_ws) == tree


def test_to_files_with_the_database_gone(legacy_ws: Path, pg_dsn: str) -> None:
    assert postgres.to_postgres(legacy_ws, pg_dsn).ok
    tree = tree_hash(legacy_ws)
    result = migrate("apply", "-w", str(legacy_ws), "--to", "files", "--dsn", UNREACHABLE)
    assert result.returncode == 1 and "cannot use the database" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert tree_hash(legacy_ws) == tree
    verify = migrate("verify", "-w", str(legacy_ws), "--dsn", UNREACHABLE)
    assert verify.returncode == 1 and "cannot use the database" in verify.stderr


def test_nul_in_a_todo_is_refused_before_anything_changes(legacy_ws: Path, pg_dsn: str) -> None:
    path = legacy_ws / layout.TODOS
    path.write_text(path.read_text().replace("Added a changelog", "Added a\\u0000changelog"))
    tree = tree_hash(legacy_ws)
    outcome = postgres.to_postgres(legacy_ws, pg_dsn)
    assert outcome.code == engine.EXIT_BAD_STATE
    assert ".agent/todos.json: todos[0].text: contains a NUL character" in "\n".join(outcome.lines)
    assert tree_hash(legacy_ws) == tree and _workspace_rows(pg_dsn) == 0


def test_state_the_database_already_holds_is_not_overwritten(legacy_ws: Path, pg_dsn: str) -> None:
    from fleet.workspaces import write_identity

    ident = write_identity(legacy_ws)
    db = PgDatabase(pg_dsn, max_size=2).open()
    try:
        db.register(ident, legacy_ws.resolve(), "ws")
        from core_sync.pg_state import SyncPgTodoStore

        SyncPgTodoStore(db, ident).add("added through the fleet")  # `todo add --queue` before any move
    finally:
        db.close()
    before = state_bytes(legacy_ws)
    outcome = postgres.to_postgres(legacy_ws, pg_dsn)
    assert outcome.code == engine.EXIT_BAD_STATE, outcome.lines
    assert "already holds state for this workspace" in "\n".join(outcome.lines)
    assert state_bytes(legacy_ws) == before and not (legacy_ws / layout.BACKUPS).exists()
    assert not (legacy_ws / layout.STORE).exists() and not (legacy_ws / layout.STORE_JOURNAL).exists()


def test_files_written_while_in_postgres_stop_the_way_back(legacy_ws: Path, pg_dsn: str) -> None:
    assert postgres.to_postgres(legacy_ws, pg_dsn).ok
    (legacy_ws / layout.TODOS).write_text('{"version": 1, "todos": []}\n')  # `todo add` without --queue
    outcome = postgres.to_files(legacy_ws)
    assert outcome.code == engine.EXIT_BAD_STATE
    assert ".agent/todos.json exists although the state lives in PostgreSQL" in "\n".join(outcome.lines)
    problems, _ = postgres.verify_postgres(legacy_ws)
    assert any(".agent/todos.json exists" in p for p in problems)


def test_an_operator_acting_meanwhile_is_not_lost(
    legacy_ws: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry through a node's API between the read and the commit: the move back stops, nothing lost."""
    from core_sync.pg_state import SyncPgStatusStore

    assert postgres.to_postgres(legacy_ws, pg_dsn).ok
    marker = read_store_marker(legacy_ws)
    assert marker is not None
    write = postgres.write_state_files

    def write_then_operate(root: Path, state: postgres.State) -> None:
        write(root, state)
        db = PgDatabase(pg_dsn, max_size=2).open()
        try:
            SyncPgStatusStore(db, marker.workspace_id).operate(
                "cancel", ["t-0005"], source="api", loop_running=True
            )
        finally:
            db.close()

    monkeypatch.setattr(postgres, "write_state_files", write_then_operate)
    outcome = postgres.to_files(legacy_ws)
    assert outcome.code == engine.EXIT_FAILED and "the database changed" in "\n".join(outcome.lines)
    assert postgres._live_state_files(legacy_ws) == [] and (legacy_ws / layout.STORE).exists()
    monkeypatch.undo()
    assert postgres.to_files(legacy_ws).ok
    assert postgres.read_file_state(legacy_ws).status.todos["t-0005"].status.value == "cancelled"


# ----------------------------------------------------------------- faults and crashes


def _in_database(root: Path, dsn: str, files: postgres.State) -> None:
    """The move to PostgreSQL is complete: marker, no state files, no journal, the database equals the files."""
    assert (root / layout.STORE).exists() and not (root / layout.STORE_JOURNAL).exists()
    assert postgres._live_state_files(root) == []
    assert _same(files, _database_state(dsn, root))
    problems, _notes = postgres.verify_postgres(root)
    assert problems == []


def _in_files(root: Path, dsn: str, files: postgres.State) -> None:
    """The state is in the files as it was, and the database holds no workspace."""
    assert not (root / layout.STORE).exists() and not (root / layout.STORE_JOURNAL).exists()
    assert _same(files, postgres.read_file_state(root))
    assert _workspace_rows(dsn) == 0


@pytest.mark.parametrize("step", layout.PG_STEPS)
def test_injected_fault_in_a_move_to_postgres_then_rerun(
    legacy_ws: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    before, files = state_bytes(legacy_ws), _files_state(legacy_ws)
    monkeypatch.setenv(layout.FAIL_ENV, step)
    outcome = postgres.to_postgres(legacy_ws, pg_dsn)
    assert outcome.code == engine.EXIT_FAILED
    assert f"step {step!r}" in "\n".join(outcome.lines)
    if step in ("pg-marker", "pg-cleanup"):  # after the commit point: only the tidying is left
        assert (legacy_ws / layout.STORE).exists()
    else:
        assert state_bytes(legacy_ws) == before and _workspace_rows(pg_dsn) == 0
        assert not (legacy_ws / layout.STORE_JOURNAL).exists() and not (legacy_ws / layout.IDENTITY).exists()
    monkeypatch.delenv(layout.FAIL_ENV)
    assert postgres.to_postgres(legacy_ws, pg_dsn).ok
    _in_database(legacy_ws, pg_dsn, files)


@pytest.mark.parametrize("then", ["apply --to postgres", "apply --to files"])
@pytest.mark.parametrize("step", layout.PG_STEPS)
def test_killed_move_to_postgres_is_finished_or_undone(
    legacy_ws: Path, pg_dsn: str, step: str, then: str
) -> None:
    before, files = state_bytes(legacy_ws), _files_state(legacy_ws)
    env = {**os.environ, layout.KILL_ENV: step}
    killed = migrate("apply", "-w", str(legacy_ws), "--to", "postgres", pg_dsn, env=env)
    assert killed.returncode == -9, killed.stderr
    if step == "pg-backup":  # before the journal: nothing is under way, the files are the state
        assert state_elsewhere(legacy_ws) is None and state_bytes(legacy_ws) == before
    else:
        assert state_elsewhere(legacy_ws) is not None  # no loop may start on the files meanwhile
    if then == "apply --to postgres":
        rerun = migrate("apply", "-w", str(legacy_ws), "--to", "postgres", pg_dsn)
        assert rerun.returncode == 0, rerun.stderr
        assert step == "pg-backup" or "interrupted move to PostgreSQL" in rerun.stdout
        _in_database(legacy_ws, pg_dsn, files)
    else:
        rerun = migrate("apply", "-w", str(legacy_ws), "--to", "files", "--dsn", pg_dsn)
        assert rerun.returncode == 0, rerun.stderr
        if step in ("pg-marker", "pg-cleanup"):  # it had moved: it comes back (v2 checkpoints)
            _in_files(legacy_ws, pg_dsn, files)
        else:  # undone: the files never moved, byte for byte
            assert state_bytes(legacy_ws) == before and _workspace_rows(pg_dsn) == 0
            assert state_elsewhere(legacy_ws) is None and not (legacy_ws / layout.IDENTITY).exists()


@pytest.mark.parametrize("then", ["apply --to files", "apply --to postgres"])
@pytest.mark.parametrize("step", layout.FILES_STEPS)
def test_killed_move_back_to_files_is_finished_or_undone(
    legacy_ws: Path, pg_dsn: str, step: str, then: str
) -> None:
    files = _files_state(legacy_ws)
    assert postgres.to_postgres(legacy_ws, pg_dsn).ok
    env = {**os.environ, layout.KILL_ENV: step}
    killed = migrate("apply", "-w", str(legacy_ws), "--to", "files", env=env)
    assert killed.returncode == -9, killed.stderr
    assert state_elsewhere(legacy_ws) is not None
    committed = step in ("files-forget", "files-marker")
    if then == "apply --to files":
        rerun = migrate("apply", "-w", str(legacy_ws), "--to", "files", "--dsn", pg_dsn)
        assert rerun.returncode == 0, rerun.stderr
        _in_files(legacy_ws, pg_dsn, files)
    else:
        rerun = migrate("apply", "-w", str(legacy_ws), "--to", "postgres", pg_dsn)
        assert rerun.returncode == 0, rerun.stderr
        if committed:  # the files had become the state: the move to PostgreSQL starts again from them
            assert "finished an interrupted move back to files" in rerun.stdout
        elif step == "files-backup":  # before the journal: nothing was under way
            assert "nothing to do" in rerun.stdout
        else:
            assert "undid an interrupted move back to files" in rerun.stdout
        _in_database(legacy_ws, pg_dsn, files)
