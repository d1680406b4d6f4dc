"""Moving a workspace's state between its files and PostgreSQL: ``migrate plan|apply --to postgres DSN|files``.

Files stay the embedded default; a fleet (``codeagent worker --queue DSN``)
keeps the state of its workspaces in PostgreSQL (``core_sync/pg_state.py``,
the sync twin of the stores the workers use). Both moves hold the workspace
(``.agent/agent.lock``: refused while a loop or a fleet worker drives it) and
check the database before they change anything: a bad DSN or a database that
does not answer is one line, and nothing changes.

To PostgreSQL (:func:`to_postgres`):

1. survey the files with the legacy readers, as the file-format migration does
   (a problem stops everything; ``--quarantine`` sets bad checkpoint files
   aside); legacy checkpoints become v2 with ``seq`` 1, v2 ones keep theirs;
2. refuse when the database already holds state for this workspace (or knows
   its id at another path, or another workspace at its path);
3. back up the state files to ``.agent/backup/<time>/`` (sha256 manifest);
4. journal the move (``.agent/store-journal.json``);
5. give the workspace its fleet id (``.agent/workspace.json``) and register it;
6. copy todos (ids and order), status (todo states, agent state, operations)
   and checkpoints in ONE transaction (``PgDatabase.replace_state``);
7. read everything back through the PostgreSQL stores and compare it, field
   by field and timestamps included, with what the files said;
8. write ``.agent/store.json``: the commit point;
9. remove ``.agent/todos.json``, ``status.json``, ``checkpoints/`` and
   ``format.json`` (they stay in the backup), so that nothing takes them for
   the live state; then drop the journal.

Back to files (:func:`to_files`, the DSN from ``--dsn`` or else the marker):
read everything through the PostgreSQL stores; check the identity file is
the database's workspace; back it up as ``database.json`` in a new backup; journal;
write the files in the new format (what the ``core_sync`` stores write: v2
checkpoints); verify them with the ``core_sync`` readers against the
database; remove the workspace's rows only while they still hold exactly that
(``PgDatabase.forget_unchanged``, under the row lock, so an operator's retry
through a node's API is never lost): the commit point; then write
``.agent/format.json`` and remove ``.agent/store.json`` and the journal.

A move interrupted anywhere (even by SIGKILL) is finished or undone by the
next ``apply --to postgres`` or ``apply --to files`` (:func:`recover_move`):
before its commit point the side it started from is still the state and the
copy is discarded; after it, the tidying is finished.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from codeagent.errors import AgentError, StateFileError
from codeagent.models import StatusFile, Todo, TodoFile, dump_json, utcnow
from codeagent.paths import STATE_DIR
from codeagent.state_v2 import CheckpointV2
from core_sync.checkpoints import SyncCheckpointJsonStore
from core_sync.pg_state import (
    PgDatabase,
    SyncPgCheckpointStore,
    SyncPgStatusStore,
    SyncPgTodoStore,
    UnknownWorkspace,
)
from core_sync.status import SyncStatusJsonStore
from core_sync.todos import SyncTodoJsonStore
from fleet.workspaces import read_identity, write_identity
from migration import layout
from migration.backup import create_backup, list_backups, prune_unfinished, state_files
from migration.engine import (
    EXIT_BAD_STATE,
    EXIT_FAILED,
    EXIT_OK,
    Outcome,
    _exclusive,
    _Refused,
    _write_marker,
    not_a_workspace,
)
from migration.store import (
    POSTGRESQL,
    StoreMarker,
    display_dsn,
    read_store_journal,
    read_store_marker,
    remove_store_journal,
    remove_store_marker,
    same_database,
    storable_dsn,
    write_store_journal,
    write_store_marker,
)
from migration.survey import Problem, Survey, survey
from migration.verify import Sides, diff

#: Seconds to wait for the database to answer before saying it does not.
CONNECT_TIMEOUT = 10
#: What the database held, in the backup of a move back to files (beside the backup's ``.agent/``).
DATABASE_DOCUMENT = "database.json"

TO_DATABASE = Sides(
    missing="missing in the database",
    extra="in the database only",
    differ="the files say {expected!r}, the database says {actual!r}",
)
TO_FILES = Sides(
    missing="missing in the files",
    extra="in the files only",
    differ="the database says {expected!r}, the files say {actual!r}",
)

_STILL_FILES = "the files are still the workspace's state"
_STILL_DATABASE = "the state is still in PostgreSQL"


# ----------------------------------------------------------------- the state, whichever store holds it


@dataclass(slots=True)
class State:
    """A workspace's todos, status and checkpoints (v2, by todo id), as one store answers them."""

    todos: list[Todo]
    status: StatusFile
    checkpoints: dict[str, CheckpointV2]
    #: ``False`` when no status file recorded an agent state (the readers then make up a fresh one).
    agent_recorded: bool = True

    def counts(self) -> dict[str, int]:
        """How many of each thing (the plan's and the report's counts)."""
        return {
            "todos": len(self.todos),
            "todo states": len(self.status.todos),
            "agent state": 1,
            "operations": len(self.status.operations),
            "checkpoints": len(self.checkpoints),
        }

    def summary(self) -> str:
        """``12 todos, 12 todo states, 1 agent state, 2 operations, 4 checkpoints``."""
        return ", ".join(f"{n} {name}" for name, n in self.counts().items())

    @property
    def empty(self) -> bool:
        """Nothing but (perhaps) an agent state: no todo, todo state, operation or checkpoint."""
        return not (self.todos or self.status.todos or self.status.operations or self.checkpoints)


