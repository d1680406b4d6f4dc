"""One facade per component, in two faces: sync (the legacy loop) and async (the async core).

Each method hands the dispatcher the call on both implementations; reads run
twice in shadow, writes run their candidate on a scratch copy described by a
plan (:mod:`bridge.plans`). Facades satisfy the component protocols of
:mod:`codeagent.protocols`, so the loops cannot tell them from the plain
components.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

from bridge.dispatch import Dispatcher
from bridge.plans import (
    GitCommitPlan,
    StateFilesPlan,
    WorkspaceWritePlan,
    checkpoint_digest,
    status_digest,
    todos_digest,
    without_timestamps,
)
from codeagent.errors import StateFileError
from codeagent.models import AgentState, Checkpoint, StatusFile, Todo, TodoState
from codeagent.protocols import (
    AsyncCheckpointStore,
    AsyncFiles,
    AsyncGit,
    AsyncStatusStore,
    AsyncTodoStore,
    SyncCheckpointStore,
    SyncFiles,
    SyncGit,
    SyncStatusStore,
    SyncTodoStore,
)
from codeagent.state_v2 import parse_checkpoint

L = TypeVar("L")
N = TypeVar("N")

TODOS, STATUS = ".agent/todos.json", ".agent/status.json"


class _Facade(Generic[L, N]):
    component = ""

    def __init__(
        self,
        dispatcher: Dispatcher,
        root: Path,
        legacy: L,
        new: N,
        legacy_at: Callable[[Path], L],
        new_at: Callable[[Path], N],
    ) -> None:
        self.d = dispatcher
        self.root = root
        self.legacy = legacy
        self.new = new
        self.legacy_at = legacy_at
        self.new_at = new_at


# -- todos ----------------------------------------------------------------------------------------


class SyncTodosFacade(_Facade[SyncTodoStore, SyncTodoStore]):
    """The todo store, routed, for the sync loop."""

    component = "todos"

    def load(self) -> list[Todo]:
        return self.d.call("todos", "load", self.legacy.load, self.new.load)

    def get(self, todo_id: str) -> Todo | None:
        return self.d.call("todos", "get", lambda: self.legacy.get(todo_id), lambda: self.new.get(todo_id))

    def add(self, text: str, files: Sequence[str] = ()) -> Todo:
        return self.d.call(
            "todos",
            "add",
            lambda: self.legacy.add(text, files),
            lambda: self.new.add(text, files),
            write=StateFilesPlan(self.root, [TODOS], todos_digest),
            legacy_on=lambda s: self.legacy_at(s).add(text, files),
            new_on=lambda s: self.new_at(s).add(text, files),
        )


class AsyncTodosFacade(_Facade[SyncTodoStore, AsyncTodoStore]):
    """The todo store, routed, for the async core."""

    component = "todos"

    async def load(self) -> list[Todo]:
        """Every todo, from the path the flags choose."""
        return await self.d.acall("todos", "load", self.legacy.load, self.new.load)

    async def get(self, todo_id: str) -> Todo | None:
        """One todo by id, from the path the flags choose."""
        return await self.d.acall(
            "todos", "get", lambda: self.legacy.get(todo_id), lambda: self.new.get(todo_id)
        )

    async def add(self, text: str, files: Sequence[str] = ()) -> Todo:
        """Append a todo through the path the flags choose (shadow: candidate on a scratch copy)."""
        return await self.d.acall(
            "todos",
            "add",
            lambda: self.legacy.add(text, files),
            lambda: self.new.add(text, files),
            write=StateFilesPlan(self.root, [TODOS], todos_digest),
            legacy_on=lambda s: self.legacy_at(s).add(text, files),
            new_on=lambda s: self.new_at(s).add(text, files),
        )


# -- status ---------------------------------------------------------------------------------------


class SyncStatusFacade(_Facade[SyncStatusStore, SyncStatusStore]):
    """The status store, routed, for the sync loop."""

    component = "status"

    def load(self) -> StatusFile:
        return self.d.call("status", "load", self.legacy.load, self.new.load, normalize=without_timestamps)

    def set_todo(self, todo_id: str, state: TodoState) -> None:
        self.d.call(
            "status",
            "set_todo",
            lambda: self.legacy.set_todo(todo_id, state),
            lambda: self.new.set_todo(todo_id, state),
            write=StateFilesPlan(self.root, [STATUS], status_digest),
            legacy_on=lambda s: self.legacy_at(s).set_todo(todo_id, state),
            new_on=lambda s: self.new_at(s).set_todo(todo_id, state),
        )

    def set_agent(self, agent: AgentState) -> None:
        self.d.call(
            "status",
            "set_agent",
            lambda: self.legacy.set_agent(agent),
            lambda: self.new.set_agent(agent),
            write=StateFilesPlan(self.root, [STATUS], status_digest),
            legacy_on=lambda s: self.legacy_at(s).set_agent(agent),
            new_on=lambda s: self.new_at(s).set_agent(agent),
        )


class AsyncStatusFacade(_Facade[SyncStatusStore, AsyncStatusStore]):
    """The status store, routed, for the async core."""

    component = "status"

    async def load(self) -> StatusFile:
        """The status document, from the path the flags choose."""
        return await self.d.acall(
            "status", "load", self.legacy.load, self.new.load, normalize=without_timestamps
        )

    async def set_todo(self, todo_id: str, state: TodoState) -> None:
        """Record one todo's state through the path the flags choose."""
        await self.d.acall(
            "status",
            "set_todo",
            lambda: self.legacy.set_todo(todo_id, state),
            lambda: self.new.set_todo(todo_id, state),
            write=StateFilesPlan(self.root, [STATUS], status_digest),
            legacy_on=lambda s: self.legacy_at(s).set_todo(todo_id, state),
            new_on=lambda s: self.new_at(s).set_todo(todo_id, state),
        )

    async def set_agent(self, agent: AgentState) -> None:
        """Record the loop's own state through the path the flags choose."""
        await self.d.acall(
            "status",
            "set_agent",
            lambda: self.legacy.set_agent(agent),
            lambda: self.new.set_agent(agent),
            write=StateFilesPlan(self.root, [STATUS], status_digest),
            legacy_on=lambda s: self.legacy_at(s).set_agent(agent),
            new_on=lambda s: self.new_at(s).set_agent(agent),
        )


