"""``status``: which format the workspace is in, when it was migrated, and the backups there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from migration import layout
from migration.backup import check_backup, list_backups
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


def workspace_status(root: Path) -> dict[str, Any]:
    """A JSON-able summary: format, migrated_at, backup, checkpoint formats, backups, pending journal."""
    root = Path(root)
    marker = read_marker(root)
    counts = _checkpoint_formats(root)
    if (root / layout.JOURNAL).exists():
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
    return {
        "workspace": str(root),
        "format": fmt,
        "migrated_at": marker.get("migrated_at") if marker else None,
        "backup": marker.get("backup") if marker else None,
        "checkpoints": counts,
        "backups": backups,
    }


def render_status(info: dict[str, Any]) -> list[str]:
    """The lines ``status`` prints."""
    counts = info["checkpoints"]
    lines = [
        f"workspace:   {info['workspace']}",
        f"format:      {info['format']}",
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
