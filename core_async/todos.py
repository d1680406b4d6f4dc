"""The todo list, async: ``.agent/todos.json`` in the legacy format, byte for byte.

Each operation is one thread hop running the whole blocking step (see
:mod:`core_async.fsops`): :meth:`AsyncTodoJsonStore.add` takes the same
cross-process ``flock`` on ``.agent/todos.lock`` as the legacy store, inside
the worker thread, so waiting for another process never blocks the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from codeagent.errors import StateFileError
from codeagent.models import Todo, TodoFile, dump_json, new_todo_id
from codeagent.paths import TODOS_LOCK_RELPATH, TODOS_RELPATH, check_relative_path
from core_async._compat import ato_thread
from core_async.fsops import atomic_write_text, file_lock, read_model


class AsyncTodoJsonStore:
    """Reads and appends to the todo list of one workspace; a missing file is an empty list."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / TODOS_RELPATH
        self.lock_path = self.root / TODOS_LOCK_RELPATH

    def _read(self) -> TodoFile:
        doc = read_model(self.path, TodoFile, TODOS_RELPATH) or TodoFile()
        seen: set[str] = set()
        for index, todo in enumerate(doc.todos):
            if todo.id in seen:
                raise StateFileError(
                    TODOS_RELPATH, f"duplicate todo id {todo.id!r}", field=f"todos[{index}].id"
                )
            seen.add(todo.id)
        return doc

    def _append(self, text: str, paths: list[str]) -> Todo:
        with file_lock(self.lock_path):
            doc = self._read()
            todo = Todo(id=new_todo_id({t.id for t in doc.todos}), text=text, files=paths)
            doc.todos.append(todo)
            atomic_write_text(self.path, dump_json(doc))
        return todo

    async def load(self) -> list[Todo]:
        """Every todo, in file order. Raises :class:`StateFileError` for a bad file."""
        doc = await ato_thread(self._read)
        return doc.todos

    async def get(self, todo_id: str) -> Todo | None:
        """One todo by id, or ``None``."""
        return next((todo for todo in await self.load() if todo.id == todo_id), None)

    async def add(self, text: str, files: Sequence[str] = ()) -> Todo:
        """Append a new todo with the next free id and return it.

        Raises ``pydantic.ValidationError`` for empty text and
        :class:`codeagent.errors.WorkspaceViolation` for a file path outside the workspace.
        """
        paths = [check_relative_path(path) for path in files]
        return await ato_thread(self._append, text, paths)
