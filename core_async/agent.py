"""The per-todo flow, async: the same steps and checkpoint stages as the legacy agent.

Per todo (``docs/architecture.md``, "One todo, end to end")::

    status running (attempts + 1) -> checkpoint started
    -> read the todo's files -> LLM chat -> parse edit blocks -> new contents in memory
    -> checkpoint answered (reply + planned writes) -> write files -> checkpoint edited
    -> git commit with a Todo-Id trailer (unless one is already in history)
    -> checkpoint committed (sha) -> status done (sha)

Every step after ``answered`` replays from the checkpoint, so a crash anywhere
resumes cleanly. A failure of one todo is recorded on it (``failed`` with the
message) and the loop goes on. Cancellation (shutdown) marks the todo
``interrupted`` and propagates, leaving it resumable.

Crash hook for tests, with legacy's semantics: ``CODEAGENT_KILL_AT=<stage>``
or ``<stage>:<todo-id>`` SIGKILLs the process right after that checkpoint is saved.

Components are injected, typed by the ``Async*`` protocols of
:mod:`codeagent.protocols` (the generated twin takes the ``Sync*`` ones, so it
also runs on legacy components). Scheduling many todos at once is the
orchestrator's job; :meth:`AsyncAgent.run` is the plain sequential loop.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import time
from pathlib import Path
from typing import Literal

from codeagent.config import AgentConfig
from codeagent.context import current_todo
from codeagent.edits import apply_blocks, parse_edit_blocks
from codeagent.errors import AgentError, EditError, TodoCancelled
from codeagent.models import AgentState, Checkpoint, Stage, Todo, TodoState, TodoStatus, pending_todos, utcnow
from codeagent.paths import check_relative_path
from codeagent.prompts import build_messages, commit_message
from codeagent.protocols import (
    AsyncCheckpointStore,
    AsyncFiles,
    AsyncGit,
    AsyncLLM,
    AsyncStatusStore,
    AsyncTodoStore,
)
from core_async._compat import LOOP_KIND, AEvent, agather, await_event

log = logging.getLogger(__name__)

KILL_ENV = "CODEAGENT_KILL_AT"
STOP_CHECK_S = 0.2  # how often a sleeping loop looks at an external stop event


def crash_hook(stage: Stage, todo_id: str) -> None:
    """SIGKILL this process if ``CODEAGENT_KILL_AT`` names this stage (and todo). Tests only."""
    wanted = os.environ.get(KILL_ENV)
    if not wanted:
        return
    want_stage, _, want_id = wanted.partition(":")
    if want_stage == stage.value and want_id in ("", todo_id):
        os.kill(os.getpid(), signal.SIGKILL)


def unique_paths(paths: list[str]) -> list[str]:
    """Normalised workspace-relative paths, duplicates dropped, order kept."""
    return list(dict.fromkeys(check_relative_path(p) for p in paths))


class AsyncAgent:
    """The agent's per-todo flow and a sequential loop over the todo list."""

    def __init__(
        self,
        workspace: Path,
        config: AgentConfig,
        todos: AsyncTodoStore,
        status: AsyncStatusStore,
        checkpoints: AsyncCheckpointStore,
        files: AsyncFiles,
        git: AsyncGit,
        llm: AsyncLLM,
        *,
        loop_name: str = LOOP_KIND,
    ) -> None:
        self.workspace = Path(workspace)
        self.config = config
        self.todos = todos
        self.status = status
        self.checkpoints = checkpoints
        self.files = files
        self.git = git
        self.llm = llm
        self.loop_name = loop_name
        self.processed = 0
        self._wake = AEvent()
        self._stop_requested = AEvent()
        self._repo_ready = False

    async def _set_agent(
        self, state: Literal["idle", "working", "stopped"], current: str | None = None
    ) -> AgentState:
        """Record what the loop is doing; returns the record."""
        agent = AgentState(
            state=state, current_todo=current, pid=os.getpid(), loop=self.loop_name, processed=self.processed
        )
        await self.status.set_agent(agent)
        return agent

    async def _start(self, todo_id: str, running: TodoState) -> bool:
        """Record ``todo_id`` as running; ``False`` when the store refuses (an operator cancelled it)."""
        try:
            await self.status.set_todo(todo_id, running)
        except TodoCancelled:
            return False
        return True

    async def _save(self, checkpoint: Checkpoint) -> Checkpoint:
        await self.checkpoints.save(checkpoint)
        crash_hook(checkpoint.stage, checkpoint.todo_id)
        return checkpoint

    async def _plan(self, todo: Todo) -> tuple[str, dict[str, str]]:
        """Ask the LLM and compute the full new content of every file its edits touch."""
        current = await self.files.read_many(unique_paths(todo.files))
        reply = await self.llm.chat(build_messages(todo, current))
        blocks = parse_edit_blocks(reply)
        if not blocks:
            raise EditError("LLM answer contained no edit blocks")
        blocks = [dataclasses.replace(b, path=check_relative_path(b.path)) for b in blocks]
        unnamed = list(dict.fromkeys(b.path for b in blocks if b.path not in current))
        if unnamed:  # files the todo did not name
            current.update(await self.files.read_many(unnamed))
        return reply, apply_blocks(current, blocks)

    async def _advance(self, todo: Todo) -> str:
        """Take ``todo`` from its last checkpoint to ``committed``; return the commit sha."""
        checkpoint = await self.checkpoints.load(todo.id)
        if checkpoint is None:
            checkpoint = await self._save(Checkpoint(todo_id=todo.id, stage=Stage.STARTED))
        else:
            log.info("todo %s: resuming after checkpoint %s", todo.id, checkpoint.stage.value)
        if checkpoint.stage is Stage.STARTED:
            reply, writes = await self._plan(todo)
            checkpoint = await self._save(
                Checkpoint(todo_id=todo.id, stage=Stage.ANSWERED, reply=reply, writes=writes)
            )
        if checkpoint.stage is Stage.ANSWERED:
            await self.files.write_many(checkpoint.writes)
            checkpoint = await self._save(
                checkpoint.model_copy(update={"stage": Stage.EDITED, "updated_at": utcnow()})
            )
        if checkpoint.stage is Stage.EDITED:
            sha = await self.git.find_commit(todo.id)
            if sha is None:
                sha = await self.git.commit(commit_message(todo), sorted(checkpoint.writes))
            else:
                log.info("todo %s: commit %s already in history", todo.id, sha[:12])
            checkpoint = await self._save(
                checkpoint.model_copy(
                    update={"stage": Stage.COMMITTED, "commit": sha, "updated_at": utcnow()}
                )
            )
        if checkpoint.commit is None:
            raise AgentError(f"checkpoint of {todo.id} is at {checkpoint.stage.value} without a commit")
        return checkpoint.commit

    async def process(self, todo: Todo) -> TodoState:
        """Work on one todo from wherever it stands; return its final state (``done`` or ``failed``).

        A todo an operator cancelled is not started: its ``cancelled`` state is returned.

        Errors of this todo (LLM, edit blocks, workspace jail, git, its
        checkpoint file) are recorded on it and not raised. Errors writing the
        status file itself are raised. Cancellation records ``interrupted``.
        While it runs, :data:`current_todo` names the todo (a routed
        component's canary decision is sticky per todo).
        """
        token = current_todo.set(todo.id)
        try:
            return await self._process(todo)
        finally:
            current_todo.reset(token)

    async def _process(self, todo: Todo) -> TodoState:
        await self._ensure_repo()
        previous = (await self.status.load()).todos.get(todo.id)
        if previous is not None and previous.status is TodoStatus.CANCELLED:
            log.info("todo %s: cancelled; not started", todo.id)
            return previous
        attempts = (previous.attempts if previous else 0) + 1
        started = utcnow()
        running = TodoState(status=TodoStatus.RUNNING, attempts=attempts, started_at=started)
        # Both updates at once: a status store that groups writes makes them one write.
        allowed, _ = await agather(self._start(todo.id, running), self._set_agent("working", todo.id))
        if not allowed:  # cancelled since the line above: the store refused to start it
            log.info("todo %s: cancelled; not started", todo.id)
            return TodoState(status=TodoStatus.CANCELLED, attempts=attempts - 1)
        log.info("todo %s: started (attempt %d): %s", todo.id, attempts, todo.text)
        try:
            sha = await self._advance(todo)
        except Exception as exc:
            if isinstance(exc, AgentError):
                message = str(exc)
                log.warning("todo %s: failed: %s", todo.id, message)
            else:
                message = f"{type(exc).__name__}: {exc}"
                log.exception("todo %s: failed unexpectedly", todo.id)
            state = TodoState(
                status=TodoStatus.FAILED,
                error=message,
                attempts=attempts,
                started_at=started,
                finished_at=utcnow(),
            )
        except BaseException:  # cancellation, KeyboardInterrupt: leave it resumable
            interrupted = TodoState(status=TodoStatus.INTERRUPTED, attempts=attempts, started_at=started)
            await self.status.set_todo(todo.id, interrupted)
            raise
        else:
            log.info("todo %s: done in commit %s", todo.id, sha[:12])
            state = TodoState(
                status=TodoStatus.DONE,
                commit=sha,
                attempts=attempts,
                started_at=started,
                finished_at=utcnow(),
            )
        await self.status.set_todo(todo.id, state)
        self.processed += 1
        return state

    async def _ensure_repo(self) -> None:
        if not self._repo_ready:
            await self.git.ensure_repo()
            self._repo_ready = True

    async def next_todo(self) -> Todo | None:
        """The first unfinished todo in file order (pending, running after a crash, interrupted)."""
        pending = pending_todos(await self.todos.load(), await self.status.load())
        return pending[0] if pending else None

    async def run_once(self) -> bool:
        """Process the next unfinished todo; ``False`` when there is none."""
        todo = await self.next_todo()
        if todo is None:
            return False
        await self.process(todo)
        return True

    def wake(self) -> None:
        """Cut the current poll sleep short (a todo was just added)."""
        self._wake.set()

    def request_stop(self) -> None:
        """Ask :meth:`run` to return after the current todo (or at once, if it has not started)."""
        self._stop_requested.set()
        self._wake.set()

    async def _sleep(self, seconds: float, stop: AEvent | None) -> None:
        """Sleep up to ``seconds``, returning early on :meth:`wake`, :meth:`request_stop` or ``stop``."""
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            slice_s = remaining if stop is None else min(remaining, STOP_CHECK_S)
            if await await_event(self._wake, slice_s) or (stop is not None and stop.is_set()):
                self._wake.clear()
                return

    async def run(self, until_idle: bool = False, stop: AEvent | None = None) -> int:
        """Work through unfinished todos, polling the todo file every ``config.poll_interval`` when idle.

        With ``until_idle`` it returns as soon as no todo is left. ``stop`` (and
        :meth:`request_stop`) is checked between todos and while sleeping.
        Returns how many todos this call processed. A bad todo or status file is
        logged and retried at the next poll; with ``until_idle`` it is raised.
        """
        processed = 0
        last_error: str | None = None
        idle = False
        try:
            while not (self._stop_requested.is_set() or (stop is not None and stop.is_set())):
                try:
                    worked = await self.run_once()
                except AgentError as exc:
                    if until_idle:
                        raise
                    if str(exc) != last_error:
                        log.error(
                            "cannot work on the todo list: %s (retrying every %gs)",
                            exc,
                            self.config.poll_interval,
                        )
                        last_error = str(exc)
                    worked = False
                else:
                    last_error = None
                if worked:
                    processed += 1
                    idle = False
                    continue
                if until_idle:
                    break
                if not idle and last_error is None:
                    await self._set_agent("idle")
                    idle = True
                await self._sleep(self.config.poll_interval, stop)
        finally:
            self._stop_requested.clear()
            try:
                await self._set_agent("stopped")
            except AgentError as exc:
                log.error("cannot record the agent's state: %s", exc)
        return processed

    async def aclose(self) -> None:
        """Release the LLM client's connections."""
        await self.llm.aclose()
