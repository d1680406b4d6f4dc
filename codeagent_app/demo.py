"""``codeagent demo``: the sample workspace, the embedded stub LLM and a loop, end to end."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from codeagent.models import StatusFile, Todo, TodoStatus


def summary_table(todos: list[Todo], status: StatusFile, title: str) -> Table:
    """A table of every todo: id, text, status, commit, seconds it took."""
    table = Table(title=title)
    table.add_column("todo")
    table.add_column("text", overflow="fold")
    table.add_column("status")
    table.add_column("commit")
    table.add_column("seconds", justify="right")
    for todo in todos:
        state = status.todos.get(todo.id)
        if state is None:
            table.add_row(todo.id, todo.text, "pending", "", "")
            continue
        seconds = ""
        if state.started_at and state.finished_at:
            seconds = f"{(state.finished_at - state.started_at).total_seconds():.3f}"
        colour = {TodoStatus.DONE: "green", TodoStatus.FAILED: "red"}.get(state.status, "yellow")
        table.add_row(
            todo.id,
            todo.text,
            f"[{colour}]{state.status.value}[/{colour}]",
            (state.commit or "")[:10],
            seconds,
        )
    return table


def run_demo(workspace: Path | None = None, console: Console | None = None, loop: str = "legacy") -> int:
    """Create the sample workspace, run a loop on it until idle; 0 when every todo is done.

    The sample configures no LLM, so the loop starts the embedded stub (one line says where).
    """
    from codeagent_app.runner import run_workspace
    from codeagent_app.sample import create_sample_workspace
    from legacy.status import StatusStore

    console = console or Console()
    dest = workspace or Path(tempfile.mkdtemp(prefix="codeagent-demo-")) / "workspace"
    dest = dest.expanduser().resolve()
    todos = create_sample_workspace(dest)
    console.print(f"sample workspace: {dest} ({len(todos)} todos)")
    started = time.perf_counter()
    run_workspace(dest, until_idle=True, loop=loop)
    wall = time.perf_counter() - started
    status = StatusStore(dest).load()
    console.print(summary_table(todos, status, title=f"codeagent demo ({loop} loop)"))
    done = sum(1 for t in todos if (s := status.todos.get(t.id)) and s.status is TodoStatus.DONE)
    console.print(f"{done}/{len(todos)} todos done in {wall:.2f} s; workspace kept at {dest}")
    return 0 if done == len(todos) else 1
