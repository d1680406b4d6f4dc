"""The fleet's queue and its workspace identities, in one process against real PostgreSQL.

The multi-process behaviour (workers killed, drains moved) is in
``test_fleet.py``; here the same code runs on the test's debug-mode loop: the
drain jobs and their locks, the stalled-drain check on a worker made silent,
a worker that takes a drain and stops when cancelled, and the identity check
a worker makes before it drives a workspace.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from procrastinate.jobs import Status

from codeagent.errors import ConfigError, StateFileError
from core_async.pg_state import PgDatabase, UnknownWorkspace
from fleet.queue import QUEUE, RETRY_TASK, FleetQueue, Timing
from fleet.workspaces import IDENTITY_RELPATH, read_identity, register, verify_identity, write_identity

WAIT = 15.0


# -- workspaces ------------------------------------------------------------------------------------------


@pytest.fixture
async def db(shared_pg_dsn: str) -> AsyncIterator[PgDatabase]:
    database = await PgDatabase(shared_pg_dsn, max_size=4).open()
    try:
        yield database
    finally:
        await database.aclose()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "unreadable"),
        ('["a list"]', "no workspace id"),
        ('{"id": ""}', "no workspace id"),
        ('{"path": "/elsewhere"}', "no workspace id"),
    ],
)
def test_a_bad_identity_file_is_a_state_error(tmp_path: Path, content: str, message: str) -> None:
    assert read_identity(tmp_path) is None  # never joined a fleet
    (tmp_path / IDENTITY_RELPATH).parent.mkdir(parents=True)
    (tmp_path / IDENTITY_RELPATH).write_text(content)
    with pytest.raises(StateFileError, match=message) as caught:
        read_identity(tmp_path)
    assert IDENTITY_RELPATH in str(caught.value)


async def test_a_workspace_joins_once_and_is_recognised_only_where_it_is(
    db: PgDatabase, tmp_path: Path
) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    ident = await register(db, root)
    assert json.loads((root / IDENTITY_RELPATH).read_text()) == {"id": ident, "path": str(root)}
    assert await register(db, root) == ident  # joining again keeps the id
    assert await db.workspace_path(ident) == str(root)
    assert await verify_identity(db, ident) == root

    (root / IDENTITY_RELPATH).unlink()  # the shared volume is not mounted on this host
    with pytest.raises(ConfigError, match=f"this host sees no workspace at the path of {ident}"):
        await verify_identity(db, ident)
    other = write_identity(root)  # another directory at that path
    with pytest.raises(ConfigError, match=f"this host sees workspace {other} at the path of {ident}"):
        await verify_identity(db, ident)
    (root / IDENTITY_RELPATH).write_text("garbage")
    with pytest.raises(ConfigError, match=f"not the fleet's workspace {ident} on this host") as caught:
        await verify_identity(db, ident)
    assert isinstance(caught.value.__cause__, StateFileError)
    with pytest.raises(UnknownWorkspace):
        await verify_identity(db, uuid.uuid4().hex)


# -- the queue -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(10.0, Timing(2.0, 10.0, 5)), (0.5, Timing(0.2, 0.5, 1)), (3.0, Timing(0.6, 3.0, 2))],
)
def test_timing_follows_the_stalled_timeout(seconds: float, expected: Timing) -> None:
    timing = Timing.for_stalled_after(seconds)
    assert timing.heartbeat == pytest.approx(expected.heartbeat)
    assert (timing.stalled_after, timing.check_every_seconds) == (
        expected.stalled_after,
        expected.check_every_seconds,
    )


@pytest.fixture
async def queue(shared_pg_dsn: str) -> AsyncIterator[FleetQueue]:
    fleet = FleetQueue(shared_pg_dsn, Timing.for_stalled_after(5))
    async with fleet.app.open_async():
        await fleet.ensure_schema()
        # The module's database: each test starts with no job and no worker left by another.
        await fleet.app.connector.execute_query_async(
            "TRUNCATE procrastinate_jobs, procrastinate_workers CASCADE"
        )
        yield fleet


def _jobs(status: dict[str, Any], workspace: str) -> list[tuple[str, int]]:
    return [(j["status"], j["count"]) for j in status["jobs"] if j["workspace"] == workspace]


async def test_one_drain_per_workspace_waits(queue: FleetQueue) -> None:
    await queue.ensure_schema()  # a second worker starting: the tables exist, nothing happens
    a, b = uuid.uuid4().hex, uuid.uuid4().hex
    first = await queue.defer_drain(a)
    assert isinstance(first, int)
    assert await queue.defer_drain(a) is None  # one waits already: it will see the new work
    assert isinstance(await queue.defer_drain(b), int)
    status = await queue.status()
    assert _jobs(status, a) == [("todo", 1)] and _jobs(status, b) == [("todo", 1)]
    assert status["stalled_after_seconds"] == 5


async def _take(queue: FleetQueue, workspace: str) -> tuple[int, int]:
    """A worker that registered, took the drain of ``workspace``, then fell silent: ``(worker, job)``."""
    manager = queue.app.job_manager
    worker = await manager.register_worker()
    job = await manager.fetch_job(queues=[QUEUE], worker_id=worker)
    assert job is not None and job.task_kwargs == {"workspace": workspace}
    await queue.app.connector.execute_query_async(
        "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour' WHERE id = %(id)s",
        id=worker,
    )
    assert job.id is not None
    return worker, job.id


async def test_a_silent_workers_drain_is_put_back_or_superseded(queue: FleetQueue) -> None:
    manager = queue.app.job_manager
    quiet, busy = uuid.uuid4().hex, uuid.uuid4().hex
    await queue.defer_drain(quiet)
    _worker, lost = await _take(queue, quiet)
    assert await queue.retry_stalled() == [lost]
    assert await manager.get_job_status_async(lost) == Status.TODO
    assert await queue.retry_stalled() == []  # nothing is stalled any more

    # The next lost drain's workspace already has a drain waiting: the lost one is marked failed.
    _worker, taken = await _take(queue, quiet)
    assert await manager.get_job_status_async(taken) == Status.DOING
    waiting = await queue.defer_drain(quiet)
    assert isinstance(waiting, int)
    await queue.defer_drain(busy)
    assert await queue.retry_stalled() == []
    assert await manager.get_job_status_async(taken) == Status.FAILED
    assert await manager.get_job_status_async(waiting) == Status.TODO


async def test_the_drain_task_needs_a_drainer(queue: FleetQueue) -> None:
    with pytest.raises(RuntimeError, match="it is not a worker"):
        await queue.drain_task.func(workspace="w")
    retry = queue.app.tasks[RETRY_TASK]
    assert await retry.func(timestamp=0) is None  # the periodic check runs retry_stalled: nothing stalled


async def test_a_worker_drains_and_stops_when_cancelled(queue: FleetQueue) -> None:
    workspace = uuid.uuid4().hex
    drained: asyncio.Queue[str] = asyncio.Queue()

    async def drainer(name: str) -> None:
        await drained.put(name)

    await queue.defer_drain(workspace)
    worker = asyncio.create_task(queue.run_worker(drainer, concurrency=1, name="in-process"))
    try:
        async with asyncio.timeout(WAIT):
            assert await drained.get() == workspace
            while _jobs(await queue.status(), workspace) != [("succeeded", 1)]:  # noqa: ASYNC110  (the database's state)
                await asyncio.sleep(0.05)
        workers = (await queue.status())["workers"]
        assert len(workers) >= 2 and all(w["seconds_since"] < 60 for w in workers)  # drains and maintenance
    finally:
        worker.cancel()
        async with asyncio.timeout(WAIT):
            await asyncio.gather(worker, return_exceptions=True)
    assert worker.done()
    assert (await queue.status())["workers"] == []  # both workers unregistered on the way out


def test_a_queue_on_no_database_fails_loudly() -> None:
    async def main() -> None:
        fleet = FleetQueue("postgresql://agent:s3cret@127.0.0.1:1/nowhere")
        await fleet.ensure_schema()

    with pytest.raises(psycopg.OperationalError):
        asyncio.run(main())
