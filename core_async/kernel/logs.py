"""Structured logs: a correlation id per todo and per request, JSON lines when asked for.

The ids live in the domain's context variables (:mod:`codeagent.context`), so
a log line written anywhere under a todo's task (components, the bridge)
carries that todo's id, and one written while answering an API request
carries the request's id. :class:`CorrelationFilter` copies them onto every
record; :class:`JsonLinesFormatter` renders one JSON object per line.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

from codeagent.context import correlation_id, current_todo

#: The workspace (its name in the API) the current task works in.
current_workspace: ContextVar[str | None] = ContextVar("codeagent_current_workspace", default=None)

LOG_FORMAT_ENV = "CODEAGENT_LOG_FORMAT"
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s"
_NOISY = ("httpx", "httpcore", "watchfiles", "uvicorn.error", "hpack", "h2")
_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def new_request_id() -> str:
    """A short random id for one API request (or one WebSocket connection)."""
    return "req-" + secrets.token_hex(6)


@contextmanager
def correlation(cid: str, *, todo_id: str | None = None, workspace: str | None = None) -> Iterator[None]:
    """Bind ``cid`` (and the todo and workspace when given) to the current context for a block."""
    tokens = [(correlation_id, correlation_id.set(cid))]
    if todo_id is not None:
        tokens.append((current_todo, current_todo.set(todo_id)))
    if workspace is not None:
        tokens.append((current_workspace, current_workspace.set(workspace)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class CorrelationFilter(logging.Filter):
    """Adds ``correlation_id``, ``todo_id`` and ``workspace`` to every record (``-`` when unset)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "correlation_id"):
            record.correlation_id = correlation_id.get() or "-"
        if not hasattr(record, "todo_id"):
            record.todo_id = current_todo.get()
        if not hasattr(record, "workspace"):
            record.workspace = current_workspace.get()
        return True


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, correlation id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "correlation_id": getattr(record, "correlation_id", None) or correlation_id.get(),
        }
        todo_id = getattr(record, "todo_id", None) or current_todo.get()
        if todo_id:
            body["todo_id"] = todo_id
        workspace = getattr(record, "workspace", None) or current_workspace.get()
        if workspace:
            body["workspace"] = workspace
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key not in body and not key.startswith("_"):
                body[key] = value if isinstance(value, str | int | float | bool | None) else repr(value)
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, ensure_ascii=False)


def wants_json(json_lines: bool | None) -> bool:
    """``json_lines`` when given, else whether ``CODEAGENT_LOG_FORMAT=json`` is set."""
    if json_lines is not None:
        return json_lines
    return os.environ.get(LOG_FORMAT_ENV, "").strip().lower() == "json"


def configure_logging(
    *, json_lines: bool | None = None, level: int = logging.INFO, stream: TextIO | None = None
) -> logging.Handler:
    """Send logs to ``stream`` (stderr) through the root logger, as text or JSON lines.

    Returns the handler. Idempotent: a handler installed by an earlier call is
    replaced; handlers installed by others are left alone.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(CorrelationFilter())
    handler.setFormatter(JsonLinesFormatter() if wants_json(json_lines) else logging.Formatter(_TEXT_FORMAT))
    handler.set_name("codeagent-kernel")
    logger = logging.getLogger()
    for old in [h for h in logger.handlers if h.get_name() == "codeagent-kernel"]:
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level)
    for noisy in _NOISY:  # one line per HTTP request / per file-system batch: debug material
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    return handler
