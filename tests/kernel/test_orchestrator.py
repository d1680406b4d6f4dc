"""TaskOrchestrator: global and per-workspace limits, fairness, file conflicts, structured concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from core_async.kernel.limits import CapacityLimiter, ResourceLimits, ResourcePool
from core_async.kernel.metrics import MetricsCollector
from core_async.kernel.orchestrator import OrchestratorClosed, TaskOrchestrator, TaskState


class Probe:
    """Jobs that record when they start and how many run at once (overall and per workspace)."""

    def __init__(self) -> None:
        self.running: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.total = 0
        self.peak_total = 0
        self.starts: list[str] = []
        self.gate = asyncio.Event()

    def job(self, workspace: str, key: str, *, hold: bool = True) -> Callable[[], Awaitable[str]]:
        async def run() -> str:
            self.starts.append(key)
            self.total += 1
            self.running[workspace] = self.running.get(workspace, 0) + 1
            self.peak_total = max(self.peak_total, self.total)
            self.peak[workspace] = max(self.peak.get(workspace, 0), self.running[workspace])
            try:
                if hold:
                    await self.gate.wait()
                else:
                    await asyncio.sleep(0)
            finally:
                self.total -= 1
                self.running[workspace] -= 1
            return key

        return run


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_global_and_per_workspace_limits_hold() -> None:
    probe = Probe()
    orch = TaskOrchestrator(ResourceLimits(max_concurrency=5, per_workspace=2), metrics=MetricsCollector())
    tasks = [
        orch.schedule_task(ws, f"{ws}/{i}", probe.job(ws, f"{ws}/{i}"), files=[f"f{i}"])
        for ws in ("a", "b", "c", "d")
        for i in range(4)
    ]
    dispatcher = asyncio.create_task(orch.execute_parallel())
    await settle()
    usage = orch.manage_resources()
    assert usage.running == 5 and usage.queued == 11
    assert all(n <= 2 for n in usage.running_by_workspace.values())
    probe.gate.set()
    await orch.wait_idle()
    assert probe.peak_total == 5
    assert max(probe.peak.values()) == 2
    assert all(t is not None and t.state is TaskState.DONE for t in tasks)
    assert [t.result for t in tasks if t is not None] == [t.key for t in tasks if t is not None]
    orch.stop_accepting()
    await dispatcher
    assert orch.started_count == 16


async def test_workspaces_are_served_round_robin() -> None:
    probe = Probe()
    orch = TaskOrchestrator(ResourceLimits(max_concurrency=1, per_workspace=1))
    for i in range(6):  # a busy workspace queued first ...
        orch.schedule_task("busy", f"busy/{i}", probe.job("busy", f"busy/{i}", hold=False), files=[f"{i}"])
    for ws in ("x", "y"):  # ... must not starve the others
        for i in range(2):
            orch.schedule_task(ws, f"{ws}/{i}", probe.job(ws, f"{ws}/{i}", hold=False), files=[f"{i}"])
    dispatcher = asyncio.create_task(orch.execute_parallel())
    await orch.wait_idle()
    orch.stop_accepting()
    await dispatcher
    assert probe.starts[:6] == ["busy/0", "x/0", "y/0", "busy/1", "x/1", "y/1"]
    assert probe.starts[6:] == ["busy/2", "busy/3", "busy/4", "busy/5"]


async def test_overlapping_files_never_run_together_and_keep_their_order() -> None:
    probe = Probe()
    orch = TaskOrchestrator(ResourceLimits(max_concurrency=10, per_workspace=10))
    orch.schedule_task("w", "1", probe.job("w", "1"), files=["a.txt"])
    orch.schedule_task("w", "2", probe.job("w", "2"), files=["b.txt"])
    orch.schedule_task("w", "3", probe.job("w", "3"), files=["a.txt", "c.txt"])  # waits for 1
    orch.schedule_task("w", "4", probe.job("w", "4"), files=["c.txt"])  # waits for 3 (queued before it)
    orch.schedule_task("w", "5", probe.job("w", "5"), files=["d.txt"])
    orch.schedule_task("v", "6", probe.job("v", "6"), files=["a.txt"])  # another workspace: no conflict
    dispatcher = asyncio.create_task(orch.execute_parallel())
    await settle()
    assert sorted(probe.starts) == ["1", "2", "5", "6"]
    probe.gate.set()
    await orch.wait_idle()
    assert probe.starts.index("3") < probe.starts.index("4")
    orch.stop_accepting()
    await dispatcher


async def test_a_todo_naming_no_file_runs_alone_in_its_workspace() -> None:
    probe = Probe()
    orch = TaskOrchestrator(ResourceLimits(max_concurrency=10, per_workspace=10))
    orch.schedule_task("w", "1", probe.job("w", "1"), files=["a"])
    orch.schedule_task("w", "2", probe.job("w", "2"), files=None)
    orch.schedule_task("w", "3", probe.job("w", "3"), files=["b"])
    dispatcher = asyncio.create_task(orch.execute_parallel())
    await settle()
    assert probe.starts == ["1"]  # 2 waits for 1; 3 waits behind the exclusive 2
    probe.gate.set()
    await orch.wait_idle()
    assert probe.starts == ["1", "2", "3"]
    assert probe.peak["w"] == 1
    orch.stop_accepting()
    await dispatcher


async def test_duplicates_failures_and_closing() -> None:
    orch = TaskOrchestrator()

    async def boom() -> None:
        raise ValueError("bad todo")

    async def fine() -> int:
        return 7

    failing = orch.schedule_task("w", "k1", boom, files=["a"])
    assert orch.schedule_task("w", "k1", fine) is None  # already queued
    ok = orch.schedule_task("w", "k2", fine, files=["b"])
    assert orch.is_active("k1") and not orch.is_idle()
    dispatcher = asyncio.create_task(orch.execute_parallel())
    with pytest.raises(RuntimeError, match="already running"):
        await asyncio.wait_for(asyncio.create_task(orch.execute_parallel()), 1)
    assert failing is not None and ok is not None
    assert await failing.wait() is TaskState.FAILED
    assert isinstance(failing.error, ValueError)
    assert await ok.wait() is TaskState.DONE and ok.result == 7
    orch.stop_accepting()
    orch.stop_accepting()
    await dispatcher
    with pytest.raises(OrchestratorClosed):
        orch.schedule_task("w", "k3", fine)
    assert not orch.accepting


async def test_drain_lets_quick_jobs_finish_and_cancels_the_rest() -> None:
    orch = TaskOrchestrator(ResourceLimits(max_concurrency=4, per_workspace=4))
    quick_done = []
    cancelled = []

    async def quick() -> None:
        await asyncio.sleep(0.01)
        quick_done.append(1)

    async def slow() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(1)
            raise

    orch.schedule_task("w", "q", quick, files=["q"])
    slow_task = orch.schedule_task("w", "s", slow, files=["s"])
    queued = [orch.schedule_task("w", f"x{i}", quick, files=["q"]) for i in range(3)]  # blocked by q's file
    dispatcher = asyncio.create_task(orch.execute_parallel())
    await settle()
    interrupted = await orch.drain(0.5)
    assert [t.key for t in interrupted] == ["s"]
    assert slow_task is not None and slow_task.state is TaskState.CANCELLED
    assert quick_done == [1] and cancelled == [1]
    assert all(t is not None and t.state is TaskState.DROPPED for t in queued)
    await dispatcher
    assert orch.is_idle()


async def test_drain_is_cut_short_by_force() -> None:
    orch = TaskOrchestrator()
    force = asyncio.Event()
    orch.schedule_task("w", "s", lambda: asyncio.sleep(3600), files=["s"])
    dispatcher = asyncio.create_task(orch.execute_parallel())
    await settle()
    asyncio.get_running_loop().call_later(0.05, force.set)
    interrupted = await asyncio.wait_for(orch.drain(3600, force=force), 10)
    assert [t.state for t in interrupted] == [TaskState.CANCELLED]
    await dispatcher


async def test_cancelling_the_dispatcher_cancels_every_job() -> None:
    orch = TaskOrchestrator()
    jobs = [orch.schedule_task("w", f"k{i}", lambda: asyncio.sleep(3600), files=[str(i)]) for i in range(3)]
    dispatcher = asyncio.create_task(orch.execute_parallel())
    await settle()
    dispatcher.cancel()
    with pytest.raises(asyncio.CancelledError):
        await dispatcher
    assert all(j is not None and j.state is TaskState.CANCELLED for j in jobs)


async def test_manage_resources_applies_new_limits_on_the_fly() -> None:
    probe = Probe()
    orch = TaskOrchestrator(ResourceLimits(max_concurrency=1, per_workspace=1, llm_slots=1))
    for i in range(4):
        orch.schedule_task("w", f"{i}", probe.job("w", f"{i}"), files=[str(i)])
    dispatcher = asyncio.create_task(orch.execute_parallel())
    await settle()
    assert len(probe.starts) == 1
    usage = orch.manage_resources(ResourceLimits(max_concurrency=3, per_workspace=3, llm_slots=5))
    assert usage.limits.max_concurrency == 3 and orch.resources.llm.capacity == 5
    await settle()
    assert len(probe.starts) == 3
    probe.gate.set()
    await orch.wait_idle()
    orch.stop_accepting()
    await dispatcher


async def test_capacity_limiter_is_fifo_resizable_and_leak_free() -> None:
    limiter = CapacityLimiter("llm", 1)
    order: list[int] = []
    await limiter.acquire()

    async def take(i: int) -> None:
        async with limiter:
            order.append(i)
            await asyncio.sleep(0)

    waiters = [asyncio.create_task(take(i)) for i in range(3)]
    await settle()
    assert limiter.waiting == 3
    waiters[1].cancel()  # a cancelled waiter must not keep (or lose) a slot
    await settle()
    limiter.release()
    await asyncio.gather(waiters[0], waiters[2])
    assert order == [0, 2]
    assert limiter.in_use == 0
    limiter.resize(2)
    assert limiter.capacity == 2
    with pytest.raises(RuntimeError, match="release without acquire"):
        limiter.release()
    with pytest.raises(ValueError, match="at least 1"):
        limiter.resize(0)
    with pytest.raises(ValueError, match="at least 1"):
        CapacityLimiter("x", 0)
    with pytest.raises(ValueError, match="llm_slots"):
        ResourceLimits(llm_slots=0)


async def test_a_waiter_granted_while_being_cancelled_gives_its_slot_back() -> None:
    limiter = CapacityLimiter("files", 1)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await settle()
    limiter.release()  # grants the slot to the waiter ...
    waiter.cancel()  # ... which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter.in_use == 0


async def test_one_git_writer_per_repository() -> None:
    pool = ResourcePool(ResourceLimits())
    assert pool.git_writer("/repo/a") is pool.git_writer("/repo/a")
    assert pool.git_writer("/repo/a") is not pool.git_writer("/repo/b")
    async with pool.git_writer("/repo/a"):
        assert pool.git_writers_busy() == 1
    assert pool.git_writers_busy() == 0


async def test_many_ready_jobs_start_in_batches_across_loop_turns() -> None:
    probe = Probe()
    orch = TaskOrchestrator(ResourceLimits(max_concurrency=100, per_workspace=100))
    for i in range(40):
        orch.schedule_task("w", f"{i}", probe.job("w", f"{i}"), files=[str(i)])
    dispatcher = asyncio.create_task(orch.execute_parallel())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert 0 < len(probe.starts) < 40  # not all in one turn
    await settle()
    assert len(probe.starts) == 40 and probe.peak_total == 40
    probe.gate.set()
    await orch.wait_idle()
    orch.stop_accepting()
    await dispatcher
