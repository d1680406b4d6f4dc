"""The flag file's audit log: one JSON line per change (when, source, what, why).

It lives beside the flag file (``flags.toml`` -> ``flags-audit.jsonl``) and is
only ever appended to.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

#: Who made a change; ``ui`` is the dashboard (through the flags API).
Source = Literal["cli", "api", "ui", "auto-rollback", "fallback", "migrate", "file"]


@dataclass(frozen=True, slots=True)
class Change:
    """One key that changed: ``components.llm.mode`` from ``legacy`` to ``new``."""

    key: str
    old: Any
    new: Any


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One recorded change of the flag file."""

    source: str
    reason: str
    changes: list[Change]
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))
    user: str = field(default_factory=lambda: os.environ.get("USER", "") or str(os.getuid()))

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, default=str)


def audit_path(flags_path: Path) -> Path:
    """Where the audit log of a flag file lives."""
    return flags_path.with_name(flags_path.stem + "-audit.jsonl")


def append_entry(flags_path: Path, entry: AuditEntry) -> None:
    """Append one entry (a single ``write`` of one line, flushed and fsynced)."""
    path = audit_path(flags_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (entry.to_json() + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def read_entries(flags_path: Path) -> list[AuditEntry]:
    """Every entry, oldest first; a torn last line (crash mid-append) is skipped."""
    path = audit_path(flags_path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    entries: list[AuditEntry] = []
    for line in lines:
        try:
            raw = json.loads(line)
            changes = [Change(**c) for c in raw.pop("changes", [])]
            entries.append(AuditEntry(changes=changes, **raw))
        except (ValueError, TypeError):
            continue
    return entries
