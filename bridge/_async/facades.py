"""One facade per component, written once for the async core (the sync face is generated from it).

Each method hands the dispatcher the operation on both implementations and,
where shadow needs one, the plan of the state it reads or writes
(``bridge/plans.py``). Facades satisfy the component protocols of
``codeagent/protocols.py``, so a loop cannot tell them from the plain
components. The legacy side is always the original (blocking) code; the new
side is ``core_async`` here and its generated twin ``core_sync`` in the sync
face.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

import core_async.config as new_config
import legacy.config as legacy_config
from bridge._async.dispatch import AsyncDispatcher
from bridge.plans import (
    GitCommitPlan,
    WorkspaceWritePlan,
    checkpoint_plan,
    status_plan,
    todos_plan,
    without_timestamps,
)
from codeagent.config import AgentConfig
from codeagent.errors import StateFileError
from codeagent.models import AgentState, Checkpoint, StatusFile, Todo, TodoState
from codeagent.paths import checkpoint_relpath
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


class _Facade(Generic[L, N]):
    """A component's two implementations, and how to root each at a scratch directory."""

    def __init__(
        self,
        dispatcher: AsyncDispatcher,
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


class AsyncConfigFacade:
    """The configuration loader, routed (read at start and on every change of the file)."""

    def __init__(self, dispatcher: AsyncDispatcher, root: Path) -> None:
        self.d = dispatcher
        self.root = root

    async def load(self) -> AgentConfig:
        """Read and validate ``.agent/config.json`` through the path the flags choose."""
        return await self.d.call(
            "config",
            "load",
            lambda: legacy_config.load_config(self.root),
            lambda: new_config.load_config(self.root),
        )


class AsyncTodosFacade(_Facade[SyncTodoStore, AsyncTodoStore]):
    """The todo store, routed."""

    async def load(self) -> list[Todo]:
        """Every todo, from the path the flags choose."""
        return await self.d.call(
            "todos",
            "load",
            self.legacy.load,
            self.new.load,
            plan=todos_plan(self.root),
            legacy_at=lambda s: self.legacy_at(s).load(),
            new_at=lambda s: self.new_at(s).load(),
        )

    async def get(self, todo_id: str) -> Todo | None:
        """One todo by id, from the path the flags choose."""
        return await self.d.call(
            "todos",
            "get",
            lambda: self.legacy.get(todo_id),
            lambda: self.new.get(todo_id),
            plan=todos_plan(self.root),
            legacy_at=lambda s: self.legacy_at(s).get(todo_id),
            new_at=lambda s: self.new_at(s).get(todo_id),
        )

    async def add(self, text: str, files: Sequence[str] = ()) -> Todo:
        """Append a todo through the path the flags choose."""
        return await self.d.call(
            "todos",
            "add",
            lambda: self.legacy.add(text, files),
            lambda: self.new.add(text, files),
            normalize=without_timestamps,
            plan=todos_plan(self.root),
            write=True,
            legacy_at=lambda s: self.legacy_at(s).add(text, files),
            new_at=lambda s: self.new_at(s).add(text, files),
        )


class AsyncStatusFacade(_Facade[SyncStatusStore, AsyncStatusStore]):
    """The status store, routed."""

    async def load(self) -> StatusFile:
        """The status document, from the path the flags choose."""
        return await self.d.call(
            "status",
            "load",
            self.legacy.load,
            self.new.load,
            normalize=without_timestamps,
            plan=status_plan(self.root),
            legacy_at=lambda s: self.legacy_at(s).load(),
            new_at=lambda s: self.new_at(s).load(),
        )

    async def set_todo(self, todo_id: str, state: TodoState) -> None:
        """Record one todo's state through the path the flags choose."""
        await self.d.call(
            "status",
            "set_todo",
            lambda: self.legacy.set_todo(todo_id, state),
            lambda: self.new.set_todo(todo_id, state),
            plan=status_plan(self.root),
            write=True,
            legacy_at=lambda s: self.legacy_at(s).set_todo(todo_id, state),
            new_at=lambda s: self.new_at(s).set_todo(todo_id, state),
        )

    async def set_agent(self, agent: AgentState) -> None:
        """Record the loop's own state through the path the flags choose."""
        await self.d.call(
            "status",
            "set_agent",
            lambda: self.legacy.set_agent(agent),
            lambda: self.new.set_agent(agent),
            plan=status_plan(self.root),
            write=True,
            legacy_at=lambda s: self.legacy_at(s).set_agent(agent),
            new_at=lambda s: self.new_at(s).set_agent(agent),
        )


def _legacy_checkpoint_load(store: SyncCheckpointStore, root: Path, todo_id: str) -> Checkpoint | None:
    """The legacy reader, made safe for a workspace the new path has written to.

    The new store writes the versioned (v2) format, which the legacy reader
    refuses; after a rollback the legacy path must still resume those todos,
    so a v2 document is read and handed over in the legacy shape.
    """
    try:
        return store.load(todo_id)
    except StateFileError:
        path = root / checkpoint_relpath(todo_id)
        return parse_checkpoint(path.read_text(encoding="utf-8"), str(path)).to_checkpoint()


class AsyncCheckpointsFacade(_Facade[SyncCheckpointStore, AsyncCheckpointStore]):
    """The checkpoint store, routed (only the todo's own flow writes its checkpoint: reads run live)."""

    async def load(self, todo_id: str) -> Checkpoint | None:
        """One todo's checkpoint, from the path the flags choose."""
        return await self.d.call(
            "checkpoints",
            "load",
            lambda: _legacy_checkpoint_load(self.legacy, self.root, todo_id),
            lambda: self.new.load(todo_id),
            normalize=without_timestamps,
        )

    async def save(self, checkpoint: Checkpoint) -> None:
        """Save a checkpoint through the path the flags choose."""
        await self.d.call(
            "checkpoints",
            "save",
            lambda: self.legacy.save(checkpoint),
            lambda: self.new.save(checkpoint),
            plan=checkpoint_plan(self.root, checkpoint.todo_id),
            write=True,
            legacy_at=lambda s: self.legacy_at(s).save(checkpoint),
            new_at=lambda s: self.new_at(s).save(checkpoint),
        )

    async def list_ids(self) -> list[str]:
        """Ids of every todo with a checkpoint."""
        return await self.d.call("checkpoints", "list_ids", self.legacy.list_ids, self.new.list_ids)


class AsyncFilesFacade(_Facade[SyncFiles, AsyncFiles]):
    """Workspace file access, routed (a todo's files are claimed by it alone: reads run live)."""

    async def read(self, path: str) -> str | None:
        """One file's text (``None`` when absent), from the path the flags choose."""
        return await self.d.call("files", "read", lambda: self.legacy.read(path), lambda: self.new.read(path))

    async def read_many(self, paths: Sequence[str]) -> dict[str, str | None]:
        """Several files' text, from the path the flags choose."""
        return await self.d.call(
            "files", "read_many", lambda: self.legacy.read_many(paths), lambda: self.new.read_many(paths)
        )

    async def write(self, path: str, content: str) -> None:
        """Write one file through the path the flags choose."""
        await self.write_many({path: content})

    async def write_many(self, contents: dict[str, str]) -> None:
        """Write several files through the path the flags choose."""
        await self.d.call(
            "files",
            "write_many",
            lambda: self.legacy.write_many(contents),
            lambda: self.new.write_many(contents),
            plan=WorkspaceWritePlan(self.root, list(contents)),
            write=True,
            legacy_at=lambda s: self.legacy_at(s).write_many(contents),
            new_at=lambda s: self.new_at(s).write_many(contents),
        )


class AsyncGitFacade(_Facade[SyncGit, AsyncGit]):
    """Git, routed."""

    async def ensure_repo(self) -> None:
        """Make the workspace a repository if it is not one (idempotent, so both paths may run it)."""
        await self.d.call("git", "ensure_repo", self.legacy.ensure_repo, self.new.ensure_repo)

    async def head(self) -> str | None:
        """The sha of HEAD, or ``None`` in an empty repository."""
        return await self.d.call("git", "head", self.legacy.head, self.new.head)

    async def find_commit(self, todo_id: str) -> str | None:
        """The commit carrying ``Todo-Id: todo_id``, if any."""
        return await self.d.call(
            "git",
            "find_commit",
            lambda: self.legacy.find_commit(todo_id),
            lambda: self.new.find_commit(todo_id),
        )

    async def commit(self, message: str, paths: Sequence[str]) -> str:
        """Commit ``paths`` (shadow: the candidate commits in a shared clone; trees are compared)."""
        return await self.d.call(
            "git",
            "commit",
            lambda: self.legacy.commit(message, paths),
            lambda: self.new.commit(message, paths),
            plan=GitCommitPlan(self.root, paths),
            write=True,
            legacy_at=lambda s: self.legacy_at(s).commit(message, paths),
            new_at=lambda s: self.new_at(s).commit(message, paths),
        )
