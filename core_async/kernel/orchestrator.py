"""TaskOrchestrator: bounded, fair, structured concurrency for todos.

* :meth:`TaskOrchestrator.schedule_task` queues a job under a key (a todo id)
  in its workspace's FIFO; a key already queued or running is not queued again.
* :meth:`TaskOrchestrator.execute_parallel` is the dispatcher. It runs every
  job as a child of one :class:`asyncio.TaskGroup`, so no job outlives it and
  none is lost; it wakes only when something changes (a job queued or
  finished, a limit changed), never on a timer. Workspaces are served round
  robin, one job per workspace per turn, within ``max_concurrency`` overall
  and ``per_workspace`` each.
* Two jobs of one workspace whose file sets overlap never run at once, and
  keep their queue order; a job that names no files is exclusive in its
  workspace (its LLM may touch anything).
* :meth:`TaskOrchestrator.manage_resources` reports what is in use and
  applies new limits on the fly (the shared :class:`ResourcePool` holds the
  LLM slots, file slots and git writer locks the components draw from).
* :meth:`TaskOrchestrator.drain` is the graceful stop: no new jobs, running
  ones get a grace period, then are cancelled (their components finish the
  step they are in first), and the interrupted ones are returned.

A job's failure is recorded on its :class:`ScheduledTask` and logged; it never
cancels the other jobs, and no exception is left unretrieved.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from core_async.kernel.limits import ResourceLimits, ResourcePool
from core_async.kernel.metrics import MetricsCollector

log = logging.getLogger("codeagent.kernel.orchestrator")

#: How many queued jobs of one workspace are looked at per dispatch (bounds the cost of a long queue).
SCAN_WINDOW = 256
#: At most this many jobs are started in one turn of the event loop (keeps each turn short).
LAUNCH_BATCH = 16

Job = Callable[[], Awaitable[Any]]


class TaskState(StrEnum):
    """Where a scheduled job stands."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DROPPED = "dropped"  # still queued when the orchestrator stopped taking work


@dataclass(eq=False)
class ScheduledTask:
    """One job: its key, workspace, file set (``None``: exclusive) and, once ended, its outcome."""

    key: str
    workspace: str
    files: frozenset[str] | None
    job: Job
    state: TaskState = TaskState.QUEUED
    result: Any = None
    error: BaseException | None = None
    _ended: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def ended(self) -> bool:
        """Whether the job finished, failed, was cancelled or dropped."""
        return self._ended.is_set()

    async def wait(self) -> TaskState:
        """Wait until the job has ended; return its final state."""
        await self._ended.wait()
        return self.state

    def conflicts_with(self, other: ScheduledTask) -> bool:
        """Whether the two jobs may not run at once (same workspace and overlapping files)."""
        if self.workspace != other.workspace:
            return False
        if self.files is None or other.files is None:
            return True
        return not self.files.isdisjoint(other.files)


@dataclass(frozen=True, slots=True)
class ResourceUsage:
    """A snapshot of the orchestrator's load and limits."""

    limits: ResourceLimits
    running: int
    queued: int
    running_by_workspace: dict[str, int]
    queued_by_workspace: dict[str, int]
    llm_in_use: int
    llm_waiting: int
    files_in_use: int
    git_writers_busy: int


class OrchestratorClosed(Exception):
    """The orchestrator no longer takes work."""


