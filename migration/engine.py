"""``apply`` and ``rollback``: back up, stage, swap in one atomic step, verify; undo on any failure.

Both operations work the same way. Every state file is copied into a backup
sealed with a sha256 manifest; the converted checkpoints are written into
``.agent/migrate-staging/checkpoints``; a journal (``.agent/migrate-journal.json``)
records the digests of the old and the new checkpoint set; then
``.agent/checkpoints`` and the staged directory are exchanged in one
``renameat2(RENAME_EXCHANGE)``: that is the commit point. The marker
(``.agent/format.json``) is written (apply) or removed (rollback) after it.

A crash (even SIGKILL) before the exchange leaves the legacy files untouched;
after it, the checkpoint set is complete and new. The next run of any command
that changes state calls :func:`recover` first, which reads the journal and
either finishes the operation (marker) or discards the staging directory.
Config, todos and status have the same format in both versions: they are
backed up and verified, never rewritten.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codeagent.errors import AgentError
from codeagent.models import dump_json, utcnow
from codeagent.paths import STATE_DIR
from codeagent.state_v2 import downgrade
from legacy.checkpoints import CheckpointStore
from legacy.workspace_lock import WorkspaceBusy, hold_workspace, workspace_holder
from migration import layout
from migration.backup import create_backup, prune_unfinished
from migration.store import state_elsewhere
from migration.survey import Survey, read_marker, survey
from migration.verify import compare

EXIT_OK, EXIT_FAILED, EXIT_BAD_STATE, EXIT_BUSY = 0, 1, 2, 3


@dataclass(slots=True)
class Outcome:
    """What an operation did: an exit code and the lines to print."""

    code: int
    lines: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The operation succeeded (or had nothing to do)."""
        return self.code == EXIT_OK


