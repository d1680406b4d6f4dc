"""A fleet of worker processes draining workspaces through PostgreSQL: real processes, signals and git.

Workers are started as ``codeagent worker --queue DSN`` (here all on one host,
sharing its disk as the fleet would share a volume); the todos' state lives in
the test's own database. One is killed with SIGKILL mid-run: procrastinate's
stalled-job check hands its drains to the others, which resume from the
checkpoints, and every todo still ends with exactly one commit.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

import core_sync.pg_state as spg
from fleet.pools import QUEUE_POOL_MAX, STATE_POOL_DEFAULT
from fleet.queue import DRAIN_TASK, FleetQueue, Timing
from fleet.workspaces import read_identity, write_identity
from llm_stub import StubOptions, StubServer
from tests.kernel.workspaces import append_todos, make_workspace, trailers

REPO = Path(__file__).resolve().parents[2]
STALLED_AFTER = 3.0  # seconds without a heartbeat before a worker's drains move
TODOS = 25  # per workspace of the SIGKILL test (12 workspaces: 300 todos)


def _join(dsn: str, roots: list[Path], todos_each: int) -> dict[str, Path]:
    """Register the workspaces, add their todos to the fleet's state, and ask for a drain of each."""
    db = spg.PgDatabase(dsn).open()
    idents = {}
    try:
        for root in roots:
            ident = write_identity(root)
            db.register(ident, root, root.name)
            store = spg.SyncPgTodoStore(db, ident)
            for todo in append_todos(todos_each):
                store.add(todo.text, todo.files)
            idents[ident] = root
    finally:
        db.close()

    async def defer() -> None:
        queue = FleetQueue(dsn)
        async with queue.app.open_async():
            await queue.ensure_schema()
            for ident in idents:
                await queue.defer_drain(ident)

    asyncio.run(defer())
    return idents


@contextmanager
def workers(
    dsn: str, url: str, count: int, logs: Path, *, concurrency: int = 4
) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            procs.append(start_worker(dsn, url, logs, concurrency=concurrency))
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start_worker(dsn: str, url: str, logs: Path, *, concurrency: int = 4) -> subprocess.Popen[bytes]:
    logs.mkdir(exist_ok=True)
    with (logs / f"worker-{time.monotonic_ns()}.log").open("wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "codeagent_app.cli", "worker", "--queue", dsn, "--llm-url", url,
             "--concurrency", str(concurrency), "--stalled-after", str(STALLED_AFTER)],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _states(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT doc->>'status', count(*) FROM codeagent_todo_states GROUP BY 1"
        ).fetchall()
    return {str(status): int(n) for status, n in rows}


def _events(dsn: str, after: int = 0) -> list[tuple[int, str | None, str, dict[str, Any], float]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT id, workspace, type, data, extract(epoch from now()) FROM codeagent_events WHERE id > %s ORDER BY id",
            (after,),
        ).fetchall()
    return [(int(r[0]), r[1], str(r[2]), dict(r[3]), float(r[4])) for r in rows]


