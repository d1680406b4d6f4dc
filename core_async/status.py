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
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from codeagent.models import AgentState, StatusFile, TodoState, dump_json
from codeagent.paths import STATUS_LOCK_RELPATH, STATUS_RELPATH
from core_async._compat import ALock, ato_thread, ato_thread_settled
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

    def _read(self) -> StatusFile:
        return read_model(self.path, StatusFile, STATUS_RELPATH) or StatusFile()

    def _update(self, changes: list[Change]) -> None:
        with file_lock(self.lock_path):
            doc = self._read()
            for change in changes:
                change(doc)
            atomic_write_text(self.path, dump_json(doc))
        self.writes += 1

    async def _commit(self, change: Change) -> None:
        mine = _Pending(change)
        self._queue.append(mine)
        async with self._writer:
            if not mine.settled:
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
        """The whole document; an empty one when the file does not exist."""
        return await ato_thread(self._read)

    async def set_todo(self, todo_id: str, state: TodoState) -> None:
        """Record the state of one todo."""

        def change(doc: StatusFile) -> None:
            doc.todos[todo_id] = state

        await self._commit(change)

    async def set_agent(self, agent: AgentState) -> None:
        """Record what the loop is doing."""

        def change(doc: StatusFile) -> None:
            doc.agent = agent

        await self._commit(change)
