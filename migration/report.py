"""``status``: which format the workspace is in (or that its state lives in PostgreSQL), when, the backups."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from codeagent.errors import StateFileError
from migration import layout
from migration.backup import check_backup, list_backups
from migration.store import POSTGRESQL, StoreMarker, display_dsn, read_store_marker
from migration.survey import read_marker


def _checkpoint_formats(root: Path) -> dict[str, int]:
    counts = {"legacy": 0, "v2": 0, "unreadable": 0}
    directory = root / layout.CHECKPOINTS
    if not directory.is_dir():
        return counts
    for path in directory.glob("*.json"):
        if path.name.startswith("."):
            continue
        try:
            data: Any = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            counts["unreadable"] += 1
            continue
        counts["v2" if isinstance(data, dict) and "schema_version" in data else "legacy"] += 1
    return counts


def _store(root: Path) -> tuple[dict[str, Any], StoreMarker | None]:
    """Where the state lives, as ``status`` reports it, and the marker saying so."""
    try:
        marker = read_store_marker(root)
    except StateFileError as exc:
        return {"kind": "unknown", "error": str(exc)}, None
    if marker is None:
        return {"kind": "files"}, None
    return {
        "kind": POSTGRESQL,
        "dsn": display_dsn(marker.dsn),
        "workspace_id": marker.workspace_id,
        "moved_at": marker.moved_at,
        "backup": marker.backup,
    }, marker


def workspace_status(root: Path) -> dict[str, Any]:
    """A JSON-able summary: format, migrated_at, backup, checkpoint formats, backups, pending journal.

    ``store`` says where the state lives: ``files`` (the embedded default) or
    ``postgresql`` (with the DSN, password hidden, and the workspace's id there).
    """
    root = Path(root)
    marker = read_marker(root)
    counts = _checkpoint_formats(root)
    store, in_database = _store(root)
    moved: StoreMarker | None = None
    if (root / layout.STORE_JOURNAL).exists():
        fmt = "interrupted move between files and PostgreSQL (run apply --to postgres DSN or --to files)"
    elif in_database is not None:
        fmt = f"in {in_database.describe()}"
        moved = in_database
    elif store["kind"] == "unknown":
        fmt = f"unknown: {store['error']}"
    elif (root / layout.JOURNAL).exists():
        fmt = "interrupted (run apply or rollback again to finish)"
    elif marker is not None:
        fmt = "new (format 2)" if not counts["legacy"] else "new (format 2), but with legacy checkpoints"
    elif counts["v2"]:
        fmt = "legacy, with v2 checkpoints written by the new core (run apply)"
    else:
        fmt = "legacy"
    backups = [
        {
            "name": b.path.name,
            "op": b.op,
            "created_at": b.created_at,
            "files": len(b.files),
            "quarantined": b.quarantined,
            "intact": not check_backup(b),
        }
        for b in list_backups(root)
    ]
    if moved is not None:
        migrated_at, backup = moved.moved_at or None, moved.backup or None
    else:
        migrated_at = marker.get("migrated_at") if marker else None
        backup = marker.get("backup") if marker else None
    return {
        "workspace": str(root),
        "format": fmt,
        "migrated_at": migrated_at,
        "backup": backup,
        "store": store,
        "checkpoints": counts,
        "backups": backups,
    }


def _store_line(store: dict[str, Any]) -> str:
    if store["kind"] == POSTGRESQL:
        return (
            f"in PostgreSQL: {store['dsn']}, workspace {store['workspace_id']}"
            " (drive it with codeagent worker --queue DSN; apply --to files brings it back)"
        )
    if store["kind"] == "files":
        return "in the workspace's files (.agent/)"
    return f"unknown: {store.get('error')}"


def render_status(info: dict[str, Any]) -> list[str]:
    """The lines ``status`` prints."""
    counts = info["checkpoints"]
    lines = [
        f"workspace:   {info['workspace']}",
        f"format:      {info['format']}",
        f"state:       {_store_line(info.get('store') or {'kind': 'files'})}",
        f"migrated at: {info['migrated_at'] or '-'}",
        f"backup:      {info['backup'] or '-'}",
        f"checkpoints: {counts['legacy']} legacy, {counts['v2']} v2, {counts['unreadable']} unreadable",
        f"backups:     {len(info['backups'])}",
    ]
    for b in info["backups"]:
        extra = f", {len(b['quarantined'])} quarantined" if b["quarantined"] else ""
        damaged = "" if b["intact"] else " (DAMAGED: checksums differ)"
        lines.append(f"  {b['name']}  {b['op']}  {b['files']} files{extra}{damaged}")
    return lines
