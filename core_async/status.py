"""The status record, async: ``.agent/status.json`` in the legacy format, byte for byte.

Every update re-reads the document under the same ``flock`` as legacy
(``.agent/status.lock``), changes it and writes the whole document atomically
(temp file, fsync, rename, fsync of the directory), so readers always see a
complete document.

Updates that arrive while another is being written are written together
(group commit): each caller queues its change and takes the store's lock;
whoever gets the lock writes every change queued so far, in arrival order, in
one thread hop, and the callers whose changes went with it find them written
when their turn comes and return. With ten todos in flight per workspace that
is one read-modify-write (and two fsyncs) for several updates instead of one
each; a lone caller pays exactly what it paid before. A failed write is raised
to every caller whose change it carried.

The operator's ``retry`` and ``cancel`` (:meth:`AsyncStatusJsonStore.operate`)
go through the same queue and lock, and starting a cancelled todo is refused
under the lock (:meth:`AsyncStatusJsonStore.set_todo`).
"""

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
from core_async._compat import ALock, asleep, ato_thread, ato_thread_settled
from core_async.fsops import atomic_write_text, file_lock, read_model

Change = Callable[[StatusFile], None]


class _Pending:
    """One caller's change and, once written (or not), the outcome."""

    __slots__ = ("change", "error", "settled")

    def __init__(self, change: Change) -> None:
        self.change = change
        self.settled = False
        self.error: BaseException | None = None


class AsyncStatusJsonStore:
    """Where each todo stands and what the loop is doing."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / STATUS_RELPATH
        self.lock_path = self.root / STATUS_LOCK_RELPATH
        self._queue: list[_Pending] = []
        self._writer = ALock()
        self.writes = 0  # documents written (a batch counts once)
        self._snapshot: tuple[tuple[int, int, int], StatusFile] | None = None
        self._snapshot_lock = threading.Lock()

    def _read(self) -> StatusFile:
        return read_model(self.path, StatusFile, STATUS_RELPATH) or StatusFile()

    def _read_shared(self) -> StatusFile:
        """The document, shared by every load of the same file version (see :meth:`load`)."""
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

    def _update(self, changes: list[Change]) -> None:
        try:
            with file_lock(self.lock_path):
                doc = self._read()
                for change in changes:
                    change(doc)
                atomic_write_text(self.path, dump_json(doc))
        except OSError as exc:  # a full disk, a read-only file system: say so, the old document stays
            raise StateFileError(STATUS_RELPATH, f"cannot write: {exc.strerror or exc}") from exc
        self.writes += 1

    async def _commit(self, change: Change) -> None:
        mine = _Pending(change)
        self._queue.append(mine)
        async with self._writer:
            if not mine.settled:
                # One turn of the loop first: updates that tasks made ready by the same event
                # (a todo's running and the agent's working state) join this write.
                await asleep(0)
                # A snapshot: in the threaded sync twin a late caller may still append to the
                # list being swapped out; it is not in the snapshot and writes its own change.
                batch = list(self._queue)
                self._queue = []
                if mine not in batch:
                    batch.append(mine)
                try:
                    await ato_thread_settled(self._update, [p.change for p in batch])
                except Exception as exc:
                    for pending in batch:
                        pending.error = exc
                    raise
                finally:
                    for pending in batch:
                        pending.settled = True
            elif mine.error is not None:
                raise mine.error

    async def load(self) -> StatusFile:
        """The whole document; an empty one when the file does not exist. Read it, do not change it.

        Loads of an unchanged file (same inode, size and modification time:
        every write replaces the file) share one parsed snapshot. The document
        grows with every todo, and dozens of todos start at once, each loading
        it: one copy each made the memory grow with the history times the
        concurrency (found by the chaos campaign's soak).
        """
        return await ato_thread(self._read_shared)

    async def set_todo(self, todo_id: str, state: TodoState) -> None:
        """Record the state of one todo.

        Starting a todo an operator cancelled (``running`` over ``cancelled``)
        is refused under the lock: nothing is recorded for it (the other
        changes of its batch are) and :class:`codeagent.errors.TodoCancelled`
        is raised to this caller only.
        """
        refused: list[bool] = []

        def change(doc: StatusFile) -> None:
            if refuses_start(doc.todos.get(todo_id), state):
                refused.append(True)
                return
            doc.todos[todo_id] = state

        await self._commit(change)
        if refused:
            raise TodoCancelled(todo_id)

    async def set_agent(self, agent: AgentState) -> None:
        """Record what the loop is doing."""

        def change(doc: StatusFile) -> None:
            doc.agent = agent

        await self._commit(change)

    async def operate(
        self, action: OperatorAction, todo_ids: Sequence[str], *, source: str, loop_running: bool
    ) -> list[TodoChange]:
        """An operator's ``retry`` or ``cancel`` of ``todo_ids``, written like any other update.

        Returns what happened to each todo (see :func:`codeagent.models.apply_operation`;
        the caller checks the ids exist). After a retry that was not refused
        everywhere, ``.agent/requeue.json`` is rewritten: a running kernel
        watches it and looks at the workspace's todos again.
        """
        changes: list[TodoChange] = []

        def change(doc: StatusFile) -> None:
            changes.extend(
                apply_operation(doc, action, list(todo_ids), source=source, loop_running=loop_running)
            )

        await self._commit(change)
        requeued = [c.todo_id for c in changes if c.refused is None]
        if action == "retry" and requeued:
            notice = requeue_notice(requeued, source)
            await ato_thread(atomic_write_text, self.root / REQUEUE_RELPATH, notice, fsync=False)
        return changes
