"""``codeagent flags show|set|rollback|validate``: read and change the flag file."""

from __future__ import annotations

import json
import weakref
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from codeagent.paths import FLAGS_RELPATH
from feature_flags import (
    COMPONENTS,
    ComponentChange,
    FlagFileError,
    FlagStore,
    Mode,
    read_entries,
    read_flags,
    update_flags,
)
from feature_flags.health import read_health

flags_app = typer.Typer(no_args_is_help=True, help="Show and change the feature flags (the flag file).")

WorkspaceOpt = Annotated[
    Path,
    typer.Option("--workspace", "-w", help="Workspace whose flag file to use.", exists=True, file_okay=False),
]
FlagsOpt = Annotated[
    Path | None, typer.Option("--flags", help="The flag file (default: WORKSPACE/.agent/flags.toml).")
]


#: The flag stores this process routes by, by flag file (see :func:`register_in_force`).
_IN_FORCE: weakref.WeakValueDictionary[Path, FlagStore] = weakref.WeakValueDictionary()


def _key(path: Path) -> Path:
    """The flag file's absolute path, its last component kept (it may be a symlink being swapped)."""
    path = path.expanduser()
    return path.parent.resolve() / path.name


def register_in_force(store: FlagStore) -> None:
    """Say that this process routes by ``store``.

    :func:`flags_document` of its file then reports what ``store`` holds in
    force (the last good flags and the reason after a bad edit) instead of
    reading the file afresh, which after a bad edit would report the defaults
    while the running loop routes by the last good flags. Kept while the store
    lives (its runtime holds it).
    """
    _IN_FORCE[_key(store.path)] = store


def flags_path(workspace: Path, flags: Path | None) -> Path:
    """The flag file a command acts on."""
    return (flags or workspace / FLAGS_RELPATH).expanduser().resolve()


def _fail(message: str) -> None:
    typer.echo(f"codeagent: error: {message}", err=True)
    raise typer.Exit(2)


def _since(path: Path) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for entry in read_entries(path):
        for change in entry.changes:
            parts = change.key.split(".")
            if len(parts) == 3 and parts[0] == "components":
                out[parts[1]] = (entry.time[:19].replace("T", " "), entry.source)
            elif parts[0] == "loop":
                out["(loop)"] = (entry.time[:19].replace("T", " "), entry.source)
    return out


def flags_document(path: Path) -> dict[str, Any]:
    """What ``flags show --json`` and ``GET /flags`` answer: the flags in force, per component, with health.

    In a process that routes by the file (a loop and its API, the dashboard),
    the flags in force are its store's (:func:`register_in_force`); elsewhere
    (the CLI) the file's, or the defaults when it is invalid, with the error.
    """
    store = _IN_FORCE.get(_key(path))
    if store is None:
        store = FlagStore(path)
    else:
        store.reload()  # what its watcher is about to do anyway: a change just made shows at once
    current = store.flags
    since = _since(path)
    health = read_health(path)
    rows: list[dict[str, Any]] = []
    for name in COMPONENTS:
        flag = current.flag(name)
        when, source = since.get(name, ("", "file" if name in current.components else "default"))
        h = health.get(name)
        rows.append(
            {
                "component": name,
                "mode": flag.mode.value,
                "percent": flag.percent,
                "serve": flag.serve,
                "since": when,
                "source": source,
                "calls": h.calls if h else 0,
                "errors": h.errors if h else 0,
                "mismatches": h.mismatches if h else 0,
                "rollback": h.rollback if h else "armed",
            }
        )
    error = str(store.last_error) if store.last_error else None
    return {"path": str(path), "loop": current.loop, "error": error, "components": rows}


