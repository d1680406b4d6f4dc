"""The legacy Code Agent loop: one synchronous ``while True`` over the todo list.

Per todo (``docs/architecture.md``, "One todo, end to end")::

    status running (attempts + 1) -> checkpoint started
    -> read the todo's files -> LLM chat -> parse edit blocks -> new contents in memory
    -> checkpoint answered (reply + planned writes) -> write files -> checkpoint edited
    -> git commit with a Todo-Id trailer (unless one is already in history)
    -> checkpoint committed (sha) -> status done (sha)

Every step after ``answered`` replays from the checkpoint, so a crash anywhere
resumes cleanly: on start each unfinished todo continues after its last
checkpoint. A failure of one todo is recorded on it (status ``failed`` with the
message) and the loop goes on with the next.

Crash hook for tests: with ``CODEAGENT_KILL_AT=<stage>`` or
``CODEAGENT_KILL_AT=<stage>:<todo-id>`` in the environment, the process kills
itself with SIGKILL right after saving that checkpoint (of that todo, or of the
first todo reaching the stage).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Literal

from codeagent.config import AgentConfig
from codeagent.context import current_todo
from codeagent.edits import apply_blocks, parse_edit_blocks
from codeagent.errors import AgentError, EditError, TodoCancelled
from codeagent.models import (
    AgentState,
    Checkpoint,
    Stage,
    Todo,
    TodoState,
    TodoStatus,
    pending_todos,
    utcnow,
)
from codeagent.paths import check_relative_path
from codeagent.prompts import build_messages, commit_message
from codeagent.protocols import (
    SyncCheckpointStore,
    SyncFiles,
    SyncGit,
    SyncLLM,
    SyncStatusStore,
    SyncTodoStore,
)

log = logging.getLogger("codeagent.legacy.agent")

KILL_ENV = "CODEAGENT_KILL_AT"
_STOP_CHECK_S = 0.2  # how often a sleeping loop looks at an external stop event


def _crash_hook(stage: Stage, todo_id: str) -> None:
    """SIGKILL this process if ``CODEAGENT_KILL_AT`` names this stage (and todo). Tests only."""
    wanted = os.environ.get(KILL_ENV)
    if not wanted:
        return
    want_stage, _, want_id = wanted.partition(":")
    if want_stage == stage.value and want_id in ("", todo_id):
        os.kill(os.getpid(), signal.SIGKILL)


def _unique_paths(paths: list[str]) -> list[str]:
    """Normalised workspace-relative paths, duplicates dropped, order kept."""
    return list(dict.fromkeys(check_relative_path(p) for p in paths))


class LegacyAgent:
    """The synchronous agent. Components are injected; it constructs none of them."""

    def __init__(
        self,
        workspace: Path,
        config: AgentConfig,
        todos: SyncTodoStore,
        status: SyncStatusStore,
        checkpoints: SyncCheckpointStore,
        files: SyncFiles,
        git: SyncGit,
        llm: SyncLLM,
    ) -> None:
        self.workspace = Path(workspace)
        self.config = config
        self.todos = todos
        self.status = status
        self.checkpoints = checkpoints
        self.files = files
        self.git = git
        self.llm = llm
        self.processed = 0
        self._wake = threading.Event()
        self._stop_requested = threading.Event()
        self._repo_ready = False

    # ----------------------------------------------------------------- state helpers

    def _set_agent(self, state: Literal["idle", "working", "stopped"], current: str | None = None) -> None:
        self.status.set_agent(
            AgentState(state=state, current_todo=current, pid=os.getpid(), processed=self.processed)
        )

    def _save(self, checkpoint: Checkpoint) -> Checkpoint:
        self.checkpoints.save(checkpoint)
        _crash_hook(checkpoint.stage, checkpoint.todo_id)
        return checkpoint

    # ----------------------------------------------------------------- one todo

    def _plan(self, todo: Todo) -> tuple[str, dict[str, str]]:
        """Ask the LLM and compute the full new content of every file its edits touch."""
        paths = _unique_paths(todo.files)
        current = self.files.read_many(paths)
        reply = self.llm.chat(build_messages(todo, current))
        blocks = parse_edit_blocks(reply)
        if not blocks:
            raise EditError("LLM answer contained no edit blocks")
        blocks = [dataclasses.replace(b, path=check_relative_path(b.path)) for b in blocks]
        for block in blocks:
            if block.path not in current:  # a file the todo did not name
                current[block.path] = self.files.read(block.path)
        return reply, apply_blocks(current, blocks)

    def _advance(self, todo: Todo) -> str:
        """Take ``todo`` from its last checkpoint to ``committed``; return the commit sha."""
        checkpoint = self.checkpoints.load(todo.id)
        if checkpoint is None:
            checkpoint = self._save(Checkpoint(todo_id=todo.id, stage=Stage.STARTED))
        else:
            log.info("todo %s: resuming after checkpoint %s", todo.id, checkpoint.stage.value)
        if checkpoint.stage is Stage.STARTED:
            reply, writes = self._plan(todo)
            checkpoint = self._save(
                Checkpoint(todo_id=todo.id, stage=Stage.ANSWERED, reply=reply, writes=writes)
            )
        if checkpoint.stage is Stage.ANSWERED:
            self.files.write_many(checkpoint.writes)
            checkpoint = self._save(
                checkpoint.model_copy(update={"stage": Stage.EDITED, "updated_at": utcnow()})
            )
        if checkpoint.stage is Stage.EDITED:
            sha = self.git.find_commit(todo.id)
            if sha is None:
                sha = self.git.commit(commit_message(todo), sorted(checkpoint.writes))
            else:
                log.info("todo %s: commit %s already in history", todo.id, sha[:12])
            checkpoint = self._save(
                checkpoint.model_copy(
                    update={"stage": Stage.COMMITTED, "commit": sha, "updated_at": utcnow()}
                )
            )
        if checkpoint.commit is None:
            raise AgentError(f"checkpoint of {todo.id} is at {checkpoint.stage.value} without a commit")
        return checkpoint.commit

    def process(self, todo: Todo) -> TodoState:
        """Work on one todo from wherever it stands; return its final state (``done`` or ``failed``).

        A todo an operator cancelled is not started: its ``cancelled`` state is returned.

        Errors of this todo (LLM, edit blocks, workspace jail, git, its
        checkpoint file) are recorded on it and not raised. Errors writing
        the status file itself are raised. While it runs, :data:`current_todo`
        names the todo (a routed component's canary decision is sticky per todo).
        """
        token = current_todo.set(todo.id)
        try:
            return self._process(todo)
        finally:
            current_todo.reset(token)

    def _process(self, todo: Todo) -> TodoState:
        self._ensure_repo()
        previous = self.status.load().todos.get(todo.id)
        if previous is not None and previous.status is TodoStatus.CANCELLED:
            log.info("todo %s: cancelled; not started", todo.id)
            return previous
        attempts = (previous.attempts if previous else 0) + 1
        started = utcnow()
        try:
            self.status.set_todo(
                todo.id, TodoState(status=TodoStatus.RUNNING, attempts=attempts, started_at=started)
            )
        except TodoCancelled:  # cancelled since the line above: the store refused to start it
            log.info("todo %s: cancelled; not started", todo.id)
            return TodoState(status=TodoStatus.CANCELLED, attempts=attempts - 1)
        self._set_agent("working", todo.id)
        log.info("todo %s: started (attempt %d): %s", todo.id, attempts, todo.text)
        try:
            sha = self._advance(todo)
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
        except BaseException:  # KeyboardInterrupt, SystemExit: leave it resumable
            interrupted = TodoState(status=TodoStatus.INTERRUPTED, attempts=attempts, started_at=started)
            self.status.set_todo(todo.id, interrupted)
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
        self.status.set_todo(todo.id, state)
        self.processed += 1
        return state

    # ----------------------------------------------------------------- the loop

    def _ensure_repo(self) -> None:
        if not self._repo_ready:
            self.git.ensure_repo()
            self._repo_ready = True

    def next_todo(self) -> Todo | None:
        """The first unfinished todo in file order (pending, running after a crash, interrupted)."""
        pending = pending_todos(self.todos.load(), self.status.load())
        return pending[0] if pending else None

    def run_once(self) -> bool:
        """Process the next unfinished todo; ``False`` when there is none."""
        todo = self.next_todo()
        if todo is None:
            return False
        self.process(todo)
        return True

    def wake(self) -> None:
        """Cut the current poll sleep short (a todo was just added)."""
        self._wake.set()

    def request_stop(self) -> None:
        """Ask :meth:`run` to return after the current todo (thread-safe)."""
        self._stop_requested.set()
        self._wake.set()

    def _sleep(self, seconds: float, stop: threading.Event | None) -> None:
        """Sleep up to ``seconds``, returning early on :meth:`wake`, :meth:`request_stop` or ``stop``."""
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            slice_s = remaining if stop is None else min(remaining, _STOP_CHECK_S)
            if self._wake.wait(slice_s) or (stop is not None and stop.is_set()):
                self._wake.clear()
                return

    def run(self, until_idle: bool = False, stop: threading.Event | None = None) -> int:
        """The ``while True`` loop: work through unfinished todos, polling the todo file when idle.

        Polls every ``config.poll_interval`` seconds. With ``until_idle`` it
        returns as soon as no todo is left. ``stop`` (and :meth:`request_stop`)
        is checked between todos and while sleeping. Returns how many todos this
        call processed (done or failed).

        A bad todo or status file is reported by a log line and retried at the
        next poll (it may be fixed by hand); with ``until_idle`` it is raised.
        """
        processed = 0
        last_error: str | None = None
        idle = False
        try:
            while True:
                if self._stop_requested.is_set() or (stop is not None and stop.is_set()):
                    break
                try:
                    worked = self.run_once()
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
                    self._set_agent("idle")
                    idle = True
                self._sleep(self.config.poll_interval, stop)
        finally:
            self._stop_requested.clear()
            try:
                self._set_agent("stopped")
            except AgentError as exc:
                log.error("cannot record the agent's state: %s", exc)
        return processed

    def close(self) -> None:
        """Release the LLM client's connections."""
        self.llm.close()