def state_from_survey(found: Survey) -> State:
    """What the files say, as the legacy readers read them (legacy checkpoints as v2, ``seq`` 1)."""
    return State(
        todos=list(found.todos or []),
        status=found.status if found.status is not None else StatusFile(),
        checkpoints={todo_id: entry.record for todo_id, entry in sorted(found.checkpoints.items())},
        agent_recorded=(found.root / layout.STATUS).exists(),
    )


def _read_state(todos: Any, status: Any, checkpoints: Any) -> State:
    """Everything one set of stores answers, through the store protocols."""
    records: dict[str, CheckpointV2] = {}
    for todo_id in checkpoints.list_ids():
        record = checkpoints.load_versioned(todo_id)
        if record is not None:
            records[todo_id] = record
    return State(todos=todos.load(), status=status.load(), checkpoints=records)


def read_database_state(db: PgDatabase, workspace_id: str) -> State:
    """What the PostgreSQL stores answer for the workspace."""
    return _read_state(
        SyncPgTodoStore(db, workspace_id),
        SyncPgStatusStore(db, workspace_id),
        SyncPgCheckpointStore(db, workspace_id),
    )


def read_file_state(root: Path) -> State:
    """What the new file stores (``core_sync``) answer for the workspace."""
    return _read_state(SyncTodoJsonStore(root), SyncStatusJsonStore(root), SyncCheckpointJsonStore(root))


def compare_states(expected: State, actual: State, sides: Sides) -> list[str]:
    """Every difference, by field (empty: the same todos, states, operations and checkpoints)."""
    problems: list[str] = []
    expected_ids = [t.id for t in expected.todos]
    actual_ids = [t.id for t in actual.todos]
    if expected_ids != actual_ids:
        problems.append(
            f"todos (ids in order): {sides.differ.format(expected=expected_ids, actual=actual_ids)}"
        )
    else:
        problems += diff(
            [t.model_dump(mode="json") for t in expected.todos],
            [t.model_dump(mode="json") for t in actual.todos],
            "todos",
            sides=sides,
        )
    expected_status = expected.status.model_dump(mode="json")
    actual_status = actual.status.model_dump(mode="json")
    if not (expected.agent_recorded and actual.agent_recorded):  # a made-up agent state on one side
        expected_status.pop("agent", None)
        actual_status.pop("agent", None)
    problems += diff(expected_status, actual_status, "status", sides=sides)
    problems += diff(
        {k: v.model_dump(mode="json") for k, v in expected.checkpoints.items()},
        {k: v.model_dump(mode="json") for k, v in actual.checkpoints.items()},
        "checkpoints",
        sides=sides,
    )
    return problems


def _nul_fields(value: Any, where: str) -> Iterator[str]:
    if isinstance(value, str):
        if "\x00" in value:
            yield where
    elif isinstance(value, dict):
        for key, item in value.items():
            sub = f"{where}.{key}" if where else str(key)
            if "\x00" in str(key):
                yield sub
            yield from _nul_fields(item, sub)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nul_fields(item, f"{where}[{index}]")


def _nul_problems(found: Survey) -> list[Problem]:
    """Text PostgreSQL cannot store (``\\u0000`` in a JSON string), by file and field."""
    message = "contains a NUL character (\\u0000), which PostgreSQL cannot store"
    problems: list[Problem] = []
    documents: list[tuple[str, str, Any]] = []
    if found.todos is not None:
        documents.append((layout.TODOS, "todos", [t.model_dump(mode="json") for t in found.todos]))
    if found.status is not None:
        documents.append((layout.STATUS, "", found.status.model_dump(mode="json")))
    for entry in found.checkpoints.values():
        documents.append((f"{layout.CHECKPOINTS}/{entry.name}", "", entry.record.model_dump(mode="json")))
    for rel, where, doc in documents:
        problems += [Problem(rel, message, field) for field in _nul_fields(doc, where)]
    return problems


def survey_for_postgres(root: Path) -> Survey:
    """The file-format migration's survey, plus what PostgreSQL cannot hold."""
    found = survey(root)
    found.problems += _nul_problems(found)
    return found


def _check_survey(found: Survey, quarantine: bool) -> None:
    if found.blocking or (found.problems and not quarantine):
        hint = [] if found.blocking else ["use --quarantine to move these files aside into the backup"]
        raise _Refused(
            EXIT_BAD_STATE,
            ["stopped before changing anything:", *(f"  {p}" for p in found.problems), *hint],
        )


def _live_state_files(root: Path) -> list[str]:
    """State files in ``.agent/`` (none should be there while the state lives in PostgreSQL)."""
    found = [rel for rel in (layout.TODOS, layout.STATUS, layout.MARKER) if (root / rel).exists()]
    directory = root / layout.CHECKPOINTS
    if directory.is_dir() and any(directory.iterdir()):
        found.append(f"{layout.CHECKPOINTS}/")
    return found


# ----------------------------------------------------------------- the database


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_dsn(dsn: str) -> None:
    """Exit 2 for a DSN that does not parse (naming it, password hidden)."""
    from psycopg.conninfo import conninfo_to_dict

    if not dsn.strip():
        raise _Refused(EXIT_BAD_STATE, ["no DSN given: --to postgres postgresql://user@host:5432/db"])
    try:
        conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        raise _Refused(
            EXIT_BAD_STATE,
            [f"the DSN {display_dsn(dsn)!r} is not valid: {_one_line(exc)}; nothing was changed"],
        ) from exc