# -- checkpoints ----------------------------------------------------------------------------------


def _legacy_checkpoint_load(store: SyncCheckpointStore, root: Path, todo_id: str) -> Checkpoint | None:
    """The legacy reader, made safe for a workspace the new path has written to.

    The new store writes the versioned (v2) format, which the legacy reader
    refuses; after a rollback the legacy path must still resume those todos,
    so a v2 document is read and handed over in the legacy shape.
    """
    try:
        return store.load(todo_id)
    except StateFileError:
        path = root / ".agent/checkpoints" / f"{todo_id}.json"
        return parse_checkpoint(path.read_text(encoding="utf-8"), str(path)).to_checkpoint()


class SyncCheckpointsFacade(_Facade[SyncCheckpointStore, SyncCheckpointStore]):
    """The checkpoint store, routed, for the sync loop."""

    component = "checkpoints"

    def load(self, todo_id: str) -> Checkpoint | None:
        return self.d.call(
            "checkpoints",
            "load",
            lambda: _legacy_checkpoint_load(self.legacy, self.root, todo_id),
            lambda: self.new.load(todo_id),
            normalize=without_timestamps,
        )

    def save(self, checkpoint: Checkpoint) -> None:
        rel = f".agent/checkpoints/{checkpoint.todo_id}.json"
        self.d.call(
            "checkpoints",
            "save",
            lambda: self.legacy.save(checkpoint),
            lambda: self.new.save(checkpoint),
            write=StateFilesPlan(self.root, [rel], checkpoint_digest(checkpoint.todo_id)),
            legacy_on=lambda s: self.legacy_at(s).save(checkpoint),
            new_on=lambda s: self.new_at(s).save(checkpoint),
        )

    def list_ids(self) -> list[str]:
        return self.d.call("checkpoints", "list_ids", self.legacy.list_ids, self.new.list_ids)


class AsyncCheckpointsFacade(_Facade[SyncCheckpointStore, AsyncCheckpointStore]):
    """The checkpoint store, routed, for the async core."""

    component = "checkpoints"

    async def load(self, todo_id: str) -> Checkpoint | None:
        """One todo's checkpoint, from the path the flags choose."""
        return await self.d.acall(
            "checkpoints",
            "load",
            lambda: _legacy_checkpoint_load(self.legacy, self.root, todo_id),
            lambda: self.new.load(todo_id),
            normalize=without_timestamps,
        )

    async def save(self, checkpoint: Checkpoint) -> None:
        """Save a checkpoint through the path the flags choose (shadow: candidate on a scratch copy)."""
        rel = f".agent/checkpoints/{checkpoint.todo_id}.json"
        await self.d.acall(
            "checkpoints",
            "save",
            lambda: self.legacy.save(checkpoint),
            lambda: self.new.save(checkpoint),
            write=StateFilesPlan(self.root, [rel], checkpoint_digest(checkpoint.todo_id)),
            legacy_on=lambda s: self.legacy_at(s).save(checkpoint),
            new_on=lambda s: self.new_at(s).save(checkpoint),
        )

    async def list_ids(self) -> list[str]:
        """Ids of every todo with a checkpoint."""
        return await self.d.acall("checkpoints", "list_ids", self.legacy.list_ids, self.new.list_ids)


