"""Context variables both loops set, so that routing and logs know which todo a call serves."""

from __future__ import annotations

from contextvars import ContextVar

#: The id of the todo the current call works for (``None`` outside a todo).
current_todo: ContextVar[str | None] = ContextVar("current_todo", default=None)
#: A correlation id for logs: the todo id, or a request id in the API.
correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)
