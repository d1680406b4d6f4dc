"""A fleet of worker processes draining workspaces through PostgreSQL: real processes, signals and git.

Workers are started as ``codeagent worker --queue DSN`` (here all on one host,
sharing its disk as the fleet would share a volume); the todos' state lives in
the test's own database. One is killed with SIGKILL mid-run: procrastinate's
stalled-job check hands its drains to the others, which resume from the
checkpoints, and every todo still ends with exactly one commit.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

import core_sync.pg_state as spg
from fleet.queue import FleetQueue
from fleet.workspaces import read_identity, write_identity
from llm_stub import StubOptions, StubServer
from tests.kernel.workspaces import append_todos, make_workspace, trailers

REPO = Path(__file__).resolve().parents[2]
STALLED_AFTER = 3.0  # seconds without a heartbeat before a worker's drains move


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
def test_three_workers_drain_300_todos_and_survive_a_sigkill(tmp_path: Path, pg_dsn: str) -> None:
    roots = [tmp_path / f"ws{i:02d}" for i in range(12)]
    for root in roots:
        make_workspace(root, 25, todos=[])
    _join(pg_dsn, roots, 25)
    with (
        StubServer(StubOptions(latency_ms=50)) as stub,
        workers(pg_dsn, stub.url, 3, tmp_path / "logs") as procs,
    ):
        _wait(lambda: _states(pg_dsn).get("done", 0) >= 60, 120, "a fifth of the todos")
        victim = procs[1]
        host = f"{os.uname().nodename}:{victim.pid}"
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed_at = time.time()
        last_before = max((e[0] for e in _events(pg_dsn)), default=0)
        # Workspaces the victim had started and not finished, as the event log tells.
        orphans = _unfinished_by(pg_dsn, host)

        def resumed() -> float | None:
            for _id, workspace, kind, data, now in _events(pg_dsn, last_before):
                if kind == "todo.started" and workspace in orphans and data.get("host") != host:
                    return now - killed_at
            return None

        resumed_after = (
            _wait(resumed, 60, "another worker to resume the victim's workspaces") if orphans else 0.0
        )
        _wait(lambda: _states(pg_dsn).get("done", 0) == 300, 180, "all 300 todos")
    print(f"SIGKILL: {len(orphans)} unfinished workspace(s) resumed elsewhere after {resumed_after:.1f} s"
          f" (stalled after {STALLED_AFTER:g} s)")  # fmt: skip
    assert _states(pg_dsn) == {"done": 300}
    for root in roots:
        assert sorted(trailers(root)) == [f"t-{i + 1:04d}" for i in range(25)]  # one commit each
        assert (root / "f7.txt").read_text() == "file 7\nline 7\n"
    assert resumed_after <= STALLED_AFTER + 8.0  # + the check period (2 s), a heartbeat, the next fetch
    assert len({h for hosts in _hosts_by_workspace(pg_dsn).values() for h in hosts}) >= 3


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