def _probe(dsn: str, *, hint: str = "") -> None:
    """Exit 1 unless the database answers (one line naming the DSN and what is wrong)."""
    try:
        with psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        raise _Refused(
            EXIT_FAILED,
            [f"cannot use the database {display_dsn(dsn)}{hint}: {_one_line(exc)}; nothing was changed"],
        ) from exc


@contextmanager
def _database(dsn: str) -> Iterator[PgDatabase]:
    """A small pool on the database (its tables are not created: call ``open()`` for that)."""
    db = PgDatabase(dsn, min_size=1, max_size=2)
    try:
        db.pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        yield db
    finally:
        db.close()


def _tables_exist(db: PgDatabase) -> bool:
    with db.pool.connection() as conn:
        row = conn.execute("SELECT to_regclass('codeagent_workspaces') IS NOT NULL").fetchone()
    return bool(row and row[0])


def _server_version(db: PgDatabase) -> str:
    with db.pool.connection() as conn:
        number = conn.info.server_version
    return f"{number // 10000}.{number % 10000}" if number >= 100000 else str(number)


def _registered(db: PgDatabase, workspace_id: str) -> bool:
    try:
        db.workspace_path(workspace_id)
    except UnknownWorkspace:
        return False
    return True


def _preflight(db: PgDatabase, root: Path) -> tuple[str | None, list[str]]:
    """The workspace's fleet id (``None``: it has none yet), and why the move must not happen."""
    try:
        ident = read_identity(root)
    except StateFileError as exc:
        return None, [f"{exc} (remove it to give the workspace a new fleet id)"]
    if not _tables_exist(db):
        return ident, []
    problems: list[str] = []
    registered = {i: p for i, p, _label in db.workspaces()}
    if ident is not None and ident in registered and registered[ident] != str(root):
        problems.append(
            f"{layout.IDENTITY} names workspace {ident}, which the database knows at {registered[ident]}:"
            f" is this a copy of that workspace? (remove {layout.IDENTITY} to give this one its own id)"
        )
    for other, path in registered.items():
        if path == str(root) and other != ident:
            problems.append(
                f"the database has another workspace ({other}) registered at {root};"
                f" its {layout.IDENTITY} is {'missing' if ident is None else ident}"
            )
    if ident is not None and ident in registered and not problems:
        held = read_database_state(db, ident)
        if not held.empty:
            problems.append(
                f"the database already holds state for this workspace ({ident}: {held.summary()}),"
                " added since it joined the fleet (codeagent todo add --queue?): refusing to overwrite it"
            )
    return ident, problems


def _identity_problems(db: PgDatabase, root: Path, workspace_id: str) -> list[str]:
    """Why the workspace here is not the database's ``workspace_id`` (empty: it is)."""
    problems: list[str] = []
    try:
        found = read_identity(root)
    except StateFileError as exc:
        found = None
        problems.append(str(exc))
    else:
        if found != workspace_id:
            problems.append(
                f"{layout.IDENTITY} says {found or 'nothing'}, {layout.STORE} says {workspace_id}"
            )
    try:
        path = db.workspace_path(workspace_id)
    except UnknownWorkspace:
        problems.append(f"the database has no workspace {workspace_id}: is this the fleet's database?")
    else:
        if path != str(root):
            problems.append(f"the database has workspace {workspace_id} at {path}, not at {root}")
    return problems


def _now() -> str:
    return utcnow().isoformat().replace("+00:00", "Z")


def _guard(op: str, unchanged: str, body: Callable[[], list[str]]) -> Outcome:
    """Run ``body``; a failure (already undone) becomes exit 1 with the reason."""
    try:
        return Outcome(EXIT_OK, body())
    except _Refused:
        raise
    except (AgentError, OSError, psycopg.Error, layout.InjectedFault) as exc:
        return Outcome(EXIT_FAILED, [f"{op} failed: {_one_line(exc)}", f"nothing was changed: {unchanged}"])


def _undo_or_say(op: str, exc: BaseException, undo: Callable[[], None], unchanged: str) -> None:
    """Undo after ``exc``; when the undo fails too, say what is left (the journal finishes it later)."""
    try:
        undo()
    except Exception as undo_exc:
        raise _Refused(
            EXIT_FAILED,
            [
                f"{op} failed: {_one_line(exc)}",
                f"undoing it failed too: {_one_line(undo_exc)}",
                f"{unchanged}; the next `apply --to postgres` or `apply --to files` finishes"
                f" the undo ({layout.STORE_JOURNAL} kept)",
            ],
        ) from exc


def _marker(root: Path) -> StoreMarker | None:
    try:
        return read_store_marker(root)
    except StateFileError as exc:
        raise _Refused(EXIT_BAD_STATE, [f"refused: {exc}"]) from exc


def _line(action: str, path: str, detail: str) -> str:
    return f"{action:<10} {path}  ({detail})"


# ----------------------------------------------------------------- files -> PostgreSQL