# -- files ----------------------------------------------------------------------------------------


class SyncFilesFacade(_Facade[SyncFiles, SyncFiles]):
    """Workspace file access, routed, for the sync loop."""

    component = "files"

    def read(self, path: str) -> str | None:
        return self.d.call("files", "read", lambda: self.legacy.read(path), lambda: self.new.read(path))

    def read_many(self, paths: Sequence[str]) -> dict[str, str | None]:
        return self.d.call(
            "files", "read_many", lambda: self.legacy.read_many(paths), lambda: self.new.read_many(paths)
        )

    def write(self, path: str, content: str) -> None:
        self.write_many({path: content})

    def write_many(self, contents: dict[str, str]) -> None:
        self.d.call(
            "files",
            "write_many",
            lambda: self.legacy.write_many(contents),
            lambda: self.new.write_many(contents),
            write=WorkspaceWritePlan(self.root, list(contents)),
            legacy_on=lambda s: self.legacy_at(s).write_many(contents),
            new_on=lambda s: self.new_at(s).write_many(contents),
        )


class AsyncFilesFacade(_Facade[SyncFiles, AsyncFiles]):
    """Workspace file access, routed, for the async core."""

    component = "files"

    async def read(self, path: str) -> str | None:
        """One file's text (``None`` when absent), from the path the flags choose."""
        return await self.d.acall(
            "files", "read", lambda: self.legacy.read(path), lambda: self.new.read(path)
        )

    async def read_many(self, paths: Sequence[str]) -> dict[str, str | None]:
        """Several files' text, from the path the flags choose."""
        return await self.d.acall(
            "files", "read_many", lambda: self.legacy.read_many(paths), lambda: self.new.read_many(paths)
        )

    async def write(self, path: str, content: str) -> None:
        """Write one file through the path the flags choose."""
        await self.write_many({path: content})

    async def write_many(self, contents: dict[str, str]) -> None:
        """Write several files (shadow: the candidate writes into a scratch tree)."""
        await self.d.acall(
            "files",
            "write_many",
            lambda: self.legacy.write_many(contents),
            lambda: self.new.write_many(contents),
            write=WorkspaceWritePlan(self.root, list(contents)),
            legacy_on=lambda s: self.legacy_at(s).write_many(contents),
            new_on=lambda s: self.new_at(s).write_many(contents),
        )


# -- git ------------------------------------------------------------------------------------------


class SyncGitFacade(_Facade[SyncGit, SyncGit]):
    """Git, routed, for the sync loop."""

    component = "git"

    def ensure_repo(self) -> None:
        # Idempotent on a repository that exists, so running it on both paths is harmless.
        self.d.call("git", "ensure_repo", self.legacy.ensure_repo, self.new.ensure_repo)

    def head(self) -> str | None:
        return self.d.call("git", "head", self.legacy.head, self.new.head)

    def find_commit(self, todo_id: str) -> str | None:
        return self.d.call(
            "git",
            "find_commit",
            lambda: self.legacy.find_commit(todo_id),
            lambda: self.new.find_commit(todo_id),
        )

    def commit(self, message: str, paths: Sequence[str]) -> str:
        return self.d.call(
            "git",
            "commit",
            lambda: self.legacy.commit(message, paths),
            lambda: self.new.commit(message, paths),
            write=GitCommitPlan(self.root, paths),
            legacy_on=lambda s: self.legacy_at(s).commit(message, paths),
            new_on=lambda s: self.new_at(s).commit(message, paths),
        )


class AsyncGitFacade(_Facade[SyncGit, AsyncGit]):
    """Git, routed, for the async core."""

    component = "git"

    async def ensure_repo(self) -> None:
        """Make the workspace a repository if it is not one (idempotent)."""
        await self.d.acall("git", "ensure_repo", self.legacy.ensure_repo, self.new.ensure_repo)

    async def head(self) -> str | None:
        """The sha of HEAD, or ``None`` in an empty repository."""
        return await self.d.acall("git", "head", self.legacy.head, self.new.head)

    async def find_commit(self, todo_id: str) -> str | None:
        """The commit carrying ``Todo-Id: todo_id``, if any."""
        return await self.d.acall(
            "git",
            "find_commit",
            lambda: self.legacy.find_commit(todo_id),
            lambda: self.new.find_commit(todo_id),
        )

    async def commit(self, message: str, paths: Sequence[str]) -> str:
        """Commit ``paths`` (shadow: the candidate commits in a shared clone; trees are compared)."""
        return await self.d.acall(
            "git",
            "commit",
            lambda: self.legacy.commit(message, paths),
            lambda: self.new.commit(message, paths),
            write=GitCommitPlan(self.root, paths),
            legacy_on=lambda s: self.legacy_at(s).commit(message, paths),
            new_on=lambda s: self.new_at(s).commit(message, paths),
        )
