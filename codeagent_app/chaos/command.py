"""``codeagent chaos [--quick] [--out DIR] [--targets ...] [--seed N] [--kills N] [--report/--no-report]``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer


def chaos(
    quick: Annotated[
        bool, typer.Option("--quick", help="Every target, small: CI's run (about 3 minutes on 2 cores).")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Output directory for results.json (default chaos-results/<time>/)."),
    ] = None,
    targets: Annotated[
        list[str] | None,
        typer.Option(
            "--targets",
            "-t",
            help="Targets (repeatable or comma-separated): crash (= crash-legacy, crash-async, crash-worker,"
            " crash-migrate), llm, disk, soak, reload, fuzz, escapes, api, or all (the default).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every random choice of the campaign.")] = 0,
    kills: Annotated[
        int | None,
        typer.Option("--kills", min=1, help="Kills per crash target (default: 8 with --quick, else 1000)."),
    ] = None,
    report: Annotated[
        bool | None,
        typer.Option(
            "--report/--no-report",
            help="Update docs/reliability.md and docs/reliability.json (default: on for the full campaign).",
        ),
    ] = None,
) -> None:
    """The reliability campaign: kill it, starve it, feed it garbage; count what it survived."""
    from codeagent_app.chaos.report import update_report
    from codeagent_app.chaos.runner import expand, run_campaign

    try:
        chosen = expand(targets)
    except ValueError as exc:
        typer.echo(f"codeagent: error: {exc}", err=True)
        raise typer.Exit(2) from None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    directory = out or Path("chaos-results") / stamp
    results = run_campaign(
        quick=quick, out=directory, targets=chosen, seed=seed, kills=kills, echo=lambda s: typer.echo(s)
    )
    if report if report is not None else not quick:
        written = update_report(results)
        typer.echo(f"chaos: report updated: {', '.join(str(p) for p in written)}")
    typer.echo(f"chaos: results in {directory / 'results.json'} ({results['seconds']}s)")
    if not results["ok"]:
        failed = [name for name, r in results["targets"].items() if not r.get("ok")]
        typer.echo(f"chaos: FAILED: {', '.join(failed)}", err=True)
        raise typer.Exit(1)
