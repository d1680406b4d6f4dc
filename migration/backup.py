"""Backups of the state files: ``.agent/backup/<timestamp>/`` with a sha256 manifest.

A backup mirrors the workspace layout (``<backup>/.agent/config.json`` ...), so
the legacy readers read it as if it were a workspace; ``manifest.json`` is
written last, and a directory without one is an unfinished backup that
:func:`prune_unfinished` removes. Files set aside by ``--quarantine`` are
listed in the manifest under ``quarantined``. A move from PostgreSQL back to
files also keeps what the database held, as ``database.json`` beside ``.agent/``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from migration import layout

MANIFEST = "manifest.json"


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """One finished backup as ``status`` lists it."""

    path: Path
    op: str
    created_at: str
    files: dict[str, str]
    quarantined: list[str]


def state_files(root: Path) -> list[str]:
    """Workspace-relative paths of every state file migration touches or checks."""
    rels = [
        rel
        for rel in (layout.CONFIG, layout.TODOS, layout.STATUS, layout.MARKER, layout.STORE)
        if (root / rel).is_file()
    ]
    directory = root / layout.CHECKPOINTS
    if directory.is_dir():
        rels += [
            f"{layout.CHECKPOINTS}/{p.name}"
            for p in sorted(directory.iterdir())
            if p.is_file() and not p.name.startswith(".")
        ]
    return rels


def create_backup(
    root: Path,
    op: str,
    quarantined: list[str] | None = None,
    documents: Mapping[str, bytes] | None = None,
) -> Path:
    """Copy every state file into a new backup directory and seal it with a manifest.

    ``documents`` are written into the backup too (backup-relative name: bytes)
    and listed in the manifest like the files: what the database held, for the
    move from PostgreSQL back to files.
    """
    now = datetime.now(UTC)
    base = root / layout.BACKUPS / now.strftime("%Y%m%dT%H%M%S.%fZ")
    dest = base
    n = 1
    while dest.exists():
        dest = base.with_name(f"{base.name}-{n}")
        n += 1
    files: dict[str, str] = {}
    for rel in state_files(root):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        data = (root / rel).read_bytes()
        layout.atomic_write(target, data)
        files[rel] = layout.sha256_file(target)
    for name, data in sorted((documents or {}).items()):
        layout.atomic_write(dest / name, data)
        files[name] = layout.sha256_file(dest / name)
    manifest = {
        "op": op,
        "created_at": now.isoformat(timespec="milliseconds"),
        "files": files,
        "quarantined": sorted(quarantined or []),
    }
    layout.atomic_write(dest / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return dest


def read_backup(path: Path) -> BackupInfo | None:
    """A finished backup's manifest, or ``None`` for an unfinished or foreign directory."""
    try:
        raw: Any = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        return BackupInfo(
            path, str(raw["op"]), str(raw["created_at"]), dict(raw["files"]), list(raw["quarantined"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def list_backups(root: Path) -> list[BackupInfo]:
    """Every finished backup, oldest first."""
    base = root / layout.BACKUPS
    if not base.is_dir():
        return []
    found = (read_backup(p) for p in sorted(base.iterdir()) if p.is_dir())
    return [b for b in found if b is not None]


def check_backup(info: BackupInfo) -> list[str]:
    """Files of a backup whose bytes no longer match the manifest (empty when intact)."""
    bad: list[str] = []
    for rel, digest in info.files.items():
        path = info.path / rel
        if not path.is_file() or layout.sha256_file(path) != digest:
            bad.append(rel)
    return bad


def prune_unfinished(root: Path) -> list[str]:
    """Remove backup directories left without a manifest by a crash; return their names."""
    base = root / layout.BACKUPS
    if not base.is_dir():
        return []
    removed: list[str] = []
    for path in sorted(base.iterdir()):
        if path.is_dir() and not (path / MANIFEST).exists():
            shutil.rmtree(path)
            removed.append(path.name)
    return removed
