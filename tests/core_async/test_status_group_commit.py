"""Group commit of status updates: concurrent updates share one write, and none is lost or misreported."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from codeagent.config import AgentConfig
from codeagent.errors import StateFileError
from codeagent.models import AgentState, StatusFile, TodoState, TodoStatus
from core_async.agent import AsyncAgent
from core_async.status import AsyncStatusJsonStore
from core_sync.status import SyncStatusJsonStore

RUNNING = TodoState(status=TodoStatus.RUNNING, attempts=1)
DONE = TodoState(status=TodoStatus.DONE, commit="abc", attempts=1)


class SlowStore(AsyncStatusJsonStore):
    """A store whose writes take ``delay`` seconds (in the worker thread), to line callers up."""

    def __init__(self, root: Path, delay: float) -> None:
        super().__init__(root)
        self.delay = delay
        self.batches: list[int] = []

    def _update(self, changes: list[object]) -> None:  # type: ignore[override]
        time.sleep(self.delay)
        self.batches.append(len(changes))
        super()._update(changes)  # type: ignore[arg-type]


async def test_concurrent_updates_share_writes_and_all_land(tmp_path: Path) -> None:
    store = AsyncStatusJsonStore(tmp_path)
    ids = [f"t-{i:04d}" for i in range(50)]
    await asyncio.gather(*(store.set_todo(todo_id, RUNNING) for todo_id in ids))
    doc = await store.load()
    assert sorted(doc.todos) == ids
    assert store.writes < len(ids) / 5  # the first caller writes alone, the rest ride in few batches


async def test_a_lone_caller_writes_at_once_and_order_is_kept(tmp_path: Path) -> None:
    store = AsyncStatusJsonStore(tmp_path)
    await store.set_todo("t-0001", RUNNING)
    assert store.writes == 1
    agent = AgentState(state="working", current_todo="t-0001", pid=1)
    await asyncio.gather(
        store.set_todo("t-0001", RUNNING), store.set_agent(agent), store.set_todo("t-0001", DONE)
    )
    doc = await store.load()
    assert (doc.todos["t-0001"], doc.agent) == (DONE, agent)  # later changes of one batch win


async def test_updates_made_ready_in_the_same_turn_share_one_write(tmp_path: Path) -> None:
    """The agent records a todo as running and itself as working at once: one write, not two."""
    store = AsyncStatusJsonStore(tmp_path)
    agent = AgentState(state="working", current_todo="t-0001", pid=1)
    await asyncio.gather(store.set_todo("t-0001", RUNNING), store.set_agent(agent))
    assert store.writes == 1
    doc = await store.load()
    assert (doc.todos["t-0001"], doc.agent) == (RUNNING, agent)


async def test_the_agent_starts_a_todo_in_one_status_write(tmp_path: Path) -> None:
    store = AsyncStatusJsonStore(tmp_path)
    agent = AsyncAgent(
        tmp_path,
        AgentConfig(),
        todos=None,  # type: ignore[arg-type]  # not reached: only the start of a todo is driven
        status=store,
        checkpoints=None,  # type: ignore[arg-type]
        files=None,  # type: ignore[arg-type]
        git=None,  # type: ignore[arg-type]
        llm=None,  # type: ignore[arg-type]
    )
    running = TodoState(status=TodoStatus.RUNNING, attempts=1)
    assert await asyncio.gather(agent._start("t-0001", running), agent._set_agent("working", "t-0001"))
    assert store.writes == 1
    await store.operate("cancel", ["t-0002"], source="test", loop_running=True)
    allowed, _ = await asyncio.gather(agent._start("t-0002", running), agent._set_agent("working", "t-0002"))
    assert allowed is False  # refused under the lock; the agent's own change still landed
    doc = await store.load()
    assert doc.todos["t-0002"].status is TodoStatus.CANCELLED and doc.agent.current_todo == "t-0002"


async def test_a_failed_write_is_raised_to_every_caller_it_carried(tmp_path: Path) -> None:
    (tmp_path / ".agent" / "status.json").mkdir(parents=True)  # unreadable: a directory
    store = AsyncStatusJsonStore(tmp_path)
    results = await asyncio.gather(
        *(store.set_todo(f"t-{i:04d}", RUNNING) for i in range(10)), return_exceptions=True
    )
    assert all(isinstance(r, StateFileError) for r in results), results


async def test_cancelling_the_writer_still_reports_the_others_written(tmp_path: Path) -> None:
    store = SlowStore(tmp_path, delay=0.2)
    first = asyncio.ensure_future(store.set_todo("t-0000", RUNNING))
    await asyncio.sleep(0.05)  # first holds the lock, mid-write
    leader = asyncio.ensure_future(store.set_todo("t-0001", RUNNING))
    others = [asyncio.ensure_future(store.set_todo(f"t-{i:04d}", RUNNING)) for i in range(2, 6)]
    await first
    await asyncio.sleep(0.05)  # leader now writes t-0001..t-0005 as one batch
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    await asyncio.gather(*others)
    assert store.batches == [1, 5]  # nothing written twice: the others found theirs written
    doc = StatusFile.model_validate_json((tmp_path / ".agent" / "status.json").read_text())
    assert sorted(doc.todos) == [f"t-{i:04d}" for i in range(6)]


def test_the_sync_twin_loses_nothing_across_threads(tmp_path: Path) -> None:
    store = SyncStatusJsonStore(tmp_path)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(15):
                store.set_todo(f"t-{n:02d}{i:02d}", RUNNING)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(store.load().todos) == 8 * 15
