"""``codeagent status``: what the agent on a workspace is doing, without its HTTP server.

Reads, never writes: who holds the workspace (``.agent/agent.lock``: the loop
kind and pid, or nobody), the status file (what the loop recorded, each
todo's status), the flag file and the migration's format marker. When the
state lives in PostgreSQL (``.agent/store.json``), the todos and their status
come from the database it names, and the format line says so. An unreadable
file (or a database that does not answer) is reported and the rest is still
shown (exit 1).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from codeagent_app.todo_cli import JsonOpt, WorkspaceOpt, age, iso, workspace_root

if TYPE_CHECKING:
    from codeagent.models import Todo


def _flags_summary(root: Path) -> dict[str, Any]:
    from codeagent_app.flags_cli import flags_document, flags_path

    doc = flags_document(flags_path(root, None))
    modes: dict[str, str] = {}
    for row in doc["components"]:
        mode = row["mode"]
        if mode == "canary":
            mode += f" {row['percent']:g}%"
        elif mode == "shadow":
            mode += f" (serve {row['serve']})"
        modes[row["component"]] = mode
    return {"path": doc["path"], "loop": doc["loop"], "components": modes, "error": doc["error"]}


def status_document(root: Path) -> tuple[dict[str, Any], list[str]]:
    """What ``status --json`` prints, and the problems met reading it (each naming its file)."""
    from codeagent.errors import AgentError
    from codeagent.models import StatusFile, TodoStatus, status_counts
    from legacy.status import StatusStore
    from legacy.todos import TodoStore
    from legacy.workspace_lock import workspace_holder
    from migration.report import workspace_status

    problems: list[str] = []
    holder = workspace_holder(root)
    status = StatusFile()
    todos: list[Todo] = []
    fmt = workspace_status(root)
    if fmt["store"]["kind"] == "postgresql":  # moved by `codeagent migrate apply --to postgres`
        from migration.postgres import load_todos_and_status

        try:
            todos, status = load_todos_and_status(root)
        except AgentError as exc:
            problems.append(str(exc))
    else:
        try:
            status = StatusStore(root).load()
        except AgentError as exc:
            problems.append(str(exc))
        try:
            todos = TodoStore(root).load()
        except AgentError as exc:
            problems.append(str(exc))
    running = holder is not None
    current = [todo_id for todo_id, s in status.todos.items() if s.status is TodoStatus.RUNNING]
    if running and status.agent.current_todo and status.agent.current_todo not in current:
        current.insert(0, status.agent.current_todo)
    failed = [
        (todo_id, s)
        for todo_id, s in status.todos.items()
        if s.status is TodoStatus.FAILED and s.error is not None
    ]
    last = max(failed, key=lambda pair: pair[1].finished_at or pair[1].updated_at, default=None)
    try:
        flags = _flags_summary(root)
    except (OSError, ValueError) as exc:
        problems.append(f"flags: {exc}")
        flags = None
    doc: dict[str, Any] = {
        "workspace": str(root),
        "loop": {
            "running": running,
            "kind": holder.get("loop") if holder else None,
            "pid": holder.get("pid") if holder else None,
            "since": holder.get("since") if holder else None,
        },
        "agent": status.agent.model_dump(mode="json"),
        "current": current if running else [],
        "total": len(todos),
        "counts": status_counts(todos, status),
        "last_error": (
            {
                "todo_id": last[0],
                "error": last[1].error,
                "at": iso(last[1].finished_at or last[1].updated_at),
            }
            if last is not None
            else None
        ),
        "flags": flags,
        "state_format": {"format": fmt["format"], "migrated_at": fmt["migrated_at"], "store": fmt["store"]},
        "problems": problems,
    }
    return doc, problems


def _render(doc: dict[str, Any]) -> list[str]:
    loop = doc["loop"]
    agent = doc["agent"]
    if loop["running"]:
        running = f"{loop['kind'] or '?'} loop, pid {loop['pid'] or '?'}, since {loop['since'] or '?'}"
        running += f" ({agent['state']})" if agent.get("state") else ""
    else:
        running = (
            f"not running (last recorded: {agent['state']}, {agent['loop']} loop, {agent['updated_at']})"
        )
    counts = ", ".join(f"{name} {n}" for name, n in doc["counts"].items())
    last = doc["last_error"]
    if last is None:
        last_error = "-"
    else:
        when = datetime.fromisoformat(last["at"]) if last["at"] else None
        last_error = f"{last['todo_id']} ({age(when, datetime.now(UTC))} ago): {last['error']}"
    flags = doc["flags"]
    if flags is None:
        flag_line = "unreadable"
    else:
        others = [f"{name} {mode}" for name, mode in flags["components"].items() if mode != "legacy"]
        flag_line = f"loop {flags['loop']}; " + (
            ", ".join(others) + "; others legacy" if others else "all legacy"
        )
        if flags["error"]:
            flag_line += f" (the flag file is invalid, last good flags shown: {flags['error']})"
    fmt = doc["state_format"]
    lines = [
        f"workspace:     {doc['workspace']}",
        f"loop:          {running}",
        f"current:       {', '.join(doc['current']) or '-'}",
        f"todos:         {doc['total']} ({counts})",
        f"last error:    {last_error}",
        f"flags:         {flag_line}",
        f"state format:  {fmt['format']}"
        + (f", migrated {fmt['migrated_at']}" if fmt["migrated_at"] else ""),
    ]
    return lines + [f"problem:       {p}" for p in doc["problems"]]


def status(
    workspace: WorkspaceOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """What the agent is doing: loop and pid (or not running), current todos, counts, last error, flags, format."""
    root = workspace_root(workspace, files_are_state=False)
    doc, problems = status_document(root)
    if as_json:
        typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        typer.echo("\n".join(_render(doc)))
    if problems:
        raise typer.Exit(1)