class TaskOrchestrator:
    """Runs jobs concurrently within limits, fairly across workspaces, inside one task group."""

    def __init__(self, limits: ResourceLimits | None = None, *, metrics: MetricsCollector | None = None):
        self.limits = limits or ResourceLimits()
        self.resources = ResourcePool(self.limits)
        self.metrics = metrics
        self._queues: dict[str, deque[ScheduledTask]] = {}
        self._rotation: deque[str] = deque()
        self._running: dict[str, ScheduledTask] = {}
        self._running_by_ws: dict[str, list[ScheduledTask]] = {}
        self._queued_keys: dict[str, ScheduledTask] = {}
        self._changed = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._accepting = True
        self._dispatching = False
        self._started = 0

    # ----------------------------------------------------------------- queries

    @property
    def accepting(self) -> bool:
        """Whether :meth:`schedule_task` still takes work."""
        return self._accepting

    @property
    def started_count(self) -> int:
        """How many jobs were started so far."""
        return self._started

    def is_active(self, key: str) -> bool:
        """Whether a job with ``key`` is queued or running."""
        return key in self._queued_keys or key in self._running

    def active_in(self, workspace: str) -> int:
        """How many jobs of ``workspace`` are queued or running."""
        return len(self._queues.get(workspace, ())) + len(self._running_by_ws.get(workspace, ()))

    def running_keys(self) -> list[str]:
        """Keys of the running jobs."""
        return list(self._running)

    def is_idle(self) -> bool:
        """Nothing queued and nothing running."""
        return not self._running and not self._queued_keys

    async def wait_idle(self) -> None:
        """Wait until nothing is queued or running."""
        await self._idle.wait()

    # ----------------------------------------------------------------- scheduling

    def schedule_task(
        self, workspace: str, key: str, job: Job, *, files: Iterable[str] | None = None
    ) -> ScheduledTask | None:
        """Queue ``job`` under ``key`` in ``workspace``; ``None`` when that key is already active.

        ``files`` is the set of files the job touches (``None``: it may touch
        anything, so it runs alone in its workspace). Raises
        :class:`OrchestratorClosed` once the orchestrator stopped taking work.
        """
        if not self._accepting:
            raise OrchestratorClosed(f"not taking new work (job {key!r})")
        if self.is_active(key):
            return None
        task = ScheduledTask(key, workspace, frozenset(files) if files is not None else None, job)
        queue = self._queues.setdefault(workspace, deque())
        if not queue:
            self._rotation.append(workspace)
        queue.append(task)
        self._queued_keys[key] = task
        self._idle.clear()
        self._update_gauges()
        self._changed.set()
        return task

    def _pick(self, workspace: str) -> ScheduledTask | None:
        queue = self._queues.get(workspace)
        if not queue:
            return None
        running = self._running_by_ws.get(workspace, [])
        if len(running) >= self.limits.per_workspace:
            return None
        earlier: list[ScheduledTask] = []
        for index, candidate in enumerate(queue):
            if index >= SCAN_WINDOW:
                break
            blocked = any(candidate.conflicts_with(r) for r in running) or any(
                candidate.conflicts_with(e) for e in earlier
            )
            if not blocked:
                del queue[index]
                return candidate
            earlier.append(candidate)
            if candidate.files is None:  # an exclusive job blocks everything behind it
                break
        return None

    def _launch_ready(self, group: asyncio.TaskGroup) -> bool:
        """Start eligible jobs, round robin; return whether the batch limit stopped it early."""
        launched = 0
        progress = True
        while progress and len(self._running) < self.limits.max_concurrency and self._rotation:
            progress = False
            for _ in range(len(self._rotation)):
                workspace = self._rotation[0]
                self._rotation.rotate(-1)
                task = self._pick(workspace)
                if task is None:
                    continue
                progress = True
                self._start(group, task)
                launched += 1
                if len(self._running) >= self.limits.max_concurrency or launched >= LAUNCH_BATCH:
                    break
            self._rotation = deque(ws for ws in self._rotation if self._queues.get(ws))
            if launched >= LAUNCH_BATCH:
                return True
        return False

    def _start(self, group: asyncio.TaskGroup, task: ScheduledTask) -> None:
        del self._queued_keys[task.key]
        self._running[task.key] = task
        self._running_by_ws.setdefault(task.workspace, []).append(task)
        task.state = TaskState.RUNNING
        self._started += 1
        task._task = group.create_task(self._run(task), name=f"job:{task.workspace}:{task.key}")
        self._update_gauges()

    async def _run(self, task: ScheduledTask) -> None:
        try:
            task.result = await task.job()
            task.state = TaskState.DONE
        except asyncio.CancelledError:
            task.state = TaskState.CANCELLED
            raise
        except Exception as exc:
            task.state = TaskState.FAILED
            task.error = exc
            log.error("job %s of %s failed: %s: %s", task.key, task.workspace, type(exc).__name__, exc)
        finally:
            self._finish(task)

    def _finish(self, task: ScheduledTask) -> None:
        self._running.pop(task.key, None)
        running = self._running_by_ws.get(task.workspace, [])
        if task in running:
            running.remove(task)
        task._ended.set()
        if self.is_idle():
            self._idle.set()
        self._update_gauges()
        self._changed.set()

    def _update_gauges(self) -> None:
        if self.metrics is not None:
            self.metrics.in_flight.set(len(self._running))
            self.metrics.queued.set(len(self._queued_keys))
            self.metrics.resources.labels("todo_slots").set(len(self._running))
            self.metrics.resources.labels("llm_slots").set(self.resources.llm.in_use)
            self.metrics.resources.labels("file_slots").set(self.resources.files.in_use)
            for name, value in self.limits.as_dict().items():
                self.metrics.limits.labels(name).set(value)

    # ----------------------------------------------------------------- the dispatcher

    async def execute_parallel(self) -> None:
        """Run queued jobs as they become eligible, until :meth:`stop_accepting` and all have ended.

        Every job is a child of one task group: if this coroutine is cancelled,
        every running job is cancelled and awaited before it returns.
        """
        if self._dispatching:
            raise RuntimeError("execute_parallel is already running")
        self._dispatching = True
        try:
            async with asyncio.TaskGroup() as group:
                while True:
                    self._changed.clear()
                    if self._accepting:
                        if self._launch_ready(group):
                            await asyncio.sleep(0)  # let the loop breathe between batches of launches
                            continue
                    elif not self._running:
                        break
                    await self._changed.wait()
        finally:
            self._dispatching = False
            self._drop_queued()

    def stop_accepting(self) -> None:
        """Take no more work; jobs still queued are dropped (they stay pending on disk)."""
        if not self._accepting:
            return
        self._accepting = False
        self._drop_queued()
        self._changed.set()

    def _drop_queued(self) -> None:
        for queue in self._queues.values():
            for task in queue:
                task.state = TaskState.DROPPED
                task._ended.set()
            queue.clear()
        self._queued_keys.clear()
        self._rotation.clear()
        if not self._running:
            self._idle.set()
        self._update_gauges()

    async def drain(
        self,
        grace: float,
        *,
        force: asyncio.Event | None = None,
        before_cancel: Callable[[list[ScheduledTask]], None] | None = None,
    ) -> list[ScheduledTask]:
        """Stop taking work, give running jobs ``grace`` seconds (cut short by ``force``), cancel the rest.

        ``before_cancel`` is called with the jobs about to be cancelled.
        Returns the jobs that were still running when the grace period ended,
        once they have ended (a cancelled job finishes its current safe step
        first; see :func:`core_async.kernel.instrumented.finish_step`).
        """
        self.stop_accepting()
        if self._running and grace > 0 and not (force is not None and force.is_set()):
            waiters = {asyncio.ensure_future(self._idle.wait())}
            if force is not None:
                waiters.add(asyncio.ensure_future(force.wait()))
            try:
                await asyncio.wait(waiters, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
                await asyncio.gather(*waiters, return_exceptions=True)
        interrupted = list(self._running.values())
        if interrupted and before_cancel is not None:
            before_cancel(interrupted)
        for task in interrupted:
            if task._task is not None:
                task._task.cancel()
        for task in interrupted:
            await task._ended.wait()
        return interrupted

    # ----------------------------------------------------------------- resources

    def manage_resources(self, limits: ResourceLimits | None = None) -> ResourceUsage:
        """Apply new ``limits`` (when given) and report what is in use.

        A larger limit takes effect at once; a smaller one lets running jobs
        and holders finish and admits no new ones until under the limit.
        """
        if limits is not None:
            self.limits = limits
            self.resources.apply(limits)
            self._changed.set()
        self._update_gauges()
        return ResourceUsage(
            limits=self.limits,
            running=len(self._running),
            queued=len(self._queued_keys),
            running_by_workspace={ws: len(r) for ws, r in self._running_by_ws.items() if r},
            queued_by_workspace={ws: len(q) for ws, q in self._queues.items() if q},
            llm_in_use=self.resources.llm.in_use,
            llm_waiting=self.resources.llm.waiting,
            files_in_use=self.resources.files.in_use,
            git_writers_busy=self.resources.git_writers_busy(),
        )
