"""Kernel-side wrappers of the async components: limits, metrics, safe points, stage events.

The kernel hands the agent these instead of the bare components. Each wrapper
satisfies the same ``Async*`` protocol of :mod:`codeagent.protocols` and adds:

* resource limits: LLM calls hold one of the kernel's LLM slots, file
  operations one of its file slots, commits the repository's git writer lock;
* a latency histogram and an outcome counter per component and operation;
* safe points: a state-changing step (a file write, a commit, a status or
  checkpoint save) runs to its end even when the todo's task is cancelled
  meanwhile, and the cancellation is delivered right after it. So a shutdown
  interrupts a todo between steps (or while it waits for the LLM, which
  changes nothing), never in the middle of a write;
* per-todo step timing and a ``todo.checkpoint`` event for every saved stage.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from codeagent.models import AgentState, Checkpoint, StatusFile, Todo, TodoState, TodoStatus
from codeagent.protocols import (
    AsyncCheckpointStore,
    AsyncFiles,
    AsyncGit,
    AsyncLLM,
    AsyncStatusStore,
    AsyncTodoStore,
    Message,
)
from core_async.kernel.limits import CapacityLimiter, ResourcePool
from core_async.kernel.metrics import MetricsCollector

T = TypeVar("T")

#: Names of the steps that end at each checkpoint stage, for ``codeagent_todo_step_seconds``.
STEP_OF_STAGE = {"started": "start", "answered": "plan", "edited": "edit", "committed": "commit"}


async def finish_step(step: Awaitable[T]) -> T:
    """Await ``step`` to its end even if the caller is cancelled meanwhile, then deliver the cancellation.

    Used around every state-changing call, so that a shutdown never leaves a
    half-done step behind (the step itself is atomic: a temp file renamed, a
    commit under git's own lock).
    """
    task = asyncio.ensure_future(step)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not task.cancelled():
            task.exception()  # retrieved, so never reported as "never retrieved"
        raise asyncio.CancelledError
    return task.result()


class MeteredLLM:
    """An LLM client that holds an LLM slot per request and records its latency."""

    def __init__(self, inner: AsyncLLM, slots: CapacityLimiter, metrics: MetricsCollector) -> None:
        self.inner = inner
        self.slots = slots
        self.metrics = metrics

    async def chat(self, messages: list[Message]) -> str:
        """One chat completion, within the kernel's LLM slots (waiting for a slot is not timed)."""
        async with self.slots:
            with self.metrics.timed("llm", "chat"):
                return await self.inner.chat(messages)

    async def aclose(self) -> None:
        """Close the wrapped client."""
        await self.inner.aclose()


class MeteredFiles:
    """Workspace file operations within the kernel's file slots; writes are safe points."""

    def __init__(self, inner: AsyncFiles, slots: CapacityLimiter, metrics: MetricsCollector) -> None:
        self.inner = inner
        self.slots = slots
        self.metrics = metrics

    async def read(self, path: str) -> str | None:
        """Read one file (``None`` when absent)."""
        async with self.slots:
            with self.metrics.timed("files", "read"):
                return await self.inner.read(path)

    async def read_many(self, paths: Sequence[str]) -> dict[str, str | None]:
        """Read several files at once."""
        async with self.slots:
            with self.metrics.timed("files", "read_many"):
                return await self.inner.read_many(paths)

    async def write(self, path: str, content: str) -> None:
        """Write one file atomically; completes even if the todo is cancelled meanwhile."""
        async with self.slots:
            with self.metrics.timed("files", "write"):
                await finish_step(self.inner.write(path, content))

    async def write_many(self, contents: dict[str, str]) -> None:
        """Write several files; completes even if the todo is cancelled meanwhile."""
        async with self.slots:
            with self.metrics.timed("files", "write_many"):
                await finish_step(self.inner.write_many(contents))


class MeteredGit:
    """Git operations with latency metrics; commits hold the repository's writer lock and are safe points."""

    def __init__(self, inner: AsyncGit, resources: ResourcePool, repository: str, metrics: MetricsCollector):
        self.inner = inner
        self.writer = resources.git_writer(repository)
        self.metrics = metrics

    async def ensure_repo(self) -> None:
        """Make the workspace a repository if it is not one."""
        with self.metrics.timed("git", "ensure_repo"):
            await finish_step(self.inner.ensure_repo())

    async def head(self) -> str | None:
        """The sha of HEAD (``None`` before the first commit)."""
        with self.metrics.timed("git", "head"):
            return await self.inner.head()

    async def find_commit(self, todo_id: str) -> str | None:
        """The commit carrying ``todo_id``'s trailer, if any."""
        with self.metrics.timed("git", "find_commit"):
            return await self.inner.find_commit(todo_id)

    async def commit(self, message: str, paths: Sequence[str]) -> str:
        """Commit ``paths``: one writer per repository; completes even if the todo is cancelled meanwhile."""
        async with self.writer:
            with self.metrics.timed("git", "commit"):
                return await finish_step(self.inner.commit(message, paths))


class MeteredTodos:
    """The todo list with latency metrics."""

    def __init__(self, inner: AsyncTodoStore, metrics: MetricsCollector) -> None:
        self.inner = inner
        self.metrics = metrics

    async def load(self) -> list[Todo]:
        """Every todo in file order."""
        with self.metrics.timed("todos", "load"):
            return await self.inner.load()

    async def get(self, todo_id: str) -> Todo | None:
        """One todo by id."""
        with self.metrics.timed("todos", "get"):
            return await self.inner.get(todo_id)

    async def add(self, text: str, files: Sequence[str] = ()) -> Todo:
        """Append a todo; completes even if the caller is cancelled meanwhile."""
        with self.metrics.timed("todos", "add"):
            return await finish_step(self.inner.add(text, files))


class MeteredStatus:
    """The status record with latency metrics; every write is a safe point.

    During a shutdown the kernel *holds* ``interrupted`` writes
    (:meth:`hold_interrupts`): dozens of cancelled todos would otherwise each
    pay a locked, fsynced rewrite of the whole document, one after the other,
    eating the grace period. :meth:`flush_interrupted` then hands all of them
    to the store at once, through whatever store it was given (the routed
    facade, when the bridge wires it): the ``core_async`` store commits
    concurrent updates as one write.
    """

    def __init__(
        self,
        inner: AsyncStatusStore,
        metrics: MetricsCollector,
        on_running: Callable[[str], None] | None = None,
    ) -> None:
        self.inner = inner
        self.metrics = metrics
        #: Told when a todo's ``running`` state is written: the todo has really started.
        self.on_running = on_running
        self._holding = False
        self._held: dict[str, TodoState] = {}

    async def load(self) -> StatusFile:
        """The whole status document."""
        with self.metrics.timed("status", "load"):
            return await self.inner.load()

    async def set_todo(self, todo_id: str, state: TodoState) -> None:
        """Record one todo's state (held while a shutdown holds ``interrupted`` writes)."""
        if self._holding and state.status is TodoStatus.INTERRUPTED:
            self._held[todo_id] = state
            return
        with self.metrics.timed("status", "set_todo"):
            await finish_step(self.inner.set_todo(todo_id, state))
        if state.status is TodoStatus.RUNNING and self.on_running is not None:
            self.on_running(todo_id)

    async def set_agent(self, agent: AgentState) -> None:
        """Record what the loop is doing."""
        with self.metrics.timed("status", "set_agent"):
            await finish_step(self.inner.set_agent(agent))

    def hold_interrupts(self) -> None:
        """Keep ``interrupted`` writes in memory until :meth:`flush_interrupted`."""
        self._holding = True

    async def flush_interrupted(self, also: Sequence[str] = ()) -> list[str]:
        """Write every held ``interrupted`` state at once, plus ``also`` todos still ``running`` on disk.

        Returns the ids recorded.
        """
        held, self._held, self._holding = self._held, {}, False
        if also:
            current = (await self.load()).todos
            for todo_id in also:
                state = current.get(todo_id)
                if todo_id not in held and state is not None and state.status is TodoStatus.RUNNING:
                    held[todo_id] = TodoState(status=TodoStatus.INTERRUPTED, attempts=state.attempts)
        if not held:
            return []
        with self.metrics.timed("status", "set_todos"):
            writes = [self.inner.set_todo(todo_id, state) for todo_id, state in held.items()]
            await finish_step(asyncio.gather(*writes))
        return list(held)


StageListener = Callable[[Checkpoint, float], None]


class MeteredCheckpoints:
    """Checkpoints with latency metrics; every save is a safe point and times the step it ends.

    :meth:`begin` marks when a todo's work started; each saved stage then
    records the time since the previous one as that step's duration and
    calls ``on_stage(checkpoint, seconds)``.
    """

    def __init__(
        self,
        inner: AsyncCheckpointStore,
        metrics: MetricsCollector,
        on_stage: StageListener | None = None,
    ) -> None:
        self.inner = inner
        self.metrics = metrics
        self.on_stage = on_stage
        self._clock: dict[str, float] = {}

    def begin(self, todo_id: str) -> None:
        """Start the step clock of a todo."""
        self._clock[todo_id] = time.perf_counter()

    def end(self, todo_id: str) -> None:
        """Forget the step clock of a todo."""
        self._clock.pop(todo_id, None)

    async def load(self, todo_id: str) -> Checkpoint | None:
        """The checkpoint of one todo."""
        with self.metrics.timed("checkpoints", "load"):
            return await self.inner.load(todo_id)

    async def save(self, checkpoint: Checkpoint) -> None:
        """Save a checkpoint (completes even if the todo is cancelled meanwhile) and time its step."""
        with self.metrics.timed("checkpoints", "save"):
            await finish_step(self.inner.save(checkpoint))
        now = time.perf_counter()
        started = self._clock.get(checkpoint.todo_id)
        seconds = now - started if started is not None else 0.0
        self._clock[checkpoint.todo_id] = now
        if started is not None:
            self.metrics.todo_step(STEP_OF_STAGE.get(checkpoint.stage.value, checkpoint.stage.value), seconds)
        if self.on_stage is not None:
            self.on_stage(checkpoint, seconds)

    async def list_ids(self) -> list[str]:
        """Ids of every todo with a checkpoint."""
        with self.metrics.timed("checkpoints", "list_ids"):
            return await self.inner.list_ids()
