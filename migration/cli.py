"""``codeagent migrate plan|apply|verify|rollback|status|next``: the migration script's command line.

Exit codes: 0 done (or nothing to do), 1 the operation failed and the
workspace was left as it was, 2 bad state found (nothing changed) or a gate
of ``next`` failed, 3 a running loop holds the workspace.
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


def _emit(lines: list[str], code: int) -> None:
    for line in lines:
        typer.echo(line, err=code != 0)
    raise typer.Exit(code)


@migrate_app.command("plan")
def plan_cmd(workspace: WorkspaceOpt = Path(".")) -> None:
    """Dry run: what apply would change, file by file, with counts. Changes nothing.

    Exits 2 when a file has problems (apply would stop), 0 otherwise.
    """
    from migration import layout
    from migration.survey import make_plan, plan_counts, survey

    if not (workspace / STATE_DIR).is_dir():
        _emit([f"{workspace} has no {STATE_DIR}/ directory: not a Code Agent workspace"], 2)
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
) -> None:
    """Back up, convert to the new format atomically, verify; restore and fail on any problem."""
    from migration.engine import apply

    outcome = apply(workspace, quarantine=quarantine)
    _emit(outcome.lines, outcome.code)


@migrate_app.command("verify")
def verify_cmd(workspace: WorkspaceOpt = Path(".")) -> None:
    """Check that the new readers see exactly what the legacy readers see."""
    from migration.verify import verify_workspace

    problems, notes = verify_workspace(workspace)
    if problems:
        _emit(["verification failed:", *(f"  {p}" for p in problems), *notes], 1)
    _emit([*notes, "verified: no differences"], 0)


@migrate_app.command("rollback")
def rollback_cmd(workspace: WorkspaceOpt = Path(".")) -> None:
    """Convert the current state back to the legacy format (keeps all progress)."""
    from migration.engine import rollback

    outcome = rollback(workspace)
    _emit(outcome.lines, outcome.code)


@migrate_app.command("status")
def status_cmd(
    workspace: WorkspaceOpt = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Which format the workspace is in, when it was migrated, the backups there."""
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
