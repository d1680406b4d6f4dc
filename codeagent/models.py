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

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)

from codeagent.errors import InvalidInput

TODO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def utcnow() -> datetime:
    """Current time, timezone-aware UTC, truncated to milliseconds."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, validate_assignment=True)


class TodoStatus(StrEnum):
    """Lifecycle of one todo.

    ``interrupted`` is set by a graceful shutdown (the todo resumes on the next
    start); ``cancelled`` by an operator (``codeagent todo cancel``, ``POST
    /todos/{id}/cancel``): no loop starts it, and ``todo retry`` puts it back.
    """

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether no loop will work on it again by itself (done, failed or cancelled)."""
        return self in (TodoStatus.DONE, TodoStatus.FAILED, TodoStatus.CANCELLED)


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


OperatorAction = Literal["retry", "cancel"]

#: How many operator actions ``.agent/status.json`` keeps (the oldest go first).
MAX_OPERATIONS = 1000


class Operation(_Model):
    """One operator action that changed a todo's status: the audit trail of ``retry`` and ``cancel``.

    Kept in ``.agent/status.json`` under ``operations``, oldest first. The
    loops replace a todo's :class:`TodoState` wholesale, so what a state held
    before the action (its status, error and commit) is kept here.
    """

    at: datetime = Field(default_factory=utcnow)
    todo_id: str
    action: OperatorAction
    source: str
    previous: TodoStatus
    error: str | None = None
    commit: str | None = None
    attempts: int = 0


class StatusFile(_Model):
    """The whole ``.agent/status.json`` document.

    ``operations`` is written only once an operator acted, so a workspace no
    one retried or cancelled anything in keeps its files byte for byte.
    """

    version: Literal[1] = 1
    agent: AgentState = Field(default_factory=AgentState)
    todos: dict[str, TodoState] = Field(default_factory=dict)
    operations: list[Operation] = Field(default_factory=list)

    @model_serializer(mode="wrap")
    def _omit_no_operations(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict) and not self.operations:
            data.pop("operations", None)
        return data


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
    """Todos still to work on, in file order: never finished, or interrupted mid-way.

    Done, failed and cancelled todos are left alone (``todo retry`` puts them back).
    """
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


# ----------------------------------------------------------------- what people type


def check_todo_text(text: str) -> str:
    """``text`` if it says something; :class:`InvalidInput` (``text``) when it is empty or blank."""
    if not text.strip():
        raise InvalidInput("text", "the todo text is empty")
    return text


def check_todo_id(value: str) -> str:
    """``value`` if it can be a todo id; :class:`InvalidInput` (``todo id``) otherwise."""
    if not TODO_ID_RE.match(value):
        raise InvalidInput(
            "todo id",
            f"todo id {value!r} is not valid: 1-64 letters, digits, '.', '_' or '-', not starting with"
            " '.', '_' or '-'",
        )
    return value


def parse_status(value: str, field: str = "status") -> TodoStatus:
    """The :class:`TodoStatus` named ``value``; :class:`InvalidInput` naming ``field`` otherwise."""
    try:
        return TodoStatus(value.strip().lower())
    except ValueError:
        known = ", ".join(s.value for s in TodoStatus)
        raise InvalidInput(field, f"{field}: unknown status {value!r} (one of {known})") from None


def status_of(state: TodoState | None) -> TodoStatus:
    """A todo's status (``pending`` when the status file has no entry for it yet)."""
    return state.status if state is not None else TodoStatus.PENDING


def status_counts(todos: list[Todo], status: StatusFile) -> dict[str, int]:
    """How many todos of the list are in each status (every status named, zeros included)."""
    counts = {s.value: 0 for s in TodoStatus}
    for todo in todos:
        counts[status_of(status.todos.get(todo.id)).value] += 1
    return counts


# ----------------------------------------------------------------- operator actions


class TodoChange(_Model):
    """What an operator action did to one todo: its status before and after, or why it was refused.

    ``changed`` is false for an action with nothing to do (retrying a pending
    todo, cancelling a cancelled one) and for a refused one (``refused`` says why).
    """

    todo_id: str
    action: OperatorAction
    before: TodoStatus
    after: TodoStatus
    changed: bool
    refused: str | None = None


def refuses_start(current: TodoState | None, new: TodoState) -> bool:
    """Whether writing ``new`` over ``current`` would start a cancelled todo (the stores refuse that)."""
    return new.status is TodoStatus.RUNNING and current is not None and current.status is TodoStatus.CANCELLED


def _refusal(action: OperatorAction, state: TodoState | None, loop_running: bool) -> str | None:
    status = status_of(state)
    if status is TodoStatus.DONE:
        commit = f" in commit {state.commit[:12]}" if state is not None and state.commit else ""
        if action == "retry":
            return f"it is done{commit}; add a new todo to change it again"
        return f"it is already done{commit}"
    if status is TodoStatus.RUNNING and loop_running:
        if action == "retry":
            return "it is running; retry it once it has failed"
        return "it is running; a running todo cannot be cancelled (stopping the loop interrupts it)"
    return None


def plan_change(
    action: OperatorAction, todo_id: str, state: TodoState | None, *, loop_running: bool
) -> TodoChange:
    """What ``action`` would do to a todo in ``state``.

    ``retry`` puts a failed, interrupted or cancelled todo back to pending;
    ``cancel`` takes a pending, failed or interrupted one out of the queue. A
    done todo is refused, and so is a running one while a loop runs
    (``loop_running``); with no loop running, a ``running`` state is what a
    crash left behind and counts as interrupted.
    """
    before = status_of(state)
    refused = _refusal(action, state, loop_running)
    if refused is not None:
        return TodoChange(
            todo_id=todo_id, action=action, before=before, after=before, changed=False, refused=refused
        )
    after = TodoStatus.PENDING if action == "retry" else TodoStatus.CANCELLED
    return TodoChange(todo_id=todo_id, action=action, before=before, after=after, changed=before != after)


def requeue_notice(todo_ids: list[str], source: str) -> str:
    """The text of ``.agent/requeue.json``: which todos a retry just put back in the queue, when, by whom."""
    body = {"at": utcnow().isoformat().replace("+00:00", "Z"), "source": source, "todo_ids": todo_ids}
    return json.dumps(body) + "\n"


def apply_operation(
    doc: StatusFile,
    action: OperatorAction,
    todo_ids: list[str],
    *,
    source: str,
    loop_running: bool,
) -> list[TodoChange]:
    """Apply ``action`` to each todo of ``todo_ids`` in ``doc``; record what changed in ``doc.operations``.

    Run it on a document read under the status lock and write the document
    back before letting go of the lock. Attempts are kept; the error and commit
    a state held move to its :class:`Operation`.
    """
    changes: list[TodoChange] = []
    now = utcnow()
    for todo_id in dict.fromkeys(todo_ids):
        state = doc.todos.get(todo_id)
        change = plan_change(action, todo_id, state, loop_running=loop_running)
        changes.append(change)
        if not change.changed:
            continue
        attempts = state.attempts if state is not None else 0
        doc.operations.append(
            Operation(
                at=now,
                todo_id=todo_id,
                action=action,
                source=source,
                previous=change.before,
                error=state.error if state is not None else None,
                commit=state.commit if state is not None else None,
                attempts=attempts,
            )
        )
        doc.todos[todo_id] = TodoState(
            status=change.after,
            attempts=attempts,
            finished_at=now if change.after is TodoStatus.CANCELLED else None,
            updated_at=now,
        )
    if len(doc.operations) > MAX_OPERATIONS:
        doc.operations = doc.operations[-MAX_OPERATIONS:]
    return changes
