"""The status record, ``.agent/status.json`` (a :class:`codeagent.models.StatusFile`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from codeagent.models import AgentState, StatusFile, TodoState, dump_json
from codeagent.paths import STATUS_LOCK_RELPATH, STATUS_RELPATH
from legacy.jsonstate import atomic_write_text, file_lock, read_model


class StatusStore:
    """Where each todo stands and what the loop is doing.

    Every update re-reads the file under an ``flock`` (``.agent/status.lock``),
    changes one entry and writes the whole document atomically, so readers (the
    HTTP API, ``codeagent status``) always see a complete document.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / STATUS_RELPATH
        self.lock_path = self.root / STATUS_LOCK_RELPATH

    def load(self) -> StatusFile:
        """The whole document; an empty one when the file does not exist."""
        return read_model(self.path, StatusFile, STATUS_RELPATH) or StatusFile()

    def _update(self, change: Callable[[StatusFile], None]) -> None:
        with file_lock(self.lock_path):
            doc = self.load()
            change(doc)
            atomic_write_text(self.path, dump_json(doc))

    def set_todo(self, todo_id: str, state: TodoState) -> None:
        """Record the state of one todo."""

        def change(doc: StatusFile) -> None:
            doc.todos[todo_id] = state

        self._update(change)

    def set_agent(self, agent: AgentState) -> None:
        """Record what the loop is doing."""

        def change(doc: StatusFile) -> None:
            doc.agent = agent

        self._update(change)
