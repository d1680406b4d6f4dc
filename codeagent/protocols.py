"""Component protocols: what each loop is handed, in a sync and an async form.

The legacy loop takes ``Sync*`` components, the async core ``Async*`` ones.
Names follow unasync's rule (``AsyncX`` -> ``SyncX``) so that the generated
sync twins of ``core_async`` type-check against the ``Sync*`` protocols.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

from codeagent.config import AgentConfig
from codeagent.models import AgentState, Checkpoint, StatusFile, Todo, TodoState

Message = dict[str, str]


class SyncConfigSource(Protocol):
    def load(self) -> AgentConfig: ...


class AsyncConfigSource(Protocol):
    async def load(self) -> AgentConfig: ...


class SyncTodoStore(Protocol):
    def load(self) -> list[Todo]: ...
    def get(self, todo_id: str) -> Todo | None: ...
    def add(self, text: str, files: Sequence[str] = ()) -> Todo: ...


class AsyncTodoStore(Protocol):
    async def load(self) -> list[Todo]: ...
    async def get(self, todo_id: str) -> Todo | None: ...
    async def add(self, text: str, files: Sequence[str] = ()) -> Todo: ...


class SyncStatusStore(Protocol):
    def load(self) -> StatusFile: ...
    def set_todo(self, todo_id: str, state: TodoState) -> None: ...
    def set_agent(self, agent: AgentState) -> None: ...


class AsyncStatusStore(Protocol):
    async def load(self) -> StatusFile: ...
    async def set_todo(self, todo_id: str, state: TodoState) -> None: ...
    async def set_agent(self, agent: AgentState) -> None: ...


class SyncCheckpointStore(Protocol):
    def load(self, todo_id: str) -> Checkpoint | None: ...
    def save(self, checkpoint: Checkpoint) -> None: ...
    def list_ids(self) -> list[str]: ...


class AsyncCheckpointStore(Protocol):
    async def load(self, todo_id: str) -> Checkpoint | None: ...
    async def save(self, checkpoint: Checkpoint) -> None: ...
    async def list_ids(self) -> list[str]: ...


class SyncFiles(Protocol):
    def read(self, path: str) -> str | None: ...
    def read_many(self, paths: Sequence[str]) -> dict[str, str | None]: ...
    def write(self, path: str, content: str) -> None: ...
    def write_many(self, contents: dict[str, str]) -> None: ...


class AsyncFiles(Protocol):
    async def read(self, path: str) -> str | None: ...
    async def read_many(self, paths: Sequence[str]) -> dict[str, str | None]: ...
    async def write(self, path: str, content: str) -> None: ...
    async def write_many(self, contents: dict[str, str]) -> None: ...


class SyncGit(Protocol):
    def ensure_repo(self) -> None: ...
    def head(self) -> str | None: ...
    def find_commit(self, todo_id: str) -> str | None: ...
    def commit(self, message: str, paths: Sequence[str]) -> str: ...


class AsyncGit(Protocol):
    async def ensure_repo(self) -> None: ...
    async def head(self) -> str | None: ...
    async def find_commit(self, todo_id: str) -> str | None: ...
    async def commit(self, message: str, paths: Sequence[str]) -> str: ...


class SyncLLM(Protocol):
    def chat(self, messages: list[Message]) -> str: ...
    def close(self) -> None: ...


class AsyncLLM(Protocol):
    async def chat(self, messages: list[Message]) -> str: ...
    async def aclose(self) -> None: ...


class SyncComponents(NamedTuple):
    """Everything the legacy loop (or a sync twin's loop) is handed for one workspace."""

    todos: SyncTodoStore
    status: SyncStatusStore
    checkpoints: SyncCheckpointStore
    files: SyncFiles
    git: SyncGit
    llm: SyncLLM


class AsyncComponents(NamedTuple):
    """Everything the async agent is handed for one workspace."""

    todos: AsyncTodoStore
    status: AsyncStatusStore
    checkpoints: AsyncCheckpointStore
    files: AsyncFiles
    git: AsyncGit
    llm: AsyncLLM


#: A JSON endpoint contributed by the entry's wiring (e.g. ``/flags``): called with the path's
#: trailing id (or ``None``) and the decoded JSON body (or ``None``); returns ``(status, body)``.
#: Both API servers mount these without knowing what they do; the async one calls them off the loop.
JsonHandler = Callable[[str | None, Any], tuple[int, Any]]


class ExtraRoute(NamedTuple):
    """``method`` on ``prefix`` (and ``prefix/{id}``) answered by ``handler``."""

    method: str
    prefix: str
    handler: JsonHandler
