"""One agent loop per workspace: an flock on ``.agent/agent.lock``.

The kernel releases an flock when its holder dies, so a crashed loop never
leaves the workspace stuck; the file's content (pid, loop, start time) only
informs the message a second loop or the migration script prints.

Asking who holds the workspace (:func:`workspace_holder`) takes the lock for an
instant, as flock offers no way to test it; a loop or a migration starting in
that instant would take the asker for a holder. So a lock found taken is tried
again for :data:`PROBE_GRACE_S` before the workspace is called busy.

A crash between an atomic write's temp file and its rename leaves the temp
file behind (``.status.json.xxxxxxxx.tmp``, one per kill at worst); whoever
takes the workspace next removes those of the state files
(:func:`sweep_stale_temps`), so they do not pile up in ``.agent/``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from codeagent.errors import AgentError
from codeagent.models import utcnow
from codeagent.paths import (
    AGENT_LOCK_RELPATH,
    CHECKPOINTS_RELDIR,
    STATUS_LOCK_RELPATH,
    STATUS_RELPATH,
    TODOS_LOCK_RELPATH,
    TODOS_RELPATH,
)
from legacy.jsonstate import file_lock

log = logging.getLogger("codeagent.legacy.workspace_lock")

_TEMP = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{8}\.tmp$")


class WorkspaceBusy(AgentError):
    """Another live process holds the workspace."""

    def __init__(self, root: Path, holder: dict[str, Any] | None):
        self.root = root
        self.holder = holder or {}
        who = f"pid {self.holder.get('pid', '?')} ({self.holder.get('loop', '?')} loop)"
        super().__init__(f"workspace {root} is held by {who} since {self.holder.get('since', '?')}")


#: How long a lock found taken is tried again before the workspace is called busy: longer than
#: any asker holds it (microseconds), far shorter than a loop or a migration does.
PROBE_GRACE_S = 0.05


def _take(fd: int) -> bool:
    """Take the flock on ``fd`` without waiting for a holder; ``False`` if a live one keeps it."""
    deadline = time.monotonic() + PROBE_GRACE_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
        else:
            return True


def _read_holder(path: Path) -> dict[str, Any] | None:
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@contextmanager
def hold_workspace(root: Path, loop: str) -> Iterator[None]:
    """Hold the workspace for this process; raises :class:`WorkspaceBusy` if another one does."""
    path = root / AGENT_LOCK_RELPATH
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _take(fd):
            raise WorkspaceBusy(root, _read_holder(path))
        # A clean release empties the file: content left means the last holder died holding the workspace.
        predecessor = _read_holder(path)
        info = {"pid": os.getpid(), "loop": loop, "since": utcnow().isoformat()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        try:
            swept = sweep_stale_temps(root)
        except OSError as exc:  # tidying up must never keep a loop from its workspace
            log.warning("could not remove stale temp files in %s: %s", root, exc)
        else:
            if swept:
                log.info("removed %d temp file(s) interrupted writes left in %s", len(swept), root)
        try:
            removed = remove_stale_git_locks(root, holder_died=predecessor is not None)
        except OSError as exc:
            log.warning("could not remove stale git lock files in %s: %s", root, exc)
        else:
            if removed:
                log.warning(
                    "removed stale git lock file(s) %s in %s (left by a git write that was killed)",
                    ", ".join(removed),
                    root,
                )
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


#: Seconds a git lock file must have existed before a new holder of the workspace takes it for stale (when
#: the last holder released the workspace cleanly): git holds one for milliseconds around a write.
STALE_INDEX_LOCK_S = 5.0


def git_lock_files(root: Path) -> list[Path]:
    """The lock files of a git write in ``root``'s repository: ``index.lock``, ``HEAD.lock``, ``packed-refs.lock``,
    ``config.lock`` ... at the top of ``.git`` and ``<ref>.lock`` under ``.git/refs``."""
    git_dir = root / ".git"
    if not git_dir.is_dir():
        return []
    found = [p for p in git_dir.glob("*.lock") if p.is_file()]
    found += [p for p in (git_dir / "refs").rglob("*.lock") if p.is_file()]
    return sorted(found)


def remove_stale_git_locks(root: Path, *, now: float | None = None, holder_died: bool = False) -> list[str]:
    """Remove the git lock files a killed write left; their paths relative to ``root``.

    Called with the workspace held, so no loop of ours writes the repository. A
    lock with no ``git`` process working in the workspace was left by a write
    that never finished (a SIGKILL during libgit2's index or ref update in the
    loop's own process, or of a git child), and would make every later ``git add``
    or commit fail with "File exists" / "failed to lock file". When the last
    holder died holding the workspace (``holder_died``), every such lock is its
    own and goes at once, however young; otherwise only one older than
    :data:`STALE_INDEX_LOCK_S` goes (a young one may be another tool's write).
    """
    locks = git_lock_files(root)
    if not locks or _git_working_in(root):
        return []
    when = now if now is not None else time.time()
    removed: list[str] = []
    for lock in locks:
        try:
            age = when - lock.lstat().st_mtime
        except FileNotFoundError:
            continue
        if holder_died or age >= STALE_INDEX_LOCK_S:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
                removed.append(lock.relative_to(root).as_posix())
    return removed


def _git_working_in(root: Path) -> bool:
    """Whether a ``git`` process has its working directory in ``root`` (Linux' ``/proc``; else assume not)."""
    top = os.path.realpath(root)
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return False
    for pid in pids:
        try:
            with open(f"/proc/{pid}/comm", encoding="utf-8") as comm:
                if not comm.read().startswith("git"):
                    continue
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if cwd == top or cwd.startswith(top + os.sep):
            return True
    return False


def workspace_holder(root: Path) -> dict[str, Any] | None:
    """Who holds the workspace right now (``None`` when no live process does)."""
    path = root / AGENT_LOCK_RELPATH
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDWR)
    try:
        if not _take(fd):
            return _read_holder(path) or {"pid": None}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _remove_temps_of(directory: Path, names: set[str] | None) -> list[str]:
    """Remove ``.NAME.xxxxxxxx.tmp`` files in ``directory`` (of the given names, or of any ``*.json``)."""
    removed: list[str] = []
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for entry in entries:
        match = _TEMP.match(entry)
        if match is None:
            continue
        name = match.group("name")
        if (names is not None and name not in names) or (names is None and not name.endswith(".json")):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(directory / entry)
            removed.append(entry)
    return removed


def sweep_stale_temps(root: Path) -> list[str]:
    """Remove the temp files interrupted atomic writes of the state files left; their names.

    Called with the workspace held, so no other loop writes checkpoints; the
    todo list and the status document are swept under their own locks, which
    every writer of them (the CLI and the API included) takes around its write.
    """
    removed = _remove_temps_of(root / CHECKPOINTS_RELDIR, None)
    state = root / STATUS_RELPATH
    present = {m.group("name") for e in os.listdir(state.parent) if (m := _TEMP.match(e))}
    for relpath, lock in ((TODOS_RELPATH, TODOS_LOCK_RELPATH), (STATUS_RELPATH, STATUS_LOCK_RELPATH)):
        name = relpath.rsplit("/", 1)[1]
        if name in present:
            with file_lock(root / lock):
                removed += _remove_temps_of(state.parent, {name})
    return removed