def to_postgres(root: Path, dsn: str, *, quarantine: bool = False) -> Outcome:
    """Move the workspace's state into the database at ``dsn`` (see the module docstring)."""
    root = Path(root).resolve()
    if (refused := not_a_workspace(root)) is not None:
        return refused
    try:
        _check_dsn(dsn)
        already, pending = _marker(root), read_store_journal(root)
        if pending is None and already is None:
            _check_survey(survey_for_postgres(root), quarantine)  # before the lock file is created
        _probe(dsn)
    except _Refused as exc:
        return Outcome(exc.code, exc.lines)

    def work() -> Outcome:
        lines = recover_move(root, dsn)
        marker = _marker(root)
        if marker is not None:
            if same_database(marker.dsn, dsn):
                return Outcome(
                    EXIT_OK,
                    [*lines, f"already in {marker.describe()} since {marker.moved_at}: nothing to do"],
                )
            raise _Refused(
                EXIT_BAD_STATE,
                [
                    *lines,
                    f"refused: the state lives in {marker.describe()}, not in {display_dsn(dsn)};"
                    " bring it back with `apply --to files` first",
                ],
            )
        found = survey_for_postgres(root)
        _check_survey(found, quarantine)
        outcome = _guard("apply --to postgres", _STILL_FILES, lambda: _to_postgres_steps(root, dsn, found))
        outcome.lines[:0] = lines
        return outcome

    outcome = _exclusive(root, work)
    finishing = pending is not None and pending.get("op") == "to-postgres"
    moved = read_store_marker(root) if outcome.ok and (already is None or finishing) else None
    if moved is not None:  # now that the workspace is free again for the worker that takes the drain
        outcome.lines.append(ask_for_drain(dsn, root, moved.workspace_id))
    return outcome


def ask_for_drain(dsn: str, root: Path, workspace_id: str) -> str:
    """Queue a drain of a workspace just moved, when it has unfinished todos; what happened, as one line.

    Without it the fleet would leave them waiting until the next todo is added.
    Asked once the workspace is no longer held, so that the worker taking the
    job can hold it. A failure here changes nothing of the move: it is said.
    """
    import asyncio

    from codeagent.models import pending_todos

    unfinished: int | None = None
    try:
        with _database(dsn) as db:
            todos = SyncPgTodoStore(db, workspace_id).load()
            unfinished = len(pending_todos(todos, SyncPgStatusStore(db, workspace_id).load()))
        if not unfinished:
            return "no unfinished todo: no drain queued (`codeagent todo add --queue DSN` queues one)"
        import fleet.queue  # noqa: F401  (procrastinate takes a second or more to import: not on the loop)

        queued = asyncio.run(_defer_drain(dsn, workspace_id))
    except Exception as exc:  # best effort: the move is done and verified whatever happens here
        return (
            f"warning: {unfinished if unfinished is not None else 'the'} unfinished todos wait: no drain could"
            f" be queued ({_one_line(exc)}); `codeagent todo add --queue DSN -w {root}` queues one"
        )
    waiting = "queued a drain" if queued else "a drain was already waiting"
    return f"{unfinished} unfinished todos: {waiting}; a worker (`codeagent worker --queue DSN`) takes it"


async def _defer_drain(dsn: str, workspace_id: str) -> bool:
    from fleet.queue import FleetQueue

    queue = FleetQueue(dsn)
    async with queue.app.open_async():
        await queue.ensure_schema()
        return await queue.defer_drain(workspace_id) is not None


def _to_postgres_steps(root: Path, dsn: str, found: Survey) -> list[str]:
    expected = state_from_survey(found)
    with _database(dsn) as db:
        ident, problems = _preflight(db, root)
        if problems:
            raise _Refused(
                EXIT_BAD_STATE, ["stopped before changing anything:", *(f"  {p}" for p in problems)]
            )
        db.open()  # the fleet's tables, when the database has none yet
        backup = create_backup(root, "to-postgres", found.quarantined)
        layout.fault_point("pg-backup")
        journal: dict[str, Any] = {
            "op": "to-postgres",
            "dsn": storable_dsn(dsn),
            "backup": str(backup.relative_to(root)),
            "started_at": _now(),
            "identity_created": ident is None,
        }
        write_store_journal(root, journal)
        try:
            layout.fault_point("pg-journal")
            if ident is None:
                ident = write_identity(root)
            db.register(ident, root, root.name)
            layout.fault_point("pg-register")
            db.replace_state(ident, expected.todos, expected.status, list(expected.checkpoints.values()))
            layout.fault_point("pg-copy")
            differences = compare_states(expected, read_database_state(db, ident), TO_DATABASE)
            layout.fault_point("pg-verify")
            if differences:
                raise _Refused(
                    EXIT_FAILED,
                    [
                        "apply --to postgres failed: the database does not answer what the files said:",
                        *(f"  {d}" for d in differences),
                        f"nothing was changed: {_STILL_FILES} (backup kept)",
                    ],
                )
            marker = StoreMarker(POSTGRESQL, journal["dsn"], ident, journal["started_at"], journal["backup"])
            write_store_marker(root, marker)
        except BaseException as exc:
            _undo_or_say(
                "apply --to postgres", exc, lambda: _undo_to_postgres(root, db, journal), _STILL_FILES
            )
            raise
    try:
        layout.fault_point("pg-marker")
        removed = _finish_to_postgres(root)
    except (OSError, layout.InjectedFault) as exc:
        raise _Refused(
            EXIT_FAILED,
            [
                f"moved to PostgreSQL and verified, but tidying up failed: {_one_line(exc)}",
                "run `apply --to postgres` again to finish",
            ],
        ) from exc
    converted = sum(1 for e in found.checkpoints.values() if e.fmt == "legacy")
    return [
        f"moved to {marker.describe()}: {expected.summary()}"
        f" ({converted} checkpoints converted to v2, {len(expected.checkpoints) - converted} already v2)",
        f"backup: {journal['backup']}",
        *(f"quarantined: {rel} (kept in the backup, not moved)" for rel in found.quarantined),
        "verified: the database answers exactly what the files said (every field, timestamps included)",
        f"removed from the workspace (kept in the backup): {', '.join(removed) or 'nothing'}",
        f"the state now lives in PostgreSQL ({layout.STORE}): drive the workspace with"
        " `codeagent worker --queue DSN`; `apply --to files` brings it back",
    ]


