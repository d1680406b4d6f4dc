"""Data models shared by every implementation: todos, status, checkpoints.

These are the on-disk formats of the legacy agent (``.agent/todos.json``,
``.agent/status.json``, ``.agent/checkpoints/<todo-id>.json``). They are plain
pydantic models with no I/O; each implementation serialises them with
:func:`dump_json` so that every implementation writes byte-identical files.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

TODO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def utcnow() -> datetime:
    """Current time, timezone-aware UTC, truncated to milliseconds."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, validate_assignment=True)


class TodoStatus(StrEnum):
    """Lifecycle of one todo. ``interrupted`` is set by a graceful shutdown."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    @property
    def finished(self) -> bool:
        return self in (TodoStatus.DONE, TodoStatus.FAILED)


class Todo(_Model):
    """One unit of work as a person wrote it: what to do and which files it concerns."""

    id: str
    text: str = Field(min_length=1)
    files: list[str] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not TODO_ID_RE.match(value):
            raise ValueError("todo id must be 1-64 characters of letters, digits, '.', '_' or '-'")
        return value


class TodoFile(_Model):
    """The whole ``.agent/todos.json`` document."""

    version: Literal[1] = 1
    todos: list[Todo] = Field(default_factory=list)


class TodoState(_Model):
    """Where one todo stands; kept in ``.agent/status.json`` under ``todos``."""

    status: TodoStatus = TodoStatus.PENDING
    error: str | None = None
    commit: str | None = None
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime = Field(default_factory=utcnow)


class AgentState(_Model):
    """What the loop itself is doing; kept in ``.agent/status.json`` under ``agent``."""

    state: Literal["idle", "working", "stopped"] = "stopped"
    current_todo: str | None = None
    pid: int | None = None
    loop: str = "legacy"
    processed: int = 0
    updated_at: datetime = Field(default_factory=utcnow)


class StatusFile(_Model):
    """The whole ``.agent/status.json`` document."""

    version: Literal[1] = 1
    agent: AgentState = Field(default_factory=AgentState)
    todos: dict[str, TodoState] = Field(default_factory=dict)


class Stage(StrEnum):
    """Checkpoint stages of one todo, in order. Work resumes after the last one saved."""

    STARTED = "started"
    ANSWERED = "answered"
    EDITED = "edited"
    COMMITTED = "committed"

    @property
    def rank(self) -> int:
        return list(Stage).index(self)


class Checkpoint(_Model):
    """Legacy checkpoint of one todo (``.agent/checkpoints/<todo-id>.json``).

    ``writes`` holds the full planned content of every file the LLM's edits touch,
    computed in memory before anything is written, so replaying the ``edited``
    step after a crash is idempotent (it writes the same bytes again).
    """

    todo_id: str
    stage: Stage
    reply: str | None = None
    writes: dict[str, str] = Field(default_factory=dict)
    commit: str | None = None
    updated_at: datetime = Field(default_factory=utcnow)


def dump_json(model: BaseModel) -> str:
    """Serialise a model the one way every implementation writes it (stable, indented)."""
    data: Any = model.model_dump(mode="json")
    return json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def pending_todos(todos: list[Todo], status: StatusFile) -> list[Todo]:
    """Todos still to work on, in file order: never finished, or interrupted mid-way."""
    out: list[Todo] = []
    for todo in todos:
        state = status.todos.get(todo.id)
        if state is None or not state.status.finished:
            out.append(todo)
    return out


def new_todo_id(existing: set[str]) -> str:
    """Next free id of the form ``t-0001`` (readable in commits and URLs)."""
    n = len(existing) + 1
    while f"t-{n:04d}" in existing:
        n += 1
    return f"t-{n:04d}"


def todo_view(todo: Todo, state: TodoState | None) -> dict[str, Any]:
    """The JSON body of one todo in the HTTP API (legacy and async servers alike)."""
    state = state or TodoState()
    body: dict[str, Any] = todo.model_dump(mode="json")
    body.update(
        status=state.status.value,
        error=state.error,
        commit=state.commit,
        attempts=state.attempts,
        updated_at=state.updated_at.isoformat().replace("+00:00", "Z"),
    )
    return body
