"""The todo list, ``.agent/todos.json`` (a :class:`codeagent.models.TodoFile`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from codeagent.errors import StateFileError
from codeagent.models import Todo, TodoFile, dump_json, new_todo_id
from codeagent.paths import TODOS_LOCK_RELPATH, TODOS_RELPATH, check_relative_path
from legacy.jsonstate import atomic_write_text, file_lock, read_model


class TodoStore:
    """Reads and appends to the todo list of one workspace.

    A missing file is an empty list. :meth:`add` holds an ``flock`` on
    ``.agent/todos.lock`` around its read-modify-write, so the CLI, the HTTP API
    and the loop can all touch the file without losing an addition.
    """

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

    def load(self) -> list[Todo]:
        """Every todo, in file order. Raises :class:`StateFileError` for a bad file."""
        return self._read().todos

    def get(self, todo_id: str) -> Todo | None:
        """One todo by id, or ``None``."""
        return next((todo for todo in self.load() if todo.id == todo_id), None)

    def add(self, text: str, files: Sequence[str] = ()) -> Todo:
        """Append a new todo with the next free id and return it.

        Raises ``pydantic.ValidationError`` for empty text and
        :class:`codeagent.errors.WorkspaceViolation` for a file path outside the workspace.
        """
        paths = [check_relative_path(path) for path in files]
        with file_lock(self.lock_path):
            doc = self._read()
            todo = Todo(id=new_todo_id({t.id for t in doc.todos}), text=text, files=paths)
            doc.todos.append(todo)
            atomic_write_text(self.path, dump_json(doc))
        return todo