def _finish_to_postgres(root: Path) -> list[str]:
    """After the marker: the state files leave ``.agent/`` (the backup has them); the journal goes."""
    removed = _live_state_files(root)
    for rel in (layout.TODOS, layout.STATUS, layout.MARKER):
        (root / rel).unlink(missing_ok=True)
    if (root / layout.CHECKPOINTS).exists():
        shutil.rmtree(root / layout.CHECKPOINTS)
    layout.fsync_dir(root / STATE_DIR)
    layout.fault_point("pg-cleanup")
    remove_store_journal(root)
    return removed


def _undo_to_postgres(root: Path, db: PgDatabase, journal: dict[str, Any]) -> None:
    """Before the commit point: the database lets go of what was copied; the files stay the state."""
    remove_store_marker(root)
    ident = read_identity(root)
    if ident is not None:
        db.forget(ident)
        if journal.get("identity_created"):
            (root / layout.IDENTITY).unlink(missing_ok=True)
    remove_store_journal(root)


# ----------------------------------------------------------------- PostgreSQL -> files


def to_files(root: Path, dsn: str | None = None) -> Outcome:
    """Move the workspace's state from PostgreSQL back into its files (``dsn``: else the marker's)."""
    root = Path(root).resolve()
    if (refused := not_a_workspace(root)) is not None:
        return refused
    try:
        marker = _marker(root)
        journal = read_store_journal(root)
        if marker is None and journal is None:
            return Outcome(EXIT_OK, ["the state is in the workspace's files already: nothing to do"])
        use = dsn or (marker.dsn if marker is not None else None) or str((journal or {}).get("dsn") or "")
        hint = "" if dsn else f" (the DSN {layout.STORE} records, without a password: --dsn overrides it)"
        _check_dsn(use)
        _probe(use, hint=hint)
    except _Refused as exc:
        return Outcome(exc.code, exc.lines)

    def work() -> Outcome:
        lines = recover_move(root, use)
        now = _marker(root)
        if now is None:
            return Outcome(EXIT_OK, [*lines, "the state is in the workspace's files: nothing to do"])
        outcome = _guard("apply --to files", _STILL_DATABASE, lambda: _to_files_steps(root, use, now))
        outcome.lines[:0] = lines
        return outcome

    return _exclusive(root, work)


def _database_document(dsn: str, workspace_id: str, state: State) -> bytes:
    doc = {
        "dsn": display_dsn(dsn),
        "workspace_id": workspace_id,
        "exported_at": _now(),
        "todos": [t.model_dump(mode="json") for t in state.todos],
        "status": state.status.model_dump(mode="json"),
        "checkpoints": {k: v.model_dump(mode="json") for k, v in state.checkpoints.items()},
    }
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _to_files_steps(root: Path, dsn: str, marker: StoreMarker) -> list[str]:
    ident = marker.workspace_id
    with _database(dsn) as db:
        if not _tables_exist(db):
            raise _Refused(
                EXIT_BAD_STATE,
                [f"refused: {display_dsn(dsn)} has no fleet tables: is it the fleet's database?"],
            )
        problems = _identity_problems(db, root, ident) + [
            f"{rel} exists although the state lives in PostgreSQL: something wrote it since the move"
            " (`codeagent todo add` without --queue?); move it aside, then run again"
            for rel in _live_state_files(root)
        ]
        if problems:
            raise _Refused(
                EXIT_BAD_STATE, ["stopped before changing anything:", *(f"  {p}" for p in problems)]
            )
        state = read_database_state(db, ident)
        backup = create_backup(
            root, "to-files", documents={DATABASE_DOCUMENT: _database_document(dsn, ident, state)}
        )
        layout.fault_point("files-backup")
        journal: dict[str, Any] = {
            "op": "to-files",
            "dsn": storable_dsn(dsn),
            "workspace_id": ident,
            "backup": str(backup.relative_to(root)),
            "started_at": _now(),
        }
        write_store_journal(root, journal)
        try:
            layout.fault_point("files-journal")
            write_state_files(root, state)
            layout.fault_point("files-write")
            differences = compare_states(state, read_file_state(root), TO_FILES)
            layout.fault_point("files-verify")
            if differences:
                raise _Refused(
                    EXIT_FAILED,
                    [
                        "apply --to files failed: the files do not say what the database held:",
                        *(f"  {d}" for d in differences),
                        f"nothing was changed: {_STILL_DATABASE} (backup kept)",
                    ],
                )
            if not db.forget_unchanged(ident, state.todos, state.status, list(state.checkpoints.values())):
                raise _Refused(
                    EXIT_FAILED,
                    [
                        "apply --to files failed: the database changed while the files were written"
                        " (an operator's retry or cancel through a node's API?)",
                        f"nothing was changed: {_STILL_DATABASE}; run it again",
                    ],
                )
        except BaseException as exc:
            _undo_or_say("apply --to files", exc, lambda: _undo_to_files(root, db, ident), _STILL_DATABASE)
            raise
    try:
        layout.fault_point("files-forget")
        _finish_to_files(root, journal)
    except (OSError, layout.InjectedFault) as exc:
        raise _Refused(
            EXIT_FAILED,
            [
                f"moved back to files and verified, but tidying up failed: {_one_line(exc)}",
                "run `apply --to files` again to finish",
            ],
        ) from exc
    return [
        f"moved back to files from {marker.describe()}: {state.summary()} (checkpoints in the v2 format)",
        f"backup: {journal['backup']} (what the database held: {DATABASE_DOCUMENT})",
        "verified: the files say exactly what the database held (every field, timestamps included)",
        f"the database let go of workspace {ident}; {layout.STORE} removed, {layout.MARKER} written",
    ]


