"""Verification: load everything with the new readers and compare, field by field, with the legacy view.

The expected side is a :class:`migration.survey.Survey` (what the legacy
readers saw, before the change or in a backup); the actual side is what
``core_sync`` (the generated twins of the async core, same behaviour) reads
from the workspace now. Every difference is reported by file and field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codeagent.errors import ConfigError, StateFileError
from core_sync.checkpoints import SyncCheckpointJsonStore
from core_sync.config import load_config
from core_sync.status import SyncStatusJsonStore
from core_sync.todos import SyncTodoJsonStore
from migration import layout
from migration.backup import list_backups
from migration.store import state_elsewhere
from migration.survey import Survey, read_marker, survey


@dataclass(frozen=True, slots=True)
class Sides:
    """How :func:`diff` names the two sides it compares (by default: the legacy and the new readers)."""

    missing: str = "missing in the new reader's view"
    extra: str = "not seen by the legacy reader"
    differ: str = "legacy saw {expected!r}, new reader sees {actual!r}"


READERS = Sides()


def diff(expected: Any, actual: Any, where: str = "", *, sides: Sides = READERS) -> list[str]:
    """Dotted paths (``todos[2].files[0]``) where two JSON-like values differ, with both values."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out: list[str] = []
        for key in sorted(set(expected) | set(actual), key=str):
            sub = f"{where}.{key}" if where else str(key)
            if key not in actual:
                out.append(f"{sub}: {sides.missing}")
            elif key not in expected:
                out.append(f"{sub}: {sides.extra}")
            else:
                out += diff(expected[key], actual[key], sub, sides=sides)
        return out
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [
            d
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for d in diff(e, a, f"{where}[{i}]", sides=sides)
        ]
    if expected != actual:
        return [f"{where or '(document)'}: {sides.differ.format(expected=expected, actual=actual)}"]
    return []


def _dump(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_dump(v) for v in value]
    return value


def compare(expected: Survey, root: Path, *, require_v2: bool) -> list[str]:
    """Differences between the legacy view ``expected`` and the new readers on ``root`` (empty: equal)."""
    problems: list[str] = []
    try:
        if expected.config is not None:
            problems += [
                f"{layout.CONFIG}: {d}" for d in diff(_dump(expected.config), _dump(load_config(root)))
            ]
        if expected.todos is not None:
            new_todos = SyncTodoJsonStore(root).load()
            problems += [
                f"{layout.TODOS}: {d}" for d in diff(_dump(expected.todos), _dump(new_todos), "todos")
            ]
        if expected.status is not None:
            new_status = SyncStatusJsonStore(root).load()
            problems += [f"{layout.STATUS}: {d}" for d in diff(_dump(expected.status), _dump(new_status))]
    except (ConfigError, StateFileError) as exc:
        return [f"new reader failed: {exc}"]
    store = SyncCheckpointJsonStore(root)
    present = set(store.list_ids())
    for todo_id in sorted(set(expected.checkpoints) - present):
        problems.append(f"{layout.CHECKPOINTS}/{todo_id}.json: missing")
    for todo_id, entry in sorted(expected.checkpoints.items()):
        if todo_id not in present:
            continue
        rel = f"{layout.CHECKPOINTS}/{todo_id}.json"
        try:
            record = store.load_versioned(todo_id)
        except StateFileError as exc:
            problems.append(f"new reader failed: {exc}")
            continue
        if record is None:
            problems.append(f"{rel}: missing")
            continue
        if require_v2 and not _is_v2(root / rel):
            problems.append(f"{rel}: schema_version: still in the legacy format")
        want = _dump(entry.record.to_checkpoint())
        problems += [f"{rel}: {d}" for d in diff(want, _dump(record.to_checkpoint()))]
    return problems


def _is_v2(path: Path) -> bool:
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("schema_version") == 2 and int(data.get("seq", 0)) >= 1


def verify_workspace(root: Path) -> tuple[list[str], list[str]]:
    """The verification alone: ``(problems, notes)``; no problems means the state is sound.

    Checks that the new readers see exactly what the legacy readers see (v2
    checkpoints through their legacy view), that a migrated workspace holds
    only v2 checkpoints, and, while nothing has moved since the latest backup,
    that the state equals that backup as the legacy readers read it.
    """
    root = Path(root)
    notes: list[str] = []
    elsewhere = state_elsewhere(root)
    if elsewhere is not None:  # the CLI verifies a workspace in PostgreSQL with migration.postgres
        return [f"not verified as files: {elsewhere}"], notes
    if (root / layout.JOURNAL).exists():
        return [
            f"{layout.JOURNAL}: an interrupted migration is pending; run apply (or rollback) again"
        ], notes
    marker = read_marker(root)
    now = survey(root)
    problems = [str(p) for p in now.problems]
    problems += compare(now, root, require_v2=marker is not None)
    notes.append(f"format: {'new (v2)' if marker else 'legacy'}; {len(now.checkpoints)} checkpoints checked")
    backups = [b for b in list_backups(root) if b.op == "apply"]
    if marker is not None and backups:
        latest = backups[-1]
        status_now = (root / layout.STATUS).read_bytes() if (root / layout.STATUS).exists() else b""
        status_then = latest.path / layout.STATUS
        if status_then.exists() and status_then.read_bytes() == status_now:
            before = survey(latest.path)
            for rel in latest.quarantined:
                before.checkpoints.pop(Path(rel).stem, None)
            problems += [
                f"against backup {latest.path.name}: {p}" for p in compare(before, root, require_v2=True)
            ]
            notes.append(f"compared with backup {latest.path.name}: no progress since")
        else:
            notes.append(f"the loop has made progress since backup {latest.path.name}; not compared with it")
    return problems, notes
