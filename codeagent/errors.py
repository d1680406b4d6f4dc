"""Typed errors shared by every implementation.

Each error says which file, key or field is at fault so that a person can fix
it without reading a traceback. One todo's fault is recorded on that todo; the
loop goes on with the next one.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error Code Agent raises on purpose."""


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
