"""Read an installation's state the way the legacy agent does, and say what migration would change.

:func:`survey` never writes: it loads the config, todos and status with the
legacy readers, every checkpoint with the legacy reader (or, for a file that
is already v2, with :func:`codeagent.state_v2.parse_checkpoint`), and collects
every problem by file, field and line instead of stopping at the first.
:func:`make_plan` turns a survey into the file-by-file list ``plan`` prints.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codeagent.config import AgentConfig
from codeagent.errors import ConfigError, StateFileError
from codeagent.models import TODO_ID_RE, Checkpoint, StatusFile, Todo
from codeagent.state_v2 import CheckpointV2, parse_checkpoint
from legacy.checkpoints import CheckpointStore
from legacy.config import load_config
from legacy.status import StatusStore
from legacy.todos import TodoStore
from migration import layout
from migration.backup import state_files


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with one file; ``quarantinable`` when moving the file aside loses no todo."""

    file: str
    message: str
    field: str | None = None
    line: int | None = None
    quarantinable: bool = False

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "")
        return f"{where}: {self.field + ': ' if self.field else ''}{self.message}"


@dataclass(slots=True)
class CheckpointEntry:
    """One checkpoint file as found: its format and what a reader made of it."""

    name: str
    fmt: str  # "legacy" | "v2"
    record: CheckpointV2

    @property
    def todo_id(self) -> str:
        """The todo this checkpoint belongs to."""
        return self.record.todo_id


@dataclass(slots=True)
class Survey:
    """Everything :func:`survey` read, and what was wrong."""

    root: Path
    config: AgentConfig | None = None
    config_present: bool = False
    todos: list[Todo] | None = None
    status: StatusFile | None = None
    checkpoints: dict[str, CheckpointEntry] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    marker: dict[str, Any] | None = None

    @property
    def migrated(self) -> bool:
        """Marker present, every checkpoint already v2, nothing wrong: ``apply`` has nothing to do."""
        return (
            self.marker is not None
            and not self.problems
            and all(e.fmt == "v2" for e in self.checkpoints.values())
        )

    @property
    def blocking(self) -> list[Problem]:
        """Problems that ``--quarantine`` cannot set aside."""
        return [p for p in self.problems if not p.quarantinable]

    @property
    def quarantined(self) -> list[str]:
        """Workspace-relative paths of the files ``--quarantine`` would move aside."""
        return sorted({p.file for p in self.problems if p.quarantinable})


def _problem(exc: ConfigError | StateFileError, quarantinable: bool = False) -> Problem:
    prefix = (
        exc.path + (f":{exc.line}" if exc.line is not None else "") + (f": {exc.field}" if exc.field else "")
    )
    message = str(exc).removeprefix(prefix + ": ")
    return Problem(exc.path, message, exc.field, exc.line, quarantinable)


