"""The fleet's job queue: procrastinate over PostgreSQL, one job per workspace drain.

Adding a todo to workspace W defers the job "drain W" with ``lock = W`` and
``queueing_lock = W``: jobs sharing a lock never run at once (so one worker in
the whole fleet drives W, as the workspace lock does on one machine), and at
most one drain of W waits in the queue (a drain that is running and one that
waits cover every todo added meanwhile). The worker that takes the job drives
W with the async core until nothing is pending.

Crash recovery is procrastinate's: a worker killed with SIGKILL stops
heart-beating; a periodic task finds jobs whose worker went quiet for longer
than the stalled timeout and puts them back in the queue, and the next worker
resumes W from its checkpoints. That task has a queueing lock but no lock
(with a lock, it can be stalled itself and then blocks every later run:
procrastinate issue #1408). When a drain of the same workspace is already
waiting, the stalled one cannot be put back (its queueing lock is taken:
procrastinate issue #1446); it is marked failed instead, and the waiting drain
does its work.

A worker that is only slow (its heartbeats late on a busy host) is taken for
lost all the same, and the drain moved off it finds the workspace still locked
by that worker: the drain raises :class:`WorkspaceHeld` and is tried again
after a check period, never failed for it (a failed drain of a workspace whose
worker then dies would leave its todos waiting for the next one added). When
the slow worker finishes, the drain waiting for its retry is marked done with
it (procrastinate finishes a job that waits as well as one that runs).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import procrastinate
import psycopg
from procrastinate import exceptions as pexc
from procrastinate.jobs import Status
from procrastinate.retry import RetryStrategy

from fleet.pools import QUEUE_POOL_MAX

log = logging.getLogger("codeagent.fleet")

DRAIN_TASK = "codeagent.drain_workspace"
RETRY_TASK = "codeagent.retry_stalled_drains"
QUEUE = "codeagent"
#: The stalled-drain check has a queue (and a worker slot) of its own: drains can run for long,
#: and a check waiting for a free drain slot would leave a lost worker's workspaces waiting too.
MAINTENANCE_QUEUE = "codeagent.maintenance"
#: Taken while procrastinate's schema is created, so that workers starting together do not race.
_SCHEMA_LOCK = 72_410_002

#: How the application drains one workspace (set by the worker before it starts).
Drainer = Callable[[str], Awaitable[None]]


class WorkspaceHeld(Exception):
    """The workspace of a drain is held by another live process: the drain is tried again later."""


@dataclass(frozen=True)
class Timing:
    """How quickly a lost worker's jobs move: heartbeat period, when a worker counts as gone, how often it is checked.

    ``fetch_every`` is how often an idle drain slot looks for work without being told: procrastinate
    notifies workers of a new job, not of one put back in the queue, so a stalled drain that was moved
    waits for that look (procrastinate's default is 5 s).
    """

    heartbeat: float = 2.0
    stalled_after: float = 10.0
    check_every_seconds: int = 5
    fetch_every: float = 5.0

    @classmethod
    def for_stalled_after(cls, seconds: float) -> Timing:
        """Heart-beat five times per stalled timeout, look for stalled drains (and moved ones) twice per timeout."""
        check = max(1, round(seconds / 2))
        return cls(
            heartbeat=max(0.2, seconds / 5),
            stalled_after=seconds,
            check_every_seconds=check,
            fetch_every=float(min(5, check)),
        )


class FleetQueue:
    """The procrastinate app of one fleet: the drain task, the stalled-job task, and deferring."""

    def __init__(self, dsn: str, timing: Timing | None = None) -> None:
        self.dsn = dsn
        self.timing = timing or Timing()
        self.app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(conninfo=dsn, min_size=1, max_size=QUEUE_POOL_MAX),
        )
        self._drainer: Drainer | None = None
        self._register()

    def _register(self) -> None:
        app = self.app

        @app.task(
            name=DRAIN_TASK,
            queue=QUEUE,
            retry=RetryStrategy(wait=self.timing.check_every_seconds, retry_exceptions={WorkspaceHeld}),
        )
        async def drain(workspace: str) -> None:
            if self._drainer is None:
                raise RuntimeError("this process has no drainer: it is not a worker")
            await self._drainer(workspace)

        # croniter reads a sixth field as the seconds ("*/2 * * * * *" would be every second of every
        # other minute, and no check at all in the minutes between).
        @app.periodic(cron=f"* * * * * */{self.timing.check_every_seconds}", periodic_id="stalled")
        @app.task(name=RETRY_TASK, queue=MAINTENANCE_QUEUE, queueing_lock=RETRY_TASK)
        async def retry_stalled(timestamp: int) -> None:
            del timestamp
            await self.retry_stalled()

        self.drain_task = drain

    async def retry_stalled(self) -> list[int]:
        """Put the drains of silent workers back in the queue; return the job ids moved."""
        manager = self.app.job_manager
        moved: list[int] = []
        for job in await manager.get_stalled_jobs(
            task_name=DRAIN_TASK, seconds_since_heartbeat=self.timing.stalled_after
        ):
            assert job.id is not None
            try:
                await manager.retry_job(job)
            except pexc.UniqueViolation:
                # A drain of the same workspace waits already and will do this one's work.
                await manager.finish_job_by_id_async(job.id, status=Status.FAILED, delete_job=False)
                log.warning("stalled drain %s of %s superseded by a waiting one", job.id, job.task_kwargs)
                continue
            moved.append(job.id)
            log.warning("stalled drain %s of %s put back in the queue", job.id, job.task_kwargs)
        return moved

    async def ensure_schema(self) -> None:
        """Create procrastinate's tables when the database has none (once, whoever starts first)."""
        schema = self.app.schema_manager.get_schema()
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            await conn.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))
            try:
                cur = await conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")
                row = await cur.fetchone()
                if row is not None and not row[0]:
                    await conn.execute(schema.encode())
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK,))

    async def defer_drain(self, workspace: str) -> int | None:
        """Ask for a drain of ``workspace``; ``None`` when one is already waiting (it will see the new work)."""
        try:
            job_id: int = await self.drain_task.configure(
                lock=workspace, queueing_lock=workspace
            ).defer_async(workspace=workspace)
        except pexc.AlreadyEnqueued:
            return None
        return job_id

    async def run_worker(self, drainer: Drainer, *, concurrency: int, name: str | None = None) -> None:
        """Run jobs until SIGTERM / SIGINT (then let running drains finish: they stop at their next safe point)."""
        self._drainer = drainer
        maintenance = asyncio.create_task(
            self.app.run_worker_async(
                queues=[MAINTENANCE_QUEUE],
                concurrency=1,
                name=f"{name or 'codeagent-worker'} (maintenance)",
                update_heartbeat_interval=self.timing.heartbeat,
                stalled_worker_timeout=self.timing.stalled_after,
                listen_notify=True,
                install_signal_handlers=False,
            ),
            name="fleet-maintenance-worker",
        )
        try:
            await self.app.run_worker_async(
                queues=[QUEUE],
                concurrency=concurrency,
                name=name or "codeagent-worker",
                update_heartbeat_interval=self.timing.heartbeat,
                stalled_worker_timeout=self.timing.stalled_after,
                fetch_job_polling_interval=self.timing.fetch_every,
                listen_notify=True,
                install_signal_handlers=True,
            )
        finally:
            maintenance.cancel()
            await asyncio.gather(maintenance, return_exceptions=True)

    async def status(self) -> dict[str, Any]:
        """Workers with their heartbeats, and jobs by status and workspace (``codeagent queue status``)."""
        connector = self.app.connector
        workers = await connector.execute_query_all_async(
            "SELECT id, last_heartbeat, now() - last_heartbeat AS age FROM procrastinate_workers ORDER BY id"
        )
        jobs = await connector.execute_query_all_async(
            "SELECT status::text AS status, lock, count(*) AS n FROM procrastinate_jobs"
            " WHERE task_name = %(task)s GROUP BY status, lock ORDER BY lock, status",
            task=DRAIN_TASK,
        )
        return {
            "workers": [
                {
                    "id": int(w["id"]),
                    "last_heartbeat": w["last_heartbeat"].isoformat(),
                    "seconds_since": round(w["age"].total_seconds(), 1),
                }
                for w in workers
            ],
            "jobs": [{"workspace": j["lock"], "status": j["status"], "count": int(j["n"])} for j in jobs],
            "stalled_after_seconds": self.timing.stalled_after,
        }
