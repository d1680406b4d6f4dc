"""One served workspace: its configuration, its components, and the per-todo flow wrapped for the kernel.

The per-todo flow itself is :class:`core_async.agent.AsyncAgent` (the same
steps and checkpoints as the legacy loop); the runtime hands it the kernel's
metered components (:mod:`core_async.kernel.instrumented`), binds the todo's
correlation id, and publishes the todo's events.

Hot reload: the configuration-dependent components (LLM client, files, git
identity, and the agent holding them) form a *generation*. A configuration
change builds a new generation for the todos that start afterwards; todos
already running finish on the one they started with, whose LLM client is
closed when its last todo ends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from codeagent.config import AgentConfig
from codeagent.models import (
    AgentState,
    OperatorAction,
    Todo,
    TodoChange,
    TodoState,
    TodoStatus,
    pending_todos,
)
from core_async.agent import AsyncAgent
from core_async.kernel.components import ComponentProvider, PlainComponents
from core_async.kernel.config_manager import ConfigurationManager
from core_async.kernel.events import EventBus
from core_async.kernel.instrumented import (
    MeteredCheckpoints,
    MeteredFiles,
    MeteredGit,
    MeteredLLM,
    MeteredStatus,
    MeteredTodos,
)
from core_async.kernel.limits import ResourcePool
from core_async.kernel.logs import correlation
from core_async.kernel.metrics import MetricsCollector
from core_async.llm_transport import AsyncEndpointPool
from core_async.status import AsyncStatusJsonStore

log = logging.getLogger("codeagent.kernel.workspace")

LOOP_NAME = "async"


@dataclass(eq=False)
class _Generation:
    """The configuration-dependent components, shared by the todos that started under one config."""

    config: AgentConfig
    agent: AsyncAgent
    llm: MeteredLLM
    users: int = 0
    retired: bool = False
    closed: bool = field(default=False)


class WorkspaceRuntime:
    """A workspace the kernel serves: stores, current components, todo processing, agent state."""

    def __init__(
        self,
        root: Path,
        label: str,
        *,
        llm_url: str | None,
        pool: AsyncEndpointPool,
        resources: ResourcePool,
        metrics: MetricsCollector,
        events: EventBus,
        components: ComponentProvider | None = None,
    ) -> None:
        self.root = Path(root)
        self.components = components or PlainComponents()
        self.label = label
        self.llm_url = llm_url
        self.fallback_llm_url: str | None = None
        self.pool = pool
        self.resources = resources
        self.metrics = metrics
        self.events = events
        self.config_manager = ConfigurationManager(
            self.root,
            label=label,
            events=events,
            metrics=metrics,
            source=self.components.config_source(self.root),
        )
        self.config_manager.add_listener(self._on_config_change)
        todos, status, checkpoints = self.components.stores(self.root)
        self.todos = MeteredTodos(todos, metrics)
        self.status = MeteredStatus(status, metrics, self._on_running)
        self.checkpoints = MeteredCheckpoints(checkpoints, metrics, self._on_stage)
        self.processed = 0
        self.on_todo_added: Callable[[WorkspaceRuntime, Todo], None] | None = None
        self._generation: _Generation | None = None
        self._starting: dict[str, str] = {}  # todo id -> text, until its running state is written
        self._retired: set[_Generation] = set()

    # ----------------------------------------------------------------- lifecycle

    @property
    def config(self) -> AgentConfig:
        """The current (last good) configuration."""
        return self.config_manager.config

    async def start(self) -> None:
        """Load the configuration unless loaded (raising :class:`ConfigError` when invalid); build the components."""
        if not self.config_manager.loaded:
            await self.config_manager.load_config()
        self._generation = await self._build(self.config)

    def llm_base_url(self, config: AgentConfig) -> str | None:
        """The LLM endpoint: the kernel's override, else ``llm.base_url``, else the embedded stub's."""
        return self.llm_url or config.llm.base_url or self.fallback_llm_url

    async def _build(self, config: AgentConfig) -> _Generation:
        base_url = self.llm_base_url(config)
        if not base_url:
            raise ValueError(f"workspace {self.label}: no LLM endpoint configured")
        raw_files, raw_git, client = await self.components.workers(self.root, config, base_url, self.pool)
        llm = MeteredLLM(client, self.resources.llm, self.metrics)
        files = MeteredFiles(raw_files, self.resources.files, self.metrics)
        git = MeteredGit(raw_git, self.resources, str(self.root), self.metrics)
        agent = AsyncAgent(
            self.root,
            config,
            todos=self.todos,
            status=self.status,
            checkpoints=self.checkpoints,
            files=files,
            git=git,
            llm=llm,
            loop_name=LOOP_NAME,
        )
        return _Generation(config, agent, llm)

    async def _on_config_change(self, old: AgentConfig, new: AgentConfig) -> None:
        try:
            fresh = await self._build(new)
        except ValueError as exc:
            log.error("%s; keeping the components of the previous configuration", exc)
            return
        previous, self._generation = self._generation, fresh
        if previous is not None:
            previous.retired = True
            self._retired.add(previous)
            await self._close_if_unused(previous)

    async def _close_if_unused(self, generation: _Generation) -> None:
        if generation.retired and generation.users == 0 and not generation.closed:
            generation.closed = True
            self._retired.discard(generation)
            await generation.llm.aclose()

    async def aclose(self) -> None:
        """Close the LLM clients of every generation (the shared connection pool is closed by its owner)."""
        generations = [*self._retired, *([self._generation] if self._generation else [])]
        self._generation = None
        for generation in generations:
            if not generation.closed:
                generation.closed = True
                await generation.llm.aclose()
        self._retired.clear()
        await self.components.aclose()

    # ----------------------------------------------------------------- todos

    async def pending(self) -> list[Todo]:
        """Todos not finished yet, in file order (raises :class:`StateFileError` for a bad state file)."""
        todos = await self.todos.load()
        status = await self.status.load()
        return pending_todos(todos, status)

    async def add_todo(self, text: str, files: Sequence[str] = ()) -> Todo:
        """Append a todo (API), publish ``todo.added`` and tell the kernel."""
        todo = await self.todos.add(text, files)
        self.events.publish("todo.added", workspace=self.label, todo_id=todo.id, text=todo.text)
        if self.on_todo_added is not None:
            self.on_todo_added(self, todo)
        return todo

    def _on_stage(self, checkpoint: object, seconds: float) -> None:
        stage = getattr(checkpoint, "stage", None)
        todo_id = getattr(checkpoint, "todo_id", None)
        self.events.publish(
            "todo.checkpoint",
            workspace=self.label,
            todo_id=todo_id,
            stage=getattr(stage, "value", str(stage)),
            seconds=round(seconds, 6),
        )

    async def operate(
        self, action: OperatorAction, todo_ids: Sequence[str], *, source: str
    ) -> list[TodoChange]:
        """An operator's retry or cancel, on the workspace's status file (the API's route)."""
        store = AsyncStatusJsonStore(self.root)
        return await store.operate(action, todo_ids, source=source, loop_running=True)

    def _on_running(self, todo_id: str) -> None:
        text = self._starting.pop(todo_id, None)
        if text is not None:
            self.events.publish("todo.started", workspace=self.label, todo_id=todo_id, text=text)

    async def process(self, todo: Todo) -> TodoState:
        """Run the per-todo flow on ``todo`` under its correlation id; publish its events.

        Returns the final state (``done`` or ``failed``; ``cancelled``, untouched,
        for a todo an operator cancelled before it could start: then nothing is
        published, the cancel was). ``todo.started`` is published once the
        todo's ``running`` state is written. Cancellation (a shutdown past its
        grace period) leaves the todo ``interrupted`` with its checkpoint, and
        propagates.
        """
        generation = self._generation
        if generation is None:
            raise RuntimeError(f"workspace {self.label} is not started")
        generation.users += 1
        started = time.perf_counter()
        self.checkpoints.begin(todo.id)
        try:
            with correlation(f"{self.label}/{todo.id}", todo_id=todo.id, workspace=self.label):
                self._starting[todo.id] = todo.text
                try:
                    state = await generation.agent.process(todo)
                except asyncio.CancelledError:
                    self.metrics.todo_finished(self.label, TodoStatus.INTERRUPTED.value)
                    self.events.publish("todo.interrupted", workspace=self.label, todo_id=todo.id)
                    raise
                except Exception as exc:
                    self.metrics.todo_finished(self.label, "error")
                    self.events.publish(
                        "todo.error",
                        workspace=self.label,
                        todo_id=todo.id,
                        error=f"{type(exc).__name__}: {exc}",
                    )
                    raise
        finally:
            self._starting.pop(todo.id, None)
            self.checkpoints.end(todo.id)
            generation.users -= 1
            await self._close_if_unused(generation)
        if state.status is TodoStatus.CANCELLED:
            return state
        self.processed += 1
        self.metrics.todo_step("total", time.perf_counter() - started)
        self.metrics.todo_finished(self.label, state.status.value)
        self.events.publish(
            f"todo.{state.status.value}",
            workspace=self.label,
            todo_id=todo.id,
            commit=state.commit,
            error=state.error,
            attempts=state.attempts,
        )
        return state

    async def set_agent_state(self, state: Literal["idle", "working", "stopped"]) -> None:
        """Record what the kernel is doing in this workspace's ``status.json``."""
        agent = AgentState(state=state, pid=os.getpid(), loop=LOOP_NAME, processed=self.processed)
        await self.status.set_agent(agent)

    async def mark_interrupted(self, todo_ids: Sequence[str]) -> list[str]:
        """Record the todos cut short by a shutdown as ``interrupted``, in one write.

        Covers the states the agent wrote while its task was being cancelled
        (held by :meth:`MeteredStatus.hold_interrupts`) and any of ``todo_ids``
        still ``running`` on disk. Returns the ids recorded.
        """
        return await self.status.flush_interrupted(todo_ids)