@flags_app.command("show")
def show(
    workspace: WorkspaceOpt = Path("."),
    flags: FlagsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """The flags in force: component, mode, since, source, health."""
    path = flags_path(workspace, flags)
    doc = flags_document(path)
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    rows, error = doc["components"], doc["error"]
    console = Console()
    table = Table(title=f"flags: {path} (loop: {doc['loop']})")
    for column in ("component", "mode", "since", "source", "calls", "errors", "mismatches", "rollback"):
        table.add_column(column)
    for row in rows:
        mode = row["mode"] + (f" {row['percent']:g}%" if row["mode"] == "canary" else "")
        mode += f" (serve {row['serve']})" if row["mode"] == "shadow" else ""
        table.add_row(
            row["component"], mode, row["since"], row["source"],
            str(row["calls"]), str(row["errors"]), str(row["mismatches"]), row["rollback"],
        )  # fmt: skip
    console.print(table)
    if error:
        console.print(
            f"[red]the flag file is invalid; the last good flags (or defaults) are shown:[/red] {error}"
        )
        raise typer.Exit(1)


@flags_app.command("set")
def set_(
    assignments: Annotated[list[str], typer.Argument(help="COMPONENT=MODE pairs (or loop=legacy|async).")],
    workspace: WorkspaceOpt = Path("."),
    flags: FlagsOpt = None,
    percent: Annotated[float | None, typer.Option("--percent", help="Canary percentage (0-100).")] = None,
    serve: Annotated[str | None, typer.Option("--serve", help="Shadow: which result to serve.")] = None,
    reason: Annotated[
        str, typer.Option("--reason", help="Why (kept in the audit log).")
    ] = "set from the CLI",
) -> None:
    """Set components' modes (legacy, new, shadow, canary) and/or the loop."""
    path = flags_path(workspace, flags)
    changes: dict[str, ComponentChange] = {}
    loop: str | None = None
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep:
            _fail(f"expected COMPONENT=MODE, got {item!r}")
        if name == "loop":
            if value not in ("legacy", "async"):
                _fail(f"loop must be 'legacy' or 'async', got {value!r}")
            loop = value
            continue
        if name not in COMPONENTS:
            _fail(f"unknown component {name!r}; known: {', '.join(COMPONENTS)}")
        try:
            mode = Mode(value)
        except ValueError:
            _fail(f"unknown mode {value!r} for {name}; modes: {', '.join(m.value for m in Mode)}")
        if mode is Mode.CANARY and percent is None:
            _fail("mode 'canary' needs --percent N")
        changes[name] = ComponentChange(
            mode=mode,
            percent=percent if mode is Mode.CANARY else None,
            serve=serve if mode is Mode.SHADOW else None,
        )
    try:
        update_flags(path, components=changes, loop=loop, source="cli", reason=reason)
    except FlagFileError as exc:
        _fail(str(exc))
    typer.echo(f"updated {path}")


@flags_app.command("rollback")
def rollback(
    component: Annotated[str | None, typer.Argument(help="The component to put back on legacy.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every component.")] = False,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit log).")] = "",
    workspace: WorkspaceOpt = Path("."),
    flags: FlagsOpt = None,
) -> None:
    """Put one component (or --all) back on the legacy path."""
    if not reason:
        _fail("--reason TEXT is required for a rollback")
    if all_ == (component is not None):
        _fail("name one COMPONENT or give --all")
    names = list(COMPONENTS) if all_ else [str(component)]
    if component is not None and component not in COMPONENTS:
        _fail(f"unknown component {component!r}; known: {', '.join(COMPONENTS)}")
    path = flags_path(workspace, flags)
    changes = {name: ComponentChange(mode=Mode.LEGACY) for name in names}
    try:
        update_flags(path, components=changes, source="cli", reason=f"rollback: {reason}")
    except FlagFileError as exc:
        _fail(str(exc))
    typer.echo(f"rolled back {', '.join(names)} in {path}")


@flags_app.command("validate")
def validate(file: Annotated[Path, typer.Argument(help="A flag file to check.")]) -> None:
    """Check a flag file; the error names the key and the line."""
    try:
        result = read_flags(file)
    except FlagFileError as exc:
        _fail(str(exc))
    else:
        typer.echo(f"{file}: ok (loop {result.loop}, {len(result.components)} component(s) set)")
