"""The status record, async: ``.agent/status.json`` in the legacy format, byte for byte.

Every update is one thread hop that re-reads the document under the same
``flock`` as legacy (``.agent/status.lock``), changes one entry and writes
the whole document atomically (temp file, fsync, rename, fsync of the
directory), so readers always see a complete document.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from codeagent.models import AgentState, StatusFile, TodoState, dump_json
from core_async._compat import ato_thread
from core_async.fsops import atomic_write_text, file_lock, read_model

STATUS_RELPATH = ".agent/status.json"
LOCK_RELPATH = ".agent/status.lock"


class AsyncStatusJsonStore:
    """Where each todo stands and what the loop is doing."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / STATUS_RELPATH
        self.lock_path = self.root / LOCK_RELPATH

    def _read(self) -> StatusFile:
        return read_model(self.path, StatusFile, STATUS_RELPATH) or StatusFile()

    def _update(self, change: Callable[[StatusFile], None]) -> None:
        with file_lock(self.lock_path):
            doc = self._read()
            change(doc)
            atomic_write_text(self.path, dump_json(doc))

    async def load(self) -> StatusFile:
        """The whole document; an empty one when the file does not exist."""
        return await ato_thread(self._read)

    async def set_todo(self, todo_id: str, state: TodoState) -> None:
        """Record the state of one todo."""

        def change(doc: StatusFile) -> None:
            doc.todos[todo_id] = state

        await ato_thread(self._update, change)

    async def set_agent(self, agent: AgentState) -> None:
        """Record what the loop is doing."""

        def change(doc: StatusFile) -> None:
            doc.agent = agent

        await ato_thread(self._update, change)