def write_state_files(root: Path, state: State) -> None:
    """The state as the new file stores write it (status entries in todo-list order, then the others)."""
    layout.atomic_write(root / layout.TODOS, dump_json(TodoFile(todos=state.todos)))
    position = {todo.id: index for index, todo in enumerate(state.todos)}
    order = sorted(state.status.todos, key=lambda todo_id: (position.get(todo_id, len(position)), todo_id))
    status = state.status.model_copy(update={"todos": {k: state.status.todos[k] for k in order}})
    layout.atomic_write(root / layout.STATUS, dump_json(status))
    directory = root / layout.CHECKPOINTS
    directory.mkdir(parents=True, exist_ok=True)
    for todo_id, record in sorted(state.checkpoints.items()):
        layout.atomic_write(directory / f"{todo_id}.json", dump_json(record))


def _remove_written_files(root: Path) -> None:
    for rel in (layout.TODOS, layout.STATUS):
        (root / rel).unlink(missing_ok=True)
    if (root / layout.CHECKPOINTS).exists():
        shutil.rmtree(root / layout.CHECKPOINTS)


def _undo_to_files(root: Path, db: PgDatabase, workspace_id: str) -> None:
    """Before the commit point: the files written are discarded; the database stays the state."""
    if not _registered(db, workspace_id):  # the rows went after all: the files are the state now
        raise AgentError(
            f"the database let go of workspace {workspace_id}: the files are the state; run"
            " `apply --to files` again to finish"
        )
    _remove_written_files(root)
    remove_store_journal(root)


def _finish_to_files(root: Path, journal: dict[str, Any]) -> None:
    """After the commit point: the format marker in, the store marker and the journal out."""
    if not (root / layout.MARKER).exists():
        _write_marker(root, str(journal.get("started_at") or _now()), str(journal.get("backup") or ""))
    remove_store_marker(root)
    layout.fault_point("files-marker")
    remove_store_journal(root)


# ----------------------------------------------------------------- an interrupted move


def recover_move(root: Path, dsn: str) -> list[str]:
    """Finish or undo a move a crash interrupted (the workspace is held); what was done, as lines."""
    journal = read_store_journal(root)
    if journal is None:
        return []
    lines = [f"removed unfinished backup {name}" for name in prune_unfinished(root)]
    op = journal.get("op")
    recorded = str(journal.get("dsn") or "")
    use = recorded if recorded and not same_database(recorded, dsn) else dsn
    marker = _marker(root)
    try:
        if op == "to-postgres":
            if marker is not None:
                _finish_to_postgres(root)
                return [
                    *lines,
                    "finished an interrupted move to PostgreSQL (it had been verified and recorded)",
                ]
            with _database(use) as db:
                db.open()
                _undo_to_postgres(root, db, journal)
            return [*lines, f"undid an interrupted move to PostgreSQL: {_STILL_FILES}, as before"]
        if op == "to-files":
            if marker is None:
                _finish_to_files(root, journal)
                return [*lines, "finished an interrupted move back to files"]
            with _database(use) as db:
                db.open()
                if _registered(db, str(journal.get("workspace_id"))):
                    _remove_written_files(root)
                    remove_store_journal(root)
                    return [*lines, f"undid an interrupted move back to files: {_STILL_DATABASE}, as before"]
            _finish_to_files(root, journal)
            return [*lines, "finished an interrupted move back to files (the database had let go)"]
    except (AgentError, OSError, psycopg.Error) as exc:
        raise _Refused(
            EXIT_FAILED,
            [
                f"an interrupted move ({layout.STORE_JOURNAL}) could not be finished or undone: {_one_line(exc)}",
                "nothing else was changed; run it again once the cause is fixed",
            ],
        ) from exc
    raise _Refused(
        EXIT_BAD_STATE,
        [
            f"refused: {layout.STORE_JOURNAL} is unreadable or unknown ({op!r}); look at it and remove it by hand"
        ],
    )


# ----------------------------------------------------------------- plans (dry runs)


