"""``codeagent migrate plan|apply|verify|rollback|status|next``: the migration script's command line.

``plan`` and ``apply`` also move the state between the workspace's files (the
embedded default) and PostgreSQL: ``--to postgres DSN`` and ``--to files``
(``--dsn`` overrides the DSN ``.agent/store.json`` records); ``verify`` and
``rollback`` know a workspace whose state is in PostgreSQL (``rollback`` then
is ``apply --to files``). See :mod:`migration.postgres`.

Exit codes: 0 done (or nothing to do), 1 the operation failed and the
workspace was left as it was (also: the database does not answer), 2 bad
state found (nothing changed), a bad DSN or a gate of ``next`` failed, 3 a
running loop holds the workspace.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from codeagent.paths import STATE_DIR

migrate_app = typer.Typer(
    no_args_is_help=True,
    help="Move a legacy installation's state to the new format and back; stage the rollout.",
)

WorkspaceOpt = Annotated[
    Path,
    typer.Option("--workspace", "-w", help="The workspace to migrate.", file_okay=False, exists=True),
]


ToOpt = Annotated[
    str | None,
    typer.Option(
        "--to",
        metavar="postgres|files",
        help="Move the state: to PostgreSQL ('--to postgres DSN') or back to the workspace's files ('--to files').",
    ),
]
DsnArg = Annotated[
    str | None,
    typer.Argument(
        metavar="DSN",
        help="The database with --to postgres (postgresql://user@host:5432/db).",
        show_default=False,
    ),
]
DsnOpt = Annotated[
    str | None,
    typer.Option(
        "--dsn", help="The database's DSN (default: the one .agent/store.json records, without a password)."
    ),
]


def _emit(lines: list[str], code: int) -> None:
    for line in lines:
        typer.echo(line, err=code != 0)
    raise typer.Exit(code)


def _target(to: str | None, dsn_arg: str | None, dsn: str | None) -> tuple[str | None, str | None]:
    """``(postgres|files|None, the DSN given)`` from ``--to``, the positional DSN and ``--dsn``; exit 2 when wrong."""
    if dsn_arg is not None and dsn is not None and dsn_arg != dsn:
        _emit(["two different DSNs given (the argument and --dsn): give one"], 2)
    given = dsn_arg if dsn_arg is not None else dsn
    if to is None:
        if given is not None:
            _emit(["a DSN goes with --to postgres DSN (or --to files --dsn DSN)"], 2)
        return None, None
    kind = {"postgres": "postgres", "postgresql": "postgres", "pg": "postgres", "files": "files"}.get(
        to.lower()
    )
    if kind is None:
        _emit([f"--to must be 'postgres' or 'files', got {to!r}"], 2)
    if kind == "postgres" and not given:
        _emit(["--to postgres needs the database's DSN: --to postgres postgresql://user@host:5432/db"], 2)
    return kind, given


def _in_database(workspace: Path) -> bool:
    """The state lives in PostgreSQL, or a move there or back is pending."""
    from migration.store import state_elsewhere

    return state_elsewhere(workspace.resolve()) is not None


@migrate_app.command("plan")
def plan_cmd(
    workspace: WorkspaceOpt = Path("."),
    to: ToOpt = None,
    dsn_arg: DsnArg = None,
    dsn: DsnOpt = None,
) -> None:
    """Dry run: what apply would change, file by file, with counts. Changes nothing.

    With --to postgres DSN: what would move into the database (and whether it
    answers); with --to files: what would come back. Exits 2 when something
    would stop apply, 1 when the database does not answer, 0 otherwise.
    """
    from migration import layout
    from migration.survey import make_plan, plan_counts, survey

    kind, given = _target(to, dsn_arg, dsn)
    if kind is not None:
        from migration.postgres import plan_to_files, plan_to_postgres

        outcome = (
            plan_to_postgres(workspace, given or "")
            if kind == "postgres"
            else plan_to_files(workspace, given)
        )
        _emit(outcome.lines, outcome.code)
    if not (workspace / STATE_DIR).is_dir():
        _emit([f"{workspace} has no {STATE_DIR}/ directory: not a Code Agent workspace"], 2)
    if _in_database(workspace):
        from migration.store import state_elsewhere

        _emit([f"the workspace's files are not its state: {state_elsewhere(workspace.resolve())}",
               "nothing to convert in the files; `plan --to files` shows the way back"], 0)  # fmt: skip
    found = survey(workspace)
    if (workspace / layout.JOURNAL).exists():
        typer.echo(f"note: an interrupted migration is pending ({layout.JOURNAL}); apply finishes it first")
    if found.migrated and found.marker is not None:
        _emit([f"already migrated at {found.marker.get('migrated_at')}: apply would do nothing"], 0)
    changes = make_plan(found, quarantine=True)
    lines = [f"{c.action:<10} {c.path}  ({c.detail})" for c in changes]
    counts = plan_counts(changes)
    lines.append("counts: " + ", ".join(f"{n} {action}" for action, n in sorted(counts.items())))
    lines += [f"warning: {w}" for w in found.warnings]
    if found.problems:
        lines.append(f"{len(found.problems)} problem(s); apply will stop unless they are fixed:")
        lines += [f"  {p}" for p in found.problems]
        if not found.blocking:
            lines.append("  (apply --quarantine would move these files aside into the backup)")
    lines.append("dry run: nothing was changed")
    _emit(lines, 2 if found.problems else 0)


@migrate_app.command("apply")
def apply_cmd(
    workspace: WorkspaceOpt = Path("."),
    quarantine: Annotated[
        bool, typer.Option("--quarantine", help="Move bad checkpoint files aside into the backup.")
    ] = False,
    to: ToOpt = None,
    dsn_arg: DsnArg = None,
    dsn: DsnOpt = None,
) -> None:
    """Back up, convert to the new format atomically, verify; restore and fail on any problem.

    With --to postgres DSN: back up, copy the state into the database in one
    transaction, verify it through the stores, record it in .agent/store.json
    and remove the state files (kept in the backup). With --to files: the way
    back (the database's copy goes to the backup as database.json).
    """
    kind, given = _target(to, dsn_arg, dsn)
    if kind == "postgres":
        from migration.postgres import to_postgres

        outcome = to_postgres(workspace, given or "", quarantine=quarantine)
    elif kind == "files":
        if quarantine:
            _emit(["--quarantine goes with the file-format migration and --to postgres"], 2)
        from migration.postgres import to_files

        outcome = to_files(workspace, given)
    else:
        from migration.engine import apply

        outcome = apply(workspace, quarantine=quarantine)
    _emit(outcome.lines, outcome.code)


@migrate_app.command("verify")
def verify_cmd(workspace: WorkspaceOpt = Path("."), dsn: DsnOpt = None) -> None:
    """Check that the new readers see exactly what the legacy readers see.

    For a workspace whose state is in PostgreSQL: that the database answers
    for it, that its identity file is the database's workspace, that the state
    reads back through the stores, and (while nothing moved since) that it
    equals the move's backup.
    """
    from migration.verify import verify_workspace

    if _in_database(workspace):
        from migration.postgres import verify_postgres

        problems, notes = verify_postgres(workspace, dsn)
    else:
        problems, notes = verify_workspace(workspace)
    if problems:
        _emit(["verification failed:", *(f"  {p}" for p in problems), *notes], 1)
    _emit([*notes, "verified: no differences"], 0)


@migrate_app.command("rollback")
def rollback_cmd(workspace: WorkspaceOpt = Path("."), dsn: DsnOpt = None) -> None:
    """Convert the current state back to the legacy format (keeps all progress).

    When the state lives in PostgreSQL, this is `apply --to files` (the files
    come back in the new format; rollback again for the legacy one).
    """
    if _in_database(workspace):
        from migration.postgres import to_files

        outcome = to_files(workspace, dsn)
        if outcome.ok:
            outcome.lines.append("run `migrate rollback` again to go back to the legacy file format")
        _emit(outcome.lines, outcome.code)
    from migration.engine import rollback

    outcome = rollback(workspace)
    _emit(outcome.lines, outcome.code)


@migrate_app.command("status")
def status_cmd(
    workspace: WorkspaceOpt = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Which format the workspace is in (or that its state lives in PostgreSQL), since when, the backups there."""
    from migration.report import render_status, workspace_status

    info = workspace_status(workspace)
    _emit([json.dumps(info, indent=2)] if as_json else render_status(info), 0)


@migrate_app.command("next")
def next_cmd(
    workspace: WorkspaceOpt = Path("."),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the step; change nothing.")] = False,
    flags: Annotated[
        Path | None, typer.Option("--flags", help="The flag file (default: WORKSPACE/.agent/flags.toml).")
    ] = None,
) -> None:
    """Move the next component one step: legacy -> shadow -> canary 10 -> canary 50 -> new."""
    from codeagent.paths import FLAGS_RELPATH
    from feature_flags import FlagFileError
    from migration.rollout import take_next

    path = (flags or workspace / FLAGS_RELPATH).expanduser().resolve()
    try:
        step = take_next(workspace.resolve(), path, dry_run=dry_run)
    except FlagFileError as exc:
        _emit([f"error: {exc}"], 2)
    if step.component is None:
        _emit(step.reasons, 0)
    head = f"{step.component}: {step.current} -> {step.target}"
    if not step.allowed:
        _emit([f"{head}: not taken", *step.reasons], 2)
    verb = "would move (dry run)" if dry_run else "moved"
    _emit([f"{head}: {verb}", *step.reasons], 0)
