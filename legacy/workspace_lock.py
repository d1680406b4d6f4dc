"""One agent loop per workspace: an flock on ``.agent/agent.lock``.

The kernel releases an flock when its holder dies, so a crashed loop never
leaves the workspace stuck; the file's content (pid, loop, start time) only
informs the message a second loop or the migration script prints.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from codeagent.errors import AgentError
from codeagent.models import utcnow
from codeagent.paths import AGENT_LOCK_RELPATH


class WorkspaceBusy(AgentError):
    """Another live process holds the workspace."""

    def __init__(self, root: Path, holder: dict[str, Any] | None):
        self.root = root
        self.holder = holder or {}
        who = f"pid {self.holder.get('pid', '?')} ({self.holder.get('loop', '?')} loop)"
        super().__init__(f"workspace {root} is held by {who} since {self.holder.get('since', '?')}")


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
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkspaceBusy(root, _read_holder(path)) from None
        info = {"pid": os.getpid(), "loop": loop, "since": utcnow().isoformat()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def workspace_holder(root: Path) -> dict[str, Any] | None:
    """Who holds the workspace right now (``None`` when no live process does)."""
    path = root / AGENT_LOCK_RELPATH
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(path) or {"pid": None}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
