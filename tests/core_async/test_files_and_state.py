"""Async files and state stores: parallel reads, atomic writes, concurrency, a loop that never blocks."""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
import time
from pathlib import Path

import pytest

from codeagent.errors import WorkspaceViolation
from codeagent.models import Checkpoint, Stage, TodoState, TodoStatus
from core_async._compat import agather, asleep, ato_thread
from core_async.checkpoints import AsyncCheckpointJsonStore
from core_async.files import CHUNK_SIZE, AsyncWorkspaceFiles
from core_async.status import AsyncStatusJsonStore
from core_async.todos import AsyncTodoJsonStore


async def test_read_many_splits_large_batches_across_parallel_hops(tmp_path: Path) -> None:
    names = [f"d{n % 7}/f{n}.txt" for n in range(5 * CHUNK_SIZE)]
    for name in names:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(name)
    files = AsyncWorkspaceFiles(tmp_path)
    got = await files.read_many(names)
    assert list(got) == names
    assert all(got[name] == name for name in names)


async def test_read_many_reports_the_first_bad_path_even_in_a_later_chunk(tmp_path: Path) -> None:
    names = [f"f{n}.txt" for n in range(3 * CHUNK_SIZE)]
    names[2 * CHUNK_SIZE + 5] = "../escape"
    with pytest.raises(WorkspaceViolation) as caught:
        await AsyncWorkspaceFiles(tmp_path).read_many(names)
    assert caught.value.path == "../escape"


async def test_large_file_read_with_aiofiles(tmp_path: Path) -> None:
    text = "line of text\n" * 70_000  # ~900 KB
    (tmp_path / "big.txt").write_text(text)
    files = AsyncWorkspaceFiles(tmp_path)
    assert await files.read("big.txt") == text
    assert await files.resolve("big.txt") == (tmp_path / "big.txt").resolve()


async def test_concurrent_writes_to_one_file_never_mix(tmp_path: Path) -> None:
    files = AsyncWorkspaceFiles(tmp_path)
    contents = [str(n) * 10_000 for n in range(10)]
    await agather(*(files.write("same.txt", c) for c in contents))
    assert await files.read("same.txt") in contents
    assert await ato_thread(lambda: [p.name for p in tmp_path.iterdir()]) == ["same.txt"]


async def test_write_many_across_directories(tmp_path: Path) -> None:
    files = AsyncWorkspaceFiles(tmp_path)
    batch = {f"d{n % 3}/f{n}.txt": f"{n}\n" for n in range(30)}
    await files.write_many(batch)
    assert await files.read_many(list(batch)) == batch


async def test_concurrent_todo_adds_lose_nothing(tmp_path: Path) -> None:
    store = AsyncTodoJsonStore(tmp_path)
    added = await agather(*(store.add(f"work {n}") for n in range(20)))
    assert sorted(t.id for t in added) == [f"t-{n:04d}" for n in range(1, 21)]
    assert len(await store.load()) == 20


async def test_waiting_for_another_process_lock_does_not_block_the_loop(tmp_path: Path) -> None:
    """Another process holds .agent/todos.lock; the add waits in a worker thread, the loop keeps ticking."""
    lock_path = tmp_path / ".agent" / "todos.lock"
    lock_path.parent.mkdir()
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    threading.Timer(0.3, os.close, args=(fd,)).start()
    ticks = 0
    adding = True

    async def ticker() -> None:
        nonlocal ticks
        while adding:
            ticks += 1
            await asleep(0.01)

    started = time.monotonic()
    ticking = asyncio.ensure_future(ticker())
    todo = await AsyncTodoJsonStore(tmp_path).add("waits for the lock")
    adding = False
    await ticking
    assert time.monotonic() - started >= 0.25
    assert todo.id == "t-0001"
    assert ticks >= 10  # the loop kept running while the add waited


async def test_concurrent_status_updates_all_land(tmp_path: Path) -> None:
    store = AsyncStatusJsonStore(tmp_path)
    await agather(*(store.set_todo(f"t-{n}", TodoState(status=TodoStatus.DONE)) for n in range(15)))
    assert sorted((await store.load()).todos) == sorted(f"t-{n}" for n in range(15))


async def test_checkpoint_sequence_numbers(tmp_path: Path) -> None:
    store = AsyncCheckpointJsonStore(tmp_path)
    for stage in Stage:
        await store.save(Checkpoint(todo_id="t-0001", stage=stage))
    record = await store.load_versioned("t-0001")
    assert record is not None
    assert (record.seq, record.stage, record.schema_version) == (4, Stage.COMMITTED, 2)
    assert await store.load_versioned("t-0002") is None
    assert await store.list_ids() == ["t-0001"]
