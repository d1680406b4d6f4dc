"""``codeagent todo add|list|show|retry|cancel``: the operator's verbs on a workspace's todo list.

Safe while a loop runs: every change goes through the stores the legacy loop
uses, which hold the same ``flock`` around each read-modify-write as both
loops do (``.agent/todos.lock``, ``.agent/status.lock``). A retried todo is
picked up by a running loop without a restart: the legacy loop at its next
poll, the async kernel at once (a retry rewrites ``.agent/requeue.json``,
which it watches). Retries and cancels are kept in the status file's
``operations``, with the status, error and commit the todo had.

Exit codes: 0 done; 1 the workspace's state does not allow it (an unknown
todo, a refused retry or cancel, an unreadable state file); 2 the command
line is wrong (each error is one line naming the argument or option).

Heavy modules are imported inside each command (``codeagent --help`` stays fast).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from codeagent.models import Operation, OperatorAction, StatusFile, Todo, TodoChange, TodoState

todo_app = typer.Typer(
    no_args_is_help=True, help="The todo list of a workspace: add, list, show, retry, cancel."
)

WorkspaceOpt = Annotated[
    Path,
    typer.Option("--workspace", "-w", help="The git workspace the agent works in.", file_okay=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]

#: How much of an error the ``todo list`` table shows (``--json`` and ``todo show`` show it all).
ERROR_WIDTH = 60
STATUS_STYLE = {
    "done": "green",
    "failed": "red",
    "running": "cyan",
    "interrupted": "yellow",
    "cancelled": "dim",
}


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``codeagent: error: MESSAGE`` (one line) on stderr and exit with ``code``."""
    typer.echo(f"codeagent: error: {' '.join(message.split())}", err=True)
    raise typer.Exit(code)


def workspace_root(workspace: Path, *, files_are_state: bool = True) -> Path:
    """The workspace directory, resolved; exits 2 naming ``--workspace`` when it does not exist.

    With ``files_are_state``, also when its state moved to PostgreSQL (the files are then not its state).
    """
    root = workspace.expanduser().resolve()
    if not root.is_dir():
        fail(f"--workspace: {workspace} does not exist or is not a directory")
    if files_are_state:
        from migration.store import state_elsewhere

        reason = state_elsewhere(root)
        if reason is not None:
            fail(f"{root}: {reason}")
    return root


def iso(moment: datetime | None) -> str | None:
    """``2024-05-01T12:00:00.123Z`` (the state files' form), or ``None``."""
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


