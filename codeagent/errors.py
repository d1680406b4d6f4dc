"""Typed errors shared by every implementation.

Each error says which file, key or field is at fault so that a person can fix
it without reading a traceback. One todo's fault is recorded on that todo; the
loop goes on with the next one.
"""

from __future__ import annotations

from typing import Any


class AgentError(Exception):
    """Base of every error Code Agent raises on purpose."""


class InvalidInput(AgentError):
    """A value a person gave (a CLI argument or option, an API body field) is not acceptable.

    ``field`` names it the way the person wrote it (``text``, ``--status``,
    ``todo id``); the message says what is wrong in one line and names the field
    in words, so it can be printed as it is.
    """

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(message)


class TodoNotFound(AgentError):
    """No todo with this id in ``.agent/todos.json``."""

    def __init__(self, todo_id: str):
        self.todo_id = todo_id
        super().__init__(f"no todo {todo_id!r}")


class TodoCancelled(AgentError):
    """A loop tried to start a todo an operator had cancelled; it is not started."""

    def __init__(self, todo_id: str):
        self.todo_id = todo_id
        super().__init__(f"todo {todo_id} is cancelled; it is not started")


#: pydantic error types, in the project's words (``{name}`` filled from the error's context).
_VALIDATION_WORDS = {
    "missing": "is required",
    "extra_forbidden": "is not a known field",
    "string_type": "must be a string",
    "string_too_short": "must not be empty",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "literal_error": "must be {expected}",
    "enum": "must be {expected}",
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "datetime_parsing": "must be a date and time (ISO 8601)",
    "datetime_type": "must be a date and time (ISO 8601)",
}


def validation_message(exc: Any) -> tuple[str, str]:
    """``(field, what is wrong)`` for the first error of a pydantic ``ValidationError``, in our words.

    The field is dotted (``llm.timeout``, ``todos[3].id``; ``(document)`` for
    the whole thing). Never includes pydantic's links or error codes.
    """
    from codeagent.jsondoc import field_name  # jsondoc imports this module

    first = exc.errors(include_url=False)[0]
    field = field_name(tuple(first.get("loc", ())))
    template = _VALIDATION_WORDS.get(first.get("type", ""))
    if template is not None:
        try:
            return field, template.format(**(first.get("ctx") or {}))
        except (KeyError, IndexError):
            pass
    message = str(first.get("msg", "is not valid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return field, message


def validation_line(exc: Any) -> str:
    """One line, ``field: what is wrong``, for a pydantic ``ValidationError``."""
    field, message = validation_message(exc)
    return f"{field}: {message}"


class ConfigError(AgentError):
    """The configuration file is unreadable or invalid."""

    def __init__(self, path: str, message: str, *, field: str | None = None, line: int | None = None):
        self.path = path
        self.field = field
        self.line = line
        where = path
        if line is not None:
            where += f":{line}"
        if field:
            where += f": {field}"
        super().__init__(f"{where}: {message}")


class StateFileError(AgentError):
    """A state file (todos, status, checkpoint) is unreadable or invalid."""

    def __init__(self, path: str, message: str, *, field: str | None = None, line: int | None = None):
        self.path = path
        self.field = field
        self.line = line
        where = path
        if line is not None:
            where += f":{line}"
        if field:
            where += f": {field}"
        super().__init__(f"{where}: {message}")


class WorkspaceViolation(AgentError):
    """A path would reach outside the workspace or into ``.git/``."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"refused path {path!r}: {reason}")


class EditError(AgentError):
    """An LLM answer's edit blocks could not be parsed or applied."""

    def __init__(self, message: str, *, block: int | None = None, path: str | None = None):
        self.block = block
        self.path = path
        where = []
        if block is not None:
            where.append(f"edit block {block}")
        if path:
            where.append(f"for {path}")
        prefix = " ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class LLMError(AgentError):
    """The LLM endpoint could not give a usable answer."""


class LLMTimeout(LLMError):
    """No answer within the deadline."""


class LLMHTTPError(LLMError):
    """The endpoint answered with an HTTP error status."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(f"HTTP {status}: {message}")


class LLMRateLimited(LLMHTTPError):
    """429 after every retry was spent."""


class LLMQuotaExceeded(LLMHTTPError):
    """The account's quota is exhausted: retrying cannot help."""


class LLMMalformedResponse(LLMError):
    """The endpoint answered 200 with a body that is not a chat completion."""


class LLMConnectionError(LLMError):
    """The connection failed (refused, reset, GOAWAY) after every retry."""


class GitError(AgentError):
    """A git command failed."""

    def __init__(self, args: list[str], returncode: int, stderr: str):
        self.args_list = args
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"git {' '.join(args)} exited {returncode}: {stderr.strip()}")