def plan_to_postgres(root: Path, dsn: str, *, quarantine: bool = True) -> Outcome:
    """Dry run of :func:`to_postgres`: what would move, with counts. Changes nothing, in the files or the database."""
    root = Path(root).resolve()
    if (refused := not_a_workspace(root)) is not None:
        return refused
    try:
        _check_dsn(dsn)
        lines: list[str] = []
        journal = read_store_journal(root)
        if journal is not None:
            lines.append(
                f"note: an interrupted move ({journal.get('op')}) is pending ({layout.STORE_JOURNAL});"
                " apply finishes or undoes it first"
            )
        marker = _marker(root)
        if marker is not None:
            if same_database(marker.dsn, dsn):
                return Outcome(
                    EXIT_OK,
                    [
                        *lines,
                        f"already in {marker.describe()} since {marker.moved_at}: apply would do nothing",
                    ],
                )
            return Outcome(
                EXIT_BAD_STATE,
                [
                    *lines,
                    f"the state lives in {marker.describe()}, not in {display_dsn(dsn)}: move it back first",
                ],
            )
        found = survey_for_postgres(root)
        _probe(dsn)
        with _database(dsn) as db:
            version = _server_version(db)
            tables = _tables_exist(db)
            ident, db_problems = _preflight(db, root)
    except _Refused as exc:
        return Outcome(exc.code, exc.lines)
    state = state_from_survey(found)
    lines.append(
        _line(
            "target",
            display_dsn(dsn),
            f"PostgreSQL {version}; the fleet's tables {'exist' if tables else 'will be created'};"
            " todos, status and checkpoints of this workspace in one transaction",
        )
    )
    lines.append(
        _line(
            "register",
            layout.IDENTITY,
            (f"fleet id {ident}, kept" if ident else "a new fleet id is written")
            + f"; the database records it with the path {root}",
        )
    )
    if found.todos is not None:
        lines.append(
            _line("copy", layout.TODOS, f"{len(state.todos)} todos, ids and order kept; then removed")
        )
    if found.status is not None and not (root / layout.STATUS).exists():
        lines.append(_line("copy", layout.STATUS, "absent: an empty status and the default agent state"))
    elif found.status is not None:
        states: dict[str, int] = {}
        for todo_state in state.status.todos.values():
            states[todo_state.status.value] = states.get(todo_state.status.value, 0) + 1
        detail = ", ".join(f"{n} {name}" for name, n in sorted(states.items())) or "none"
        lines.append(
            _line(
                "copy",
                layout.STATUS,
                f"{len(state.status.todos)} todo states ({detail}), the agent state,"
                f" {len(state.status.operations)} operations; then removed",
            )
        )
    for _todo_id, entry in sorted(found.checkpoints.items()):
        rel = f"{layout.CHECKPOINTS}/{entry.name}"
        stage = entry.record.stage.value
        if entry.fmt == "legacy":
            lines.append(
                _line("convert", rel, f"legacy -> v2 (seq 1), stage {stage}, into the database; then removed")
            )
        else:
            lines.append(_line("copy", rel, f"v2 (seq {entry.record.seq} kept), stage {stage}; then removed"))
    for rel in found.quarantined:
        detail = "; ".join(str(p) for p in found.problems if p.file == rel)
        lines.append(_line("quarantine" if quarantine else "blocked", rel, detail))
    if (root / layout.MARKER).exists():
        lines.append(_line("remove", layout.MARKER, "the file-format marker (in the backup)"))
    if (root / layout.CONFIG).exists():
        lines.append(_line("keep", layout.CONFIG, "the workers read the configuration from the workspace"))
    lines.append(
        _line("create", layout.STORE, '{"store": "postgresql", "dsn", "workspace_id", "moved_at", "backup"}')
    )
    backed_up = len(state_files(root))
    lines.append(_line("backup", f"{layout.BACKUPS}/<timestamp>/", f"{backed_up} files, sha256 manifest"))
    converted = sum(1 for e in found.checkpoints.values() if e.fmt == "legacy")
    lines.append(
        f"counts: {state.summary()} ({converted} checkpoints converted to v2,"
        f" {len(state.checkpoints) - converted} already v2)"
    )
    lines += [f"warning: {w}" for w in found.warnings]
    problems = [str(p) for p in found.problems] + db_problems
    if problems:
        lines.append(f"{len(problems)} problem(s); apply will stop unless they are fixed:")
        lines += [f"  {p}" for p in problems]
        if not found.blocking and not db_problems:
            lines.append("  (apply --quarantine would move the bad checkpoint files aside into the backup)")
    lines.append("dry run: nothing was changed")
    return Outcome(EXIT_BAD_STATE if problems else EXIT_OK, lines)