def read_marker(root: Path) -> dict[str, Any] | None:
    """The ``.agent/format.json`` marker, or ``None`` (also when unreadable)."""
    try:
        data: Any = json.loads((root / layout.MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_checkpoint(root: Path, path: Path, out: Survey) -> None:
    rel = f"{layout.CHECKPOINTS}/{path.name}"
    if not TODO_ID_RE.match(path.stem):
        out.problems.append(Problem(rel, "file name is not a todo id; no loop reads it", quarantinable=True))
        return
    try:
        text = path.read_text(encoding="utf-8")
        data: Any = json.loads(text)
    except UnicodeDecodeError:
        out.problems.append(Problem(rel, "not UTF-8 text", quarantinable=True))
        return
    except ValueError:
        data = None
    try:
        if isinstance(data, dict) and "schema_version" in data:
            record = parse_checkpoint(text, rel)
            if record.todo_id != path.stem:
                raise StateFileError(rel, f"belongs to todo {record.todo_id!r}", field="todo_id")
            out.checkpoints[path.stem] = CheckpointEntry(path.name, "v2", record)
            return
        legacy = CheckpointStore(root).load(path.stem)
    except StateFileError as exc:
        out.problems.append(_problem(exc, quarantinable=True))
        return
    assert legacy is not None  # the file exists and parsed
    out.checkpoints[path.stem] = CheckpointEntry(path.name, "legacy", CheckpointV2.from_checkpoint(legacy, 1))


def survey(root: Path) -> Survey:
    """Read the workspace's state with the legacy readers; change nothing."""
    root = Path(root)
    out = Survey(root=root, marker=read_marker(root))
    out.config_present = (root / layout.CONFIG).exists()
    try:
        out.config = load_config(root)
    except ConfigError as exc:
        out.problems.append(_problem(exc))
    try:
        out.todos = TodoStore(root).load()
    except StateFileError as exc:
        out.problems.append(_problem(exc))
    try:
        out.status = StatusStore(root).load()
    except StateFileError as exc:
        out.problems.append(_problem(exc))
    directory = root / layout.CHECKPOINTS
    if directory.is_dir():
        for path in sorted(directory.glob("*.json")):
            if not path.name.startswith("."):
                _read_checkpoint(root, path, out)
    if out.todos is not None:
        known = {t.id for t in out.todos}
        for todo_id, entry in sorted(out.checkpoints.items()):
            if todo_id not in known:
                del out.checkpoints[todo_id]
                out.problems.append(
                    Problem(
                        f"{layout.CHECKPOINTS}/{entry.name}",
                        f"checkpoint of todo {todo_id!r}, which is not in {layout.TODOS}",
                        field="todo_id",
                        quarantinable=True,
                    )
                )
        if out.status is not None:
            for todo_id in sorted(set(out.status.todos) - known):
                out.warnings.append(f"{layout.STATUS}: todos.{todo_id}: no such todo (kept as it is)")
    return out


@dataclass(frozen=True, slots=True)
class FileChange:
    """One line of the plan: a workspace-relative path, what happens to it, and why."""

    path: str
    action: str  # convert | keep | create | quarantine | backup
    detail: str


def _status_summary(status: StatusFile) -> str:
    counts: dict[str, int] = {}
    for state in status.todos.values():
        counts[state.status.value] = counts.get(state.status.value, 0) + 1
    parts = ", ".join(f"{n} {name}" for name, n in sorted(counts.items()))
    return f"{len(status.todos)} todo states ({parts or 'none'})"


def make_plan(found: Survey, *, quarantine: bool = False) -> list[FileChange]:
    """What ``apply`` would do, file by file (the survey must have no blocking problems to apply)."""
    changes: list[FileChange] = []
    config_detail = "same format in both versions; validated, not rewritten"
    if not found.config_present:
        config_detail = "absent: both versions use the defaults"
    changes.append(FileChange(layout.CONFIG, "keep", config_detail))
    if found.todos is not None:
        changes.append(FileChange(layout.TODOS, "keep", f"same format; {len(found.todos)} todos"))
    if found.status is not None:
        changes.append(FileChange(layout.STATUS, "keep", f"same format; {_status_summary(found.status)}"))
    for _todo_id, entry in sorted(found.checkpoints.items()):
        rel = f"{layout.CHECKPOINTS}/{entry.name}"
        stage = entry.record.stage.value
        if entry.fmt == "legacy":
            changes.append(
                FileChange(rel, "convert", f"legacy -> v2 (schema_version 2, seq 1), stage {stage}")
            )
        else:
            changes.append(FileChange(rel, "keep", f"already v2 (seq {entry.record.seq}), stage {stage}"))
    for rel in found.quarantined:
        action = "quarantine" if quarantine else "blocked"
        changes.append(FileChange(rel, action, "; ".join(str(p) for p in found.problems if p.file == rel)))
    changes.append(FileChange(layout.MARKER, "create", '{"format": 2, "migrated_at", "backup"}'))
    backed_up = sum(1 for _ in state_files(found.root))
    changes.append(
        FileChange(f"{layout.BACKUPS}/<timestamp>/", "backup", f"{backed_up} files, sha256 manifest")
    )
    return changes


def plan_counts(changes: list[FileChange]) -> dict[str, int]:
    """How many files each action concerns."""
    counts: dict[str, int] = {}
    for change in changes:
        counts[change.action] = counts.get(change.action, 0) + 1
    return counts


def as_legacy(record: CheckpointV2) -> Checkpoint:
    """The legacy view of a checkpoint of either format."""
    return record.to_checkpoint()