class _Refused(Exception):
    def __init__(self, code: int, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.code = code
        self.lines = lines


def _busy_outcome(root: Path, holder: dict[str, Any]) -> Outcome:
    who = f"pid {holder.get('pid', '?')} ({holder.get('loop', '?')} loop)"
    return Outcome(EXIT_BUSY, [f"refused: workspace {root} is held by {who}; stop the loop first"])


def _exclusive(root: Path, work: Callable[[], Outcome]) -> Outcome:
    holder = workspace_holder(root)
    if holder is not None:
        return _busy_outcome(root, holder)
    try:
        with hold_workspace(root, "migrate"):
            return work()
    except WorkspaceBusy as exc:
        return _busy_outcome(root, exc.holder)
    except _Refused as exc:
        return Outcome(exc.code, exc.lines)


def _read_journal(root: Path) -> dict[str, Any] | None:
    try:
        data: Any = json.loads((root / layout.JOURNAL).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"op": "unknown"}
    return data if isinstance(data, dict) else {"op": "unknown"}


def _write_marker(root: Path, migrated_at: str, backup: str) -> None:
    doc = {"format": 2, "migrated_at": migrated_at, "backup": backup}
    layout.atomic_write(root / layout.MARKER, json.dumps(doc, indent=2) + "\n")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _finish(root: Path, journal: dict[str, Any]) -> None:
    """The steps after the commit point: marker, then forget the journal and the staging area."""
    if journal["op"] == "apply":
        if read_marker(root) is None:
            _write_marker(root, journal["started_at"], journal["backup"])
    else:
        _remove(root / layout.MARKER)
    layout.fault_point("cleanup")
    _remove(root / layout.JOURNAL)
    _remove(root / layout.STAGING)


def recover(root: Path) -> list[str]:
    """Finish or discard an operation a crash interrupted; what was done, as lines to print."""
    journal = _read_journal(root)
    lines = [f"removed unfinished backup {name}" for name in prune_unfinished(root)]
    if journal is None:
        if (root / layout.STAGING).exists():
            _remove(root / layout.STAGING)
            lines.append("removed a staging area left by an interrupted run (nothing had changed)")
        return lines
    current = layout.dir_hashes(root / layout.CHECKPOINTS)
    if journal.get("op") in ("apply", "rollback") and current == journal.get("new"):
        _finish(root, journal)
        lines.append(f"finished an interrupted {journal['op']} (its swap had completed)")
    else:
        _remove(root / layout.STAGING)
        _remove(root / layout.JOURNAL)
        lines.append(f"discarded an interrupted {journal.get('op')} (it had changed nothing)")
    return lines


def _live_files(root: Path) -> dict[str, bytes]:
    """Every file in ``.agent/checkpoints`` except hidden ones (temp files of an interrupted write)."""
    live = root / layout.CHECKPOINTS
    if not live.is_dir():
        return {}
    return {
        p.name: p.read_bytes() for p in sorted(live.iterdir()) if p.is_file() and not p.name.startswith(".")
    }


def not_a_workspace(root: Path) -> Outcome | None:
    """Exit 2 when ``root`` has no ``.agent/`` directory (nothing to migrate; we create nothing)."""
    if (root / STATE_DIR).is_dir():
        return None
    return Outcome(EXIT_BAD_STATE, [f"{root} has no {STATE_DIR}/ directory: not a Code Agent workspace"])


def state_in_database(root: Path) -> Outcome | None:
    """Exit 2 when the state lives in PostgreSQL, or a move there or back is pending (``--to`` handles those)."""
    reason = state_elsewhere(root)
    if reason is None:
        return None
    return Outcome(EXIT_BAD_STATE, [f"refused: the workspace's files are not its state: {reason}"])


def _stage(root: Path, files: dict[str, bytes]) -> Path:
    staged = root / layout.STAGING / "checkpoints"
    _remove(root / layout.STAGING)
    staged.mkdir(parents=True)
    for name, data in sorted(files.items()):
        layout.atomic_write(staged / name, data)
    layout.fsync_dir(staged)
    return staged


def _swap(
    root: Path, op: str, files: dict[str, bytes], backup: Path, check: Callable[[], list[str]]
) -> list[str]:
    """Stage, journal, exchange, finish; on any failure put the old checkpoints back and re-raise."""
    try:
        staged = _stage(root, files)
        layout.fault_point("stage")
    except BaseException:
        _remove(root / layout.STAGING)
        raise
    live = root / layout.CHECKPOINTS
    live.mkdir(parents=True, exist_ok=True)
    journal: dict[str, Any] = {
        "op": op,
        "started_at": utcnow().isoformat().replace("+00:00", "Z"),
        "backup": str(backup.relative_to(root)),
        "old": layout.dir_hashes(live),
        "new": layout.dir_hashes(staged),
    }
    layout.atomic_write(root / layout.JOURNAL, json.dumps(journal, indent=2) + "\n")
    swapped = False
    try:
        layout.fault_point("journal")
        layout.exchange_dirs(live, staged)
        swapped = True
        layout.fault_point("swap")
        if op == "apply":
            _write_marker(root, journal["started_at"], journal["backup"])
        else:
            _remove(root / layout.MARKER)
        layout.fault_point("marker")
        problems = check()
        layout.fault_point("verify")
        if problems:
            raise _Refused(
                EXIT_FAILED,
                [
                    f"{op} failed: verification found differences:",
                    *(f"  {p}" for p in problems),
                    "the workspace is as it was before (backup kept)",
                ],
            )
    except BaseException:
        if swapped:
            layout.exchange_dirs(live, staged)
            if op == "apply":
                _remove(root / layout.MARKER)
            elif (backup / layout.MARKER).exists():
                layout.atomic_write(root / layout.MARKER, (backup / layout.MARKER).read_bytes())
        _remove(root / layout.JOURNAL)
        _remove(root / layout.STAGING)
        raise
    try:
        _finish(root, journal)
    except (OSError, layout.InjectedFault) as exc:
        raise _Refused(
            EXIT_FAILED,
            [f"{op} committed and verified, but tidying up failed: {exc}", f"run {op} again to finish"],
        ) from exc
    return [f"backup: {backup.relative_to(root)}"]


def _guarded(root: Path, op: str, body: Callable[[], list[str]]) -> Outcome:
    """Run ``body``; any failure becomes exit 1 with the reason (the swap has already been undone)."""
    try:
        return Outcome(EXIT_OK, body())
    except _Refused:
        raise
    except (AgentError, OSError, layout.InjectedFault) as exc:
        return Outcome(
            EXIT_FAILED, [f"{op} failed: {exc}", "the workspace is as it was before (backup kept)"]
        )


def _problem_lines(found: Survey) -> list[str]:
    return [f"  {p}" for p in found.problems]


def apply(root: Path, *, quarantine: bool = False) -> Outcome:
    """Migrate the workspace's state to the new format (see the module docstring)."""
    root = Path(root).resolve()

    def check(found: Survey) -> None:
        if found.blocking or (found.problems and not quarantine):
            hint = [] if found.blocking else ["use --quarantine to move these files aside into the backup"]
            raise _Refused(
                EXIT_BAD_STATE, ["stopped before changing anything:", *_problem_lines(found), *hint]
            )

    def work() -> Outcome:
        lines = recover(root)
        found = survey(root)
        if found.migrated and found.marker is not None:
            when = found.marker.get("migrated_at")
            return Outcome(EXIT_OK, [*lines, f"already migrated at {when}: nothing to do"])
        check(found)
        outcome = _guarded(root, "apply", lambda: _apply_steps(root, found))
        outcome.lines[:0] = lines
        return outcome

    if (refused := not_a_workspace(root) or state_in_database(root)) is not None:
        return refused
    if not (root / layout.JOURNAL).exists():
        try:  # refuse a damaged state before even taking the lock (which creates a lock file)
            check(survey(root))
        except _Refused as exc:
            return Outcome(exc.code, exc.lines)
    return _exclusive(root, work)


def _apply_steps(root: Path, found: Survey) -> list[str]:
    layout.fault_point("survey")
    backup = create_backup(root, "apply", found.quarantined)
    layout.fault_point("backup")
    quarantined = {Path(rel).name for rel in found.quarantined}
    files = {n: d for n, d in _live_files(root).items() if n not in quarantined}  # kept byte for byte
    files.update(
        {e.name: dump_json(e.record).encode() for e in found.checkpoints.values() if e.fmt == "legacy"}
    )
    lines = _swap(root, "apply", files, backup, lambda: compare(found, root, require_v2=True))
    converted = sum(1 for e in found.checkpoints.values() if e.fmt == "legacy")
    lines.insert(0, f"migrated: {converted} checkpoints converted to v2, {len(files) - converted} already v2")
    lines += [f"quarantined: {rel} (kept in the backup)" for rel in found.quarantined]
    lines.append("verified: the new readers see exactly what the legacy readers saw")
    return lines


def rollback(root: Path) -> Outcome:
    """Convert the current (new-format) state back to legacy, so the legacy loop resumes where it stopped."""
    root = Path(root).resolve()

    def work() -> Outcome:
        lines = recover(root)
        found = survey(root)
        if found.blocking:
            raise _Refused(EXIT_BAD_STATE, ["stopped before changing anything:", *_problem_lines(found)])
        if read_marker(root) is None and all(e.fmt == "legacy" for e in found.checkpoints.values()):
            return Outcome(EXIT_OK, [*lines, "already in the legacy format: nothing to do"])
        outcome = _guarded(root, "rollback", lambda: _rollback_steps(root, found))
        outcome.lines[:0] = lines
        return outcome

    if (refused := not_a_workspace(root) or state_in_database(root)) is not None:
        return refused
    return _exclusive(root, work)


def _rollback_steps(root: Path, found: Survey) -> list[str]:
    backup = create_backup(root, "rollback")
    files = _live_files(root)  # keep what we do not understand (quarantinable problems) byte for byte
    for entry in found.checkpoints.values():
        files[entry.name] = dump_json(downgrade(entry.record)).encode()

    def check() -> list[str]:
        store = CheckpointStore(root)
        problems: list[str] = []
        for todo_id, entry in sorted(found.checkpoints.items()):
            try:
                seen = store.load(todo_id)
            except AgentError as exc:
                problems.append(f"legacy reader failed: {exc}")
                continue
            if seen is None or seen.model_dump() != entry.record.to_checkpoint().model_dump():
                problems.append(f"{layout.CHECKPOINTS}/{entry.name}: differs after downgrade")
        return problems

    lines = _swap(root, "rollback", files, backup, check)
    downgraded = sum(1 for e in found.checkpoints.values() if e.fmt == "v2")
    lines.insert(0, f"rolled back: {downgraded} checkpoints downgraded to the legacy format; marker removed")
    return lines