def plan_to_files(root: Path, dsn: str | None = None) -> Outcome:
    """Dry run of :func:`to_files`: what would come back, with counts. Changes nothing."""
    root = Path(root).resolve()
    if (refused := not_a_workspace(root)) is not None:
        return refused
    use = dsn or ""
    try:
        marker = _marker(root)
        journal = read_store_journal(root)
        if marker is None:
            if journal is not None and journal.get("op") == "to-postgres":
                return Outcome(
                    EXIT_OK,
                    [
                        f"an interrupted move to PostgreSQL is pending: apply --to files would undo it ({_STILL_FILES})"
                    ],
                )
            if journal is not None:
                return Outcome(
                    EXIT_OK, ["an interrupted move back to files is pending: apply --to files finishes it"]
                )
            return Outcome(EXIT_OK, ["the state is in the workspace's files already: apply would do nothing"])
        use = dsn or marker.dsn
        _check_dsn(use)
        _probe(use, hint="" if dsn else f" (the DSN {layout.STORE} records; --dsn overrides it)")
        with _database(use) as db:
            if not _tables_exist(db):
                return Outcome(
                    EXIT_BAD_STATE, [f"{display_dsn(use)} has no fleet tables: is it the fleet's database?"]
                )
            problems = _identity_problems(db, root, marker.workspace_id)
            state = (
                read_database_state(db, marker.workspace_id) if _registered(db, marker.workspace_id) else None
            )
    except _Refused as exc:
        return Outcome(exc.code, exc.lines)
    except (AgentError, psycopg.Error) as exc:
        return Outcome(EXIT_FAILED, [f"cannot read the state in {display_dsn(use)}: {_one_line(exc)}"])
    lines: list[str] = []
    if journal is not None:
        lines.append(
            f"note: an interrupted move ({journal.get('op')}) is pending; apply finishes or undoes it first"
        )
    lines.append(
        _line(
            "source",
            display_dsn(use),
            f"workspace {marker.workspace_id}, in PostgreSQL since {marker.moved_at}",
        )
    )
    problems += [
        f"{rel} exists although the state lives in PostgreSQL: move it aside first"
        for rel in _live_state_files(root)
    ]
    if state is not None:
        lines.append(_line("write", layout.TODOS, f"{len(state.todos)} todos, ids and order kept"))
        lines.append(
            _line(
                "write",
                layout.STATUS,
                f"{len(state.status.todos)} todo states, the agent state, {len(state.status.operations)} operations",
            )
        )
        for todo_id, record in sorted(state.checkpoints.items()):
            lines.append(
                _line(
                    "write",
                    f"{layout.CHECKPOINTS}/{todo_id}.json",
                    f"v2 (seq {record.seq}), stage {record.stage.value}",
                )
            )
    lines.append(
        _line(
            "create", layout.MARKER, '{"format": 2, "migrated_at", "backup"}: the files are in the new format'
        )
    )
    lines.append(_line("remove", layout.STORE, "the files are the state again"))
    lines.append(
        _line(
            "forget",
            f"workspace {marker.workspace_id}",
            "its rows leave the database, once the files are verified",
        )
    )
    lines.append(
        _line(
            "backup",
            f"{layout.BACKUPS}/<timestamp>/",
            f"{DATABASE_DOCUMENT} (what the database holds), sha256 manifest",
        )
    )
    if state is not None:
        lines.append(f"counts: {state.summary()}")
    if problems:
        lines.append(f"{len(problems)} problem(s); apply will stop unless they are fixed:")
        lines += [f"  {p}" for p in problems]
    lines.append("dry run: nothing was changed")
    return Outcome(EXIT_BAD_STATE if problems else EXIT_OK, lines)


# ----------------------------------------------------------------- verify, status


def verify_postgres(root: Path, dsn: str | None = None) -> tuple[list[str], list[str]]:
    """``(problems, notes)`` for a workspace whose state lives in PostgreSQL.

    The database answers for the workspace; the identity file and the
    database agree on which workspace this is (and where); every row reads back
    through the stores; no state file is left in ``.agent/`` to be taken for
    the live state; and, while the database holds exactly what the files held
    at the move, that it equals the move's backup.
    """
    root = Path(root).resolve()
    notes: list[str] = []
    journal = read_store_journal(root)
    if journal is not None:
        return [
            f"{layout.STORE_JOURNAL}: an interrupted move ({journal.get('op')}) is pending;"
            " run `apply --to postgres DSN` or `apply --to files` again"
        ], notes
    try:
        marker = _marker(root)
        if marker is None:
            return [f"{layout.STORE}: missing: the state is in the files"], notes
        use = dsn or marker.dsn
        _check_dsn(use)
        _probe(use)
    except _Refused as exc:
        return exc.lines, notes
    problems: list[str] = []
    try:
        with _database(use) as db:
            if not _tables_exist(db):
                return [f"{display_dsn(use)} has no fleet tables: is it the fleet's database?"], notes
            problems += _identity_problems(db, root, marker.workspace_id)
            state = read_database_state(db, marker.workspace_id)
    except (AgentError, psycopg.Error) as exc:
        return [*problems, f"the database's state does not read back: {_one_line(exc)}"], notes
    known = {t.id for t in state.todos}
    problems += [
        f"checkpoints.{todo_id}: checkpoint of a todo that is not in the todo list"
        for todo_id in sorted(set(state.checkpoints) - known)
    ]
    problems += [
        f"{rel} exists although the state lives in PostgreSQL (a loop on files would take it for the state)"
        for rel in _live_state_files(root)
    ]
    notes.append(f"state: in {marker.describe()}; {state.summary()} read back through the stores")
    moves = [b for b in list_backups(root) if str(b.path.relative_to(root)) == marker.backup]
    if moves:
        before = survey_for_postgres(moves[0].path)
        for rel in moves[0].quarantined:
            before.checkpoints.pop(Path(rel).stem, None)
        differences = compare_states(state_from_survey(before), state, TO_DATABASE)
        if differences:
            notes.append(
                f"the database has moved on since backup {moves[0].path.name} ({len(differences)} differences:"
                " the loops' progress); not compared with it"
            )
        else:
            notes.append(
                f"compared with backup {moves[0].path.name}: the database holds exactly what the files held"
            )
    return problems, notes


def load_todos_and_status(root: Path, dsn: str | None = None) -> tuple[list[Todo], StatusFile]:
    """The todo list and the status from the database ``.agent/store.json`` names (``codeagent status``)."""
    marker = read_store_marker(root)
    if marker is None:
        raise StateFileError(layout.STORE, "missing: the state is in the files")
    use = dsn or marker.dsn
    try:
        with psycopg.connect(use, connect_timeout=5):
            pass
        with _database(use) as db:
            return (
                SyncPgTodoStore(db, marker.workspace_id).load(),
                SyncPgStatusStore(db, marker.workspace_id).load(),
            )
    except psycopg.Error as exc:
        raise StateFileError(
            POSTGRESQL, f"cannot read the state in {display_dsn(use)}: {_one_line(exc)}"
        ) from exc