def _wait(check: Callable[[], Any], within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _hosts_by_workspace(dsn: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for _id, workspace, kind, data, _now in _events(dsn):
        if kind == "todo.started" and workspace is not None:
            out.setdefault(workspace, set()).add(str(data.get("host")))
    return out


@pytest.mark.slow
def test_three_workers_drain_300_todos_over_12_workspaces_and_survive_a_sigkill(
    tmp_path: Path, pg_dsn: str
) -> None:
    # Three workers with eight drain slots each for twelve workspaces: whichever worker is killed, the
    # other two have a free slot for every drain it loses, so the resume waits for the stalled check
    # and a fetch, never for another workspace's drain to end. Two todos at a time per workspace keep
    # a worker's event loop (and so its heartbeats) responsive on a busy machine.
    roots = [tmp_path / f"ws{i:02d}" for i in range(12)]
    for root in roots:
        make_workspace(root, TODOS, todos=[], config='{"limits": {"per_workspace": 2}}')
    ident_of = {root.name: ident for ident, root in _join(pg_dsn, roots, TODOS).items()}
    with (
        StubServer(StubOptions(latency_ms=50)) as stub,
        workers(pg_dsn, stub.url, 3, tmp_path / "logs", concurrency=8) as procs,
    ):
        _wait(lambda: _states(pg_dsn).get("done", 0) >= len(roots) * TODOS // 5, 120, "a fifth of the todos")
        # The victim: the worker with the most workspaces started and not finished, as the event log tells.
        unfinished = {p.pid: _unfinished_by(pg_dsn, f"{os.uname().nodename}:{p.pid}") for p in procs}
        victim = max(procs, key=lambda p: len(unfinished[p.pid]))
        orphans = unfinished[victim.pid]
        assert orphans, unfinished
        host = f"{os.uname().nodename}:{victim.pid}"
        last_before = max((e[0] for e in _events(pg_dsn)), default=0)
        killed_at = time.time()
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        orphan_idents = [ident_of[w] for w in orphans]
        _wait(
            lambda: _moved_at(pg_dsn, orphan_idents, killed_at), 60, "the queue to move the victim's drains"
        )

        def resumed() -> bool:
            return any(
                kind == "todo.started" and workspace in orphans and data.get("host") != host
                for _id, workspace, kind, data, _now in _events(pg_dsn, last_before)
            )

        _wait(resumed, 60, "another worker to resume the victim's workspaces")
        _wait(lambda: _states(pg_dsn).get("done", 0) == len(roots) * TODOS, 180, "every todo")
    assert _states(pg_dsn) == {"done": len(roots) * TODOS}
    for root in roots:
        assert sorted(trailers(root)) == [f"t-{i + 1:04d}" for i in range(TODOS)]  # one commit each
        assert (root / "f7.txt").read_text() == "file 7\nline 7\n"
    # The victim and at least one taker worked (which of the others takes the moved drains is the queue's
    # choice: with 8 slots each, two workers may hold all 12 workspaces); resumed() proved the hand-over.
    assert len({h for hosts in _hosts_by_workspace(pg_dsn).values() for h in hosts}) >= 2

    # The resume, phase by phase, from the database's clocks: the queue's events, the kernels' own.
    timeline = _drain_timeline(pg_dsn, killed_at)
    moved_at = _moved_at(pg_dsn, orphan_idents, killed_at)
    runs = _drain_runs(pg_dsn, {ident: label for label, ident in ident_of.items()})
    resumed_run = min(
        (r for r in runs if r.started > killed_at and r.label in orphans), key=lambda r: r.started
    )
    assert moved_at is not None and resumed_run.first_todo is not None, timeline
    noticed = moved_at - killed_at
    fetched = resumed_run.started - moved_at
    start_up = resumed_run.first_todo - resumed_run.started
    # The yardstick of this machine at this moment: how long the first drains took to start.
    first_start_ups = [r.first_todo - r.started for r in runs if r.started < killed_at and r.first_todo]
    yardstick = max(first_start_ups)
    print(
        f"SIGKILL: {len(orphans)} unfinished workspace(s) moved after {noticed:.1f} s (stalled after"
        f" {STALLED_AFTER:g} s), taken {fetched:.1f} s later, its first todo {start_up:.1f} s after that"
        f" (the first drains took {yardstick:.1f} s to their first todo)"
    )
    timing = Timing.for_stalled_after(STALLED_AFTER)
    # Noticed: the last heartbeat, the stalled timeout, then the next check: timers, not work (2 s of
    # slack for the check job's own round trips on a busy machine).
    assert noticed <= timing.heartbeat + STALLED_AFTER + timing.check_every_seconds + 2.0, timeline
    # Taken: a free drain slot's next look for work (procrastinate is not told of a job put back).
    assert fetched <= timing.fetch_every + 2.0, timeline
    # Started: the workspace's identity and lock, the kernel, the checkpoints, up to the first todo:
    # work, which a busy machine slows down; within 5 s, or half as long again as the first drains'.
    assert start_up <= max(5.0, 1.5 * yardstick), timeline


def _moved_at(dsn: str, idents: list[str], since: float) -> float | None:
    """When the queue first moved one of these workspaces' drains after ``since``.

    Put back by the stalled check, superseded by a waiting drain, or started by another worker (a
    drain moved earlier off a worker that was only slow waits for its retry: see ``fleet/queue.py``).
    """
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT extract(epoch from min(e.at)) FROM procrastinate_events e"
            " JOIN procrastinate_jobs j ON j.id = e.job_id"
            " WHERE j.lock = ANY(%s) AND j.task_name = %s"
            " AND e.type IN ('deferred_for_retry', 'failed', 'started') AND e.at > to_timestamp(%s)",
            (idents, DRAIN_TASK, since),
        ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


@dataclass(frozen=True)
class DrainRun:
    """One run of a drain job: its workspace, when a worker started it, when its first todo started."""

    label: str
    started: float
    first_todo: float | None


def _drain_runs(dsn: str, label_of: dict[str, str]) -> list[DrainRun]:
    """Every start of a drain job, with the first todo its workspace started before the next start."""
    with psycopg.connect(dsn) as conn:
        starts = conn.execute(
            "SELECT j.lock, extract(epoch from e.at) FROM procrastinate_events e"
            " JOIN procrastinate_jobs j ON j.id = e.job_id"
            " WHERE j.task_name = %s AND e.type = 'started' ORDER BY e.at",
            (DRAIN_TASK,),
        ).fetchall()
        todos = conn.execute(
            "SELECT workspace, extract(epoch from time::timestamptz) FROM codeagent_events"
            " WHERE type = 'todo.started'"
        ).fetchall()
    runs = []
    for i, (lock, at) in enumerate(starts):
        until = min((float(t) for other, t in starts[i + 1 :] if other == lock), default=float("inf"))
        label = label_of[str(lock)]
        first = [float(t) for ws, t in todos if ws == label and float(at) <= float(t) < until]
        runs.append(DrainRun(label, float(at), min(first) if first else None))
    return runs


def _drain_timeline(dsn: str, since: float) -> str:
    """The queue's events from 10 s before ``since`` on, in seconds after it (what a failed timing shows)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT extract(epoch from e.at) - %s, e.job_id, j.task_name, e.type, j.lock"
            " FROM procrastinate_events e JOIN procrastinate_jobs j ON j.id = e.job_id"
            " WHERE e.at > to_timestamp(%s) - interval '10 s' ORDER BY e.at",
            (since, since),
        ).fetchall()
    return "\n".join(
        f"{t:+7.2f} s  job {job} {task} {kind} {lock or ''}" for t, job, task, kind, lock in rows
    )


def test_the_stalled_check_runs_every_few_seconds_at_any_minute() -> None:
    # A six-field cron has the seconds last: "*/2 * * * * *" ran the check every second of every
    # other minute, and a worker lost in the minutes between waited up to a minute for it.
    for stalled_after, every in ((3.0, 2), (10.0, 5)):
        queue = FleetQueue("postgresql://nobody@127.0.0.1:1/x", Timing.for_stalled_after(stalled_after))
        (periodic,) = queue.app.periodic_registry.periodic_tasks.values()
        for start in (1_700_000_000.0, 1_700_000_060.0, 1_700_000_101.0):  # minutes of both parities
            ticks = [start]
            cron = periodic.croniter
            cron.set_current(start_time=start)
            ticks += [cron.get_next(float) for _ in range(40)]
            assert max(b - a for a, b in itertools.pairwise(ticks)) <= every, (stalled_after, start)


def _unfinished_by(dsn: str, host: str) -> set[str]:
    started: dict[str, int] = {}
    for _id, workspace, kind, data, _now in _events(dsn):
        if workspace is None:
            continue
        if kind == "todo.started" and data.get("host") == host:
            started[workspace] = started.get(workspace, 0) + 1
        elif kind in ("todo.done", "todo.failed") and data.get("host") == host:
            started[workspace] = started.get(workspace, 0) - 1
    return {ws for ws, n in started.items() if n > 0}


@pytest.mark.slow
def test_a_worker_started_later_joins_and_takes_work(tmp_path: Path, pg_dsn: str) -> None:
    roots = [tmp_path / f"ws{i}" for i in range(6)]
    for root in roots:
        make_workspace(root, 10, todos=[])
    idents = _join(pg_dsn, roots, 10)
    logs = tmp_path / "logs"
    with (
        StubServer(StubOptions(latency_ms=400)) as stub,
        workers(pg_dsn, stub.url, 1, logs, concurrency=2) as procs,
    ):
        _wait(lambda: _states(pg_dsn).get("done", 0) >= 5, 60, "the first worker's progress")
        late = start_worker(pg_dsn, stub.url, logs, concurrency=2)
        procs.append(late)
        late_host = f"{os.uname().nodename}:{late.pid}"
        _wait(lambda: _states(pg_dsn).get("done", 0) == 60, 120, "all 60 todos")
    took = {ws for ws, hosts in _hosts_by_workspace(pg_dsn).items() if late_host in hosts}
    assert took, "the late worker drained nothing"
    assert all(len(hosts) == 1 for hosts in _hosts_by_workspace(pg_dsn).values())  # one worker per workspace
    for root in roots:
        assert sorted(trailers(root)) == [f"t-{i + 1:04d}" for i in range(10)]
    assert {read_identity(root) for root in roots} == set(idents)


def test_a_worker_refuses_a_workspace_it_sees_elsewhere(tmp_path: Path, pg_dsn: str) -> None:
    root = tmp_path / "ws"
    make_workspace(root, 1, todos=[])
    idents = _join(pg_dsn, [root], 1)
    (root / ".agent/workspace.json").write_text(json.dumps({"id": "someone-else"}))  # another checkout here
    with StubServer(StubOptions(latency_ms=10)) as stub, workers(pg_dsn, stub.url, 1, tmp_path / "logs"):
        failed = _wait(
            lambda: _job_status(pg_dsn, next(iter(idents))) == "failed", 30, "the drain to be refused"
        )
    assert failed
    assert trailers(root) == []
    log = "".join(p.read_text(errors="replace") for p in (tmp_path / "logs").iterdir())
    assert "is the shared volume mounted here?" in log


def _job_status(dsn: str, ident: str) -> str | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT status::text FROM procrastinate_jobs WHERE lock = %s ORDER BY id DESC LIMIT 1", (ident,)
        ).fetchone()
    return None if row is None else str(row[0])


def _connections(dsn: str) -> int:
    """Connections to the test's database, the asking one aside."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.slow
def test_a_workers_connections_do_not_grow_with_its_concurrency(tmp_path: Path, pg_dsn: str) -> None:
    # Before: the state pool grew to 4 x concurrency, so two workers at --concurrency 12 asked for 116
    # connections and the server (max_connections 100) refused the fleet ("too many clients").
    roots = [tmp_path / f"ws{i}" for i in range(12)]
    for root in roots:
        make_workspace(root, 4, todos=[], config='{"limits": {"per_workspace": 4}}')
    _join(pg_dsn, roots, 4)
    most = 0
    with (
        StubServer(StubOptions(latency_ms=100)) as stub,
        workers(pg_dsn, stub.url, 1, tmp_path / "logs", concurrency=12),
    ):
        deadline = time.monotonic() + 120
        while _states(pg_dsn).get("done", 0) < 48:
            assert time.monotonic() < deadline, "the worker did not finish 48 todos"
            most = max(most, _connections(pg_dsn))
            time.sleep(0.05)
    assert _states(pg_dsn) == {"done": 48}
    # The state pool and the queue's pool, with one for procrastinate's LISTEN beside it.
    assert 0 < most <= STATE_POOL_DEFAULT + QUEUE_POOL_MAX + 1, most
