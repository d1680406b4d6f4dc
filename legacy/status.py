"""The status record, ``.agent/status.json`` (a :class:`codeagent.models.StatusFile`)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from codeagent.errors import StateFileError, TodoCancelled
from codeagent.models import (
    AgentState,
    OperatorAction,
    StatusFile,
    TodoChange,
    TodoState,
    apply_operation,
    dump_json,
    refuses_start,
    requeue_notice,
)
from codeagent.paths import REQUEUE_RELPATH, STATUS_LOCK_RELPATH, STATUS_RELPATH
from legacy.jsonstate import atomic_write_text, file_lock, read_model


class StatusStore:
    """Where each todo stands and what the loop is doing.

    Every update re-reads the file under an ``flock`` (``.agent/status.lock``),
    changes one entry and writes the whole document atomically, so readers (the
    HTTP API, ``codeagent status``) always see a complete document, and the
    operator's ``todo retry`` / ``todo cancel`` never lose a loop's update (nor
    the loop theirs).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / STATUS_RELPATH
        self.lock_path = self.root / STATUS_LOCK_RELPATH
        self._snapshot: tuple[tuple[int, int, int], StatusFile] | None = None
        self._snapshot_lock = threading.Lock()

    def _read(self) -> StatusFile:
        return read_model(self.path, StatusFile, STATUS_RELPATH) or StatusFile()

    def load(self) -> StatusFile:
        """The whole document; an empty one when the file does not exist. Read it, do not change it.

        Loads of an unchanged file (same inode, size and modification time:
        every write replaces the file) share one parsed snapshot. The document
        grows with every todo, and the async core starts dozens of todos at
        once, each loading it: one copy each made the memory grow with the
        history times the concurrency (found by the chaos campaign's soak).
        """
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return StatusFile()
        except OSError:
            return self._read()  # which names the file and the reason
        key = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        with self._snapshot_lock:
            if self._snapshot is not None and self._snapshot[0] == key:
                return self._snapshot[1]
            doc = self._read()
            self._snapshot = (key, doc)
            return doc

    def _update(self, change: Callable[[StatusFile], None]) -> None:
        try:
            with file_lock(self.lock_path):
                doc = self._read()
                change(doc)
                atomic_write_text(self.path, dump_json(doc))
        except OSError as exc:  # a full disk, a read-only file system: say so, the old document stays
            raise StateFileError(STATUS_RELPATH, f"cannot write: {exc.strerror or exc}") from exc

    def set_todo(self, todo_id: str, state: TodoState) -> None:
        """Record the state of one todo.

        Starting a todo an operator cancelled (``running`` over ``cancelled``)
        is refused under the lock: nothing is recorded and
        :class:`codeagent.errors.TodoCancelled` is raised.
        """
        refused = False

        def change(doc: StatusFile) -> None:
            nonlocal refused
            if refuses_start(doc.todos.get(todo_id), state):
                refused = True
                return
            doc.todos[todo_id] = state

        self._update(change)
        if refused:
            raise TodoCancelled(todo_id)

    def set_agent(self, agent: AgentState) -> None:
        """Record what the loop is doing."""

        def change(doc: StatusFile) -> None:
            doc.agent = agent

        self._update(change)

    def operate(
        self, action: OperatorAction, todo_ids: Sequence[str], *, source: str, loop_running: bool
    ) -> list[TodoChange]:
        """An operator's ``retry`` or ``cancel`` of ``todo_ids``, in one locked read-modify-write.

        Returns what happened to each todo (see :func:`codeagent.models.apply_operation`;
        the caller checks the ids exist). After a retry that was not refused
        everywhere, ``.agent/requeue.json`` is rewritten, which wakes a running
        async kernel (the legacy loop sees the todo at its next poll).
        """
        changes: list[TodoChange] = []

        def change(doc: StatusFile) -> None:
            changes.extend(
                apply_operation(doc, action, list(todo_ids), source=source, loop_running=loop_running)
            )

        self._update(change)
        requeued = [c.todo_id for c in changes if c.refused is None]
        if action == "retry" and requeued:
            atomic_write_text(self.root / REQUEUE_RELPATH, requeue_notice(requeued, source), fsync=False)
        return changes