def age(moment: datetime | None, now: datetime | None = None) -> str:
    """How long ago, in one unit: ``42s``, ``5m``, ``3h``, ``2d`` (``-`` for none)."""
    if moment is None:
        return "-"
    seconds = max(0, int(((now or datetime.now(UTC)) - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _load(root: Path) -> tuple[list[Todo], StatusFile]:
    from codeagent.errors import AgentError
    from legacy.status import StatusStore
    from legacy.todos import TodoStore

    try:
        return TodoStore(root).load(), StatusStore(root).load()
    except AgentError as exc:
        fail(str(exc), 1)


def _short(text: str | None, width: int) -> str:
    if not text:
        return "-"
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "\u2026"


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


# ----------------------------------------------------------------- add


@todo_app.command("add")
def add(
    text: Annotated[str, typer.Argument(help="What to do, in words.")],
    workspace: WorkspaceOpt = Path("."),
    file: Annotated[
        list[str] | None, typer.Option("--file", "-f", help="A file the todo concerns (repeatable).")
    ] = None,
    as_json: JsonOpt = False,
    queue: Annotated[
        str | None,
        typer.Option(
            "--queue",
            help="Add it to a fleet (PostgreSQL DSN): the state goes to the database and a worker is asked"
            " to drain the workspace (it joins the fleet on first use).",
        ),
    ] = None,
) -> None:
    """Add a todo to a workspace's todo list; print its id (or, with --json, the todo)."""
    from pydantic import ValidationError

    from codeagent.errors import AgentError, InvalidInput, WorkspaceViolation, validation_line
    from codeagent.models import check_todo_text, todo_view
    from codeagent.paths import check_relative_path
    from legacy.todos import TodoStore

    root = workspace_root(workspace, files_are_state=queue is None)
    try:
        check_todo_text(text)
        files = [check_relative_path(f) for f in file or []]
    except InvalidInput as exc:
        fail(exc.message)
    except WorkspaceViolation as exc:
        fail(f"--file: {exc}")
    try:
        todo = TodoStore(root).add(text, files) if queue is None else _add_to_fleet(queue, root, text, files)
    except ValidationError as exc:
        fail(validation_line(exc))
    except AgentError as exc:
        fail(str(exc), 1)
    if as_json:
        _print_json(todo_view(todo, None))
    else:
        typer.echo(todo.id)


def _add_to_fleet(dsn: str, root: Path, text: str, files: list[str]) -> Todo:
    import asyncio

    import psycopg

    from codeagent.errors import AgentError
    from codeagent_app.fleet import add_todo

    try:
        return asyncio.run(add_todo(dsn, root, text, files))
    except psycopg.Error as exc:
        raise AgentError(f"the fleet's database: {exc}") from exc


# ----------------------------------------------------------------- list


@todo_app.command("list")
def list_(
    workspace: WorkspaceOpt = Path("."),
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            "-s",
            help="Only todos in this status (repeatable): pending, running, done, failed,"
            " interrupted, cancelled.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every todo with its status, attempts, age, commit and error (a table, or --json)."""
    from codeagent.errors import InvalidInput
    from codeagent.models import parse_status, status_of, todo_view

    try:
        wanted = {parse_status(value, "--status") for value in status or []}
    except InvalidInput as exc:
        fail(exc.message)
    root = workspace_root(workspace)
    todos, doc = _load(root)
    rows = [
        (todo, doc.todos.get(todo.id))
        for todo in todos
        if not wanted or status_of(doc.todos.get(todo.id)) in wanted
    ]
    if as_json:
        _print_json({"todos": [todo_view(todo, state) for todo, state in rows]})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"todos of {root}", title_justify="left")
    for column in ("id", "status", "attempts", "age", "commit", "error"):
        table.add_column(column, no_wrap=True, overflow="ellipsis")
    now = datetime.now(UTC)
    for todo, state in rows:
        value = status_of(state).value
        table.add_row(
            todo.id,
            f"[{STATUS_STYLE[value]}]{value}[/]" if value in STATUS_STYLE else value,
            str(state.attempts if state else 0),
            age(todo.created_at, now),
            state.commit[:12] if state and state.commit else "-",
            _short(state.error if state else None, ERROR_WIDTH),
        )
    console = Console()
    if rows:
        console.print(table)
    else:
        console.print("no todo" + (" in that status" if wanted else ""))


# ----------------------------------------------------------------- show


def history(todo: Todo, state: TodoState | None, operations: list[Operation]) -> list[dict[str, Any]]:
    """What is known of a todo's life, oldest first: added, retried, cancelled, started, finished.

    The status file keeps each todo's latest state only, plus the operator's
    actions (with the status and error a todo had before each); so an earlier
    attempt shows as the ``retried`` entry that ended it.
    """
    events: list[tuple[datetime, dict[str, Any]]] = [(todo.created_at, {"event": "added"})]
    for op in operations:
        if op.todo_id != todo.id:
            continue
        entry: dict[str, Any] = {
            "event": "retried" if op.action == "retry" else "cancelled",
            "source": op.source,
            "previous": op.previous.value,
            "attempts": op.attempts,
        }
        if op.error:
            entry["error"] = op.error
        if op.commit:
            entry["commit"] = op.commit
        events.append((op.at, entry))
    if state is not None and state.started_at is not None:
        events.append((state.started_at, {"event": "started", "attempt": state.attempts}))
    if state is not None and state.finished_at is not None and state.status.value in ("done", "failed"):
        entry = {"event": state.status.value}
        if state.commit:
            entry["commit"] = state.commit
        if state.error:
            entry["error"] = state.error
        events.append((state.finished_at, entry))
    events.sort(key=lambda pair: pair[0])
    return [{"at": iso(at), **entry} for at, entry in events]


def _checkpoint(root: Path, todo_id: str) -> dict[str, Any] | None:
    from codeagent.errors import AgentError
    from core_sync.checkpoints import SyncCheckpointJsonStore

    try:
        checkpoint = SyncCheckpointJsonStore(root).load(todo_id)
    except AgentError as exc:
        return {"error": str(exc)}
    if checkpoint is None:
        return None
    return {
        "stage": checkpoint.stage.value,
        "updated_at": iso(checkpoint.updated_at),
        "commit": checkpoint.commit,
        "files": sorted(checkpoint.writes),
    }


def _describe(entry: dict[str, Any]) -> str:
    event = entry["event"]
    if event == "started":
        return f"started (attempt {entry['attempt']})"
    if event in ("retried", "cancelled"):
        was = entry["previous"] + (f": {entry['error']}" if entry.get("error") else "")
        return f"{event} by {entry['source']} (was {was})"
    if event == "done":
        return f"done in commit {str(entry.get('commit', '?'))[:12]}"
    if event == "failed":
        return f"failed: {entry.get('error', '')}"
    return str(event)


@todo_app.command("show")
def show(
    todo_id: Annotated[str, typer.Argument(metavar="ID", help="The todo's id (e.g. t-0003).")],
    workspace: WorkspaceOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """One todo: text, files, status, error, commit, checkpoint stage and its history as far as kept."""
    from codeagent.errors import InvalidInput
    from codeagent.models import check_todo_id, todo_view

    try:
        check_todo_id(todo_id)
    except InvalidInput as exc:
        fail(exc.message)
    root = workspace_root(workspace)
    todos, doc = _load(root)
    todo = next((t for t in todos if t.id == todo_id), None)
    if todo is None:
        fail(f"no todo {todo_id!r} in {root}", 1)
    state = doc.todos.get(todo_id)
    body = todo_view(todo, state)
    body.update(
        started_at=iso(state.started_at) if state else None,
        finished_at=iso(state.finished_at) if state else None,
        checkpoint=_checkpoint(root, todo_id),
        history=history(todo, state, doc.operations),
    )
    if as_json:
        _print_json(body)
        return
    checkpoint = body["checkpoint"]
    if checkpoint is None:
        where = "-"
    elif "error" in checkpoint:
        where = f"unreadable: {checkpoint['error']}"
    else:
        where = f"{checkpoint['stage']} ({checkpoint['updated_at']})"
    lines = [
        f"id:          {todo.id}",
        f"text:        {todo.text}",
        f"files:       {', '.join(todo.files) or '-'}",
        f"status:      {body['status']} (attempts {body['attempts']}, updated {body['updated_at']})",
        f"error:       {body['error'] or '-'}",
        f"commit:      {body['commit'] or '-'}",
        f"checkpoint:  {where}",
        "history:",
        *(f"  {entry['at']}  {_describe(entry)}" for entry in body["history"]),
    ]
    typer.echo("\n".join(lines))


# ----------------------------------------------------------------- retry and cancel


def _operate(root: Path, action: OperatorAction, todo_ids: list[str], as_json: bool) -> None:
    from codeagent.errors import AgentError, InvalidInput
    from codeagent.models import check_todo_id
    from legacy.status import StatusStore
    from legacy.todos import TodoStore
    from legacy.workspace_lock import workspace_holder

    try:
        for todo_id in todo_ids:
            check_todo_id(todo_id)
    except InvalidInput as exc:
        fail(exc.message)
    try:
        known = {todo.id for todo in TodoStore(root).load()}
    except AgentError as exc:
        fail(str(exc), 1)
    unknown = [todo_id for todo_id in todo_ids if todo_id not in known]
    if unknown:
        fail(f"no todo {', '.join(map(repr, unknown))} in {root}; nothing was changed", 1)
    holder = workspace_holder(root)
    try:
        changes = StatusStore(root).operate(action, todo_ids, source="cli", loop_running=holder is not None)
    except AgentError as exc:
        fail(str(exc), 1)
    refused = [c for c in changes if c.refused is not None]
    if as_json:
        _print_json(
            {
                "action": action,
                "changes": [c.model_dump(mode="json") for c in changes],
                "loop": holder,
            }
        )
    else:
        for change in changes:
            if change.refused is None:
                typer.echo(_change_line(change))
        for change in refused:
            typer.echo(f"codeagent: error: {change.todo_id}: cannot {action}: {change.refused}", err=True)
        if action == "retry" and any(c.changed for c in changes):
            if holder is not None:
                who = f"the {holder.get('loop', '?')} loop (pid {holder.get('pid', '?')})"
                typer.echo(f"{who} picks {'it' if len(changes) == 1 else 'them'} up", err=True)
            else:
                typer.echo(f"no loop is running; `codeagent run -w {root}` picks them up", err=True)
    if refused:
        raise typer.Exit(1)


def _change_line(change: TodoChange) -> str:
    if change.changed:
        return f"{change.todo_id}: {change.before.value} -> {change.after.value}"
    return f"{change.todo_id}: already {change.after.value}"


@todo_app.command("retry")
def retry(
    todo_ids: Annotated[
        list[str] | None, typer.Argument(metavar="ID", help="The todos to put back in the queue.")
    ] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Every failed todo.")] = False,
    workspace: WorkspaceOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Put failed, interrupted or cancelled todos back to pending (attempts kept; audited).

    Safe while a loop runs, which picks them up without a restart. Done and
    running todos are refused (exit 1) with the reason.
    """
    if failed and todo_ids:
        fail("ID and --failed: give todo ids or --failed, not both")
    if not failed and not todo_ids:
        fail("ID: name the todos to retry, or give --failed")
    root = workspace_root(workspace)
    ids = list(todo_ids or [])
    if failed:
        todos, doc = _load(root)
        ids = [t.id for t in todos if (s := doc.todos.get(t.id)) is not None and s.status.value == "failed"]
        if not ids:
            if as_json:
                from legacy.workspace_lock import workspace_holder

                _print_json({"action": "retry", "changes": [], "loop": workspace_holder(root)})
            else:
                typer.echo("no failed todo")
            return
    _operate(root, "retry", ids, as_json)


@todo_app.command("cancel")
def cancel(
    todo_ids: Annotated[list[str], typer.Argument(metavar="ID", help="The todos no loop should run.")],
    workspace: WorkspaceOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Cancel pending, failed or interrupted todos: no loop starts them ('todo retry' undoes it).

    A running todo is refused (exit 1), as is a done one. The todo stays in the
    list with the status 'cancelled'; the status file keeps who cancelled it
    and what status it had.
    """
    root = workspace_root(workspace)
    _operate(root, "cancel", list(todo_ids), as_json)
