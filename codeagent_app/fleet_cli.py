"""``codeagent worker`` and ``codeagent queue status``: the fleet's command line (see ``fleet.py``)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from fleet.pools import QUEUE_POOL_MAX, STATE_POOL_DEFAULT

queue_app = typer.Typer(no_args_is_help=True, help="The fleet's job queue in PostgreSQL.")

QueueOpt = Annotated[
    str,
    typer.Option("--queue", help="PostgreSQL DSN of the fleet (e.g. postgresql://user@host:5432/db)."),
]


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"codeagent: error: {message}", err=True)
    raise typer.Exit(code)


def _database_errors() -> tuple[type[BaseException], ...]:
    import psycopg

    from codeagent.errors import AgentError

    return (AgentError, psycopg.Error, OSError)


def worker(
    queue: QueueOpt,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Workspaces this worker drains at once.")
    ] = 4,
    llm_url: Annotated[
        str | None, typer.Option("--llm-url", help="LLM endpoint for workspaces that configure none.")
    ] = None,
    flags: Annotated[
        Path | None,
        typer.Option("--flags", help="One flag file for every workspace (default: each one's own)."),
    ] = None,
    stalled_after: Annotated[
        float,
        typer.Option(
            "--stalled-after",
            min=1.0,
            help="Seconds without a heartbeat after which a worker's drains move to another worker.",
        ),
    ] = 10.0,
    db_connections: Annotated[
        int,
        typer.Option(
            "--db-connections",
            min=1,
            help="Most connections of the worker's state pool (the queue's own pool adds up to"
            f" {QUEUE_POOL_MAX}); PostgreSQL's max_connections bounds the fleet's sum.",
        ),
    ] = STATE_POOL_DEFAULT,
) -> None:
    """Take workspace drains from the fleet's queue and drive them with the async core (until SIGTERM)."""
    from codeagent_app.fleet import run_worker

    try:
        asyncio.run(
            run_worker(
                queue,
                concurrency=concurrency,
                llm_url=llm_url,
                flags=flags,
                stalled_after=stalled_after,
                db_connections=db_connections,
            )
        )
    except _database_errors() as exc:
        _fail(str(exc))


@queue_app.command("status")
def status(
    queue: QueueOpt,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Workers with their last heartbeat, and drains per workspace and status."""
    from rich.console import Console
    from rich.table import Table

    from codeagent_app.fleet import queue_status

    try:
        report = asyncio.run(queue_status(queue))
    except _database_errors() as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    console = Console()
    workers = Table(
        title=f"workers (stalled after {report['stalled_after_seconds']:g} s without a heartbeat)"
    )
    for column in ("id", "last heartbeat", "seconds since"):
        workers.add_column(column)
    for row in report["workers"]:
        workers.add_row(str(row["id"]), row["last_heartbeat"], f"{row['seconds_since']:.1f}")
    console.print(workers)
    jobs = Table(title="workspace drains")
    for column in ("workspace", "path", "status", "count"):
        jobs.add_column(column)
    for row in report["jobs"]:
        jobs.add_row(row["workspace"], row["path"] or "?", row["status"], str(row["count"]))
    console.print(jobs)
