"""The fleet benchmark: workspaces drained by 1, 2 and 4 worker processes through PostgreSQL.

``codeagent bench --fleet`` (also ``python -m benchmarks.fleet``, ``nox -s bench-fleet``)
runs, for each worker count, the shipped ``codeagent worker --queue DSN`` processes
against a fresh database on the given PostgreSQL server, on the realistic LLM
profile (the stub in its own process: lognormal latency, median 2 s, p99 10 s,
3% 429 with Retry-After, 0.5% hangs), and measures:

* throughput: todos/s sustained (between the 10th and 90th percentile of the
  completion times, from the fleet's event log) and over the whole batch;
* the database's time per todo: ``pg_stat_database.active_time`` of the run's
  own database (every statement of the state stores, the event log and the
  queue), read after the workers have exited, divided by the todos;
* the queue's own overhead: the same figure for drains of a no-op drainer
  (defer, fetch through LISTEN/NOTIFY, finish, heartbeats, stalled checks),
  per drain, and drains per todo in the real runs;
* where the CPU went: the worker processes' own CPU per todo (each with its
  children: git), the whole machine's per todo (workers, PostgreSQL, the stub
  and anything else running), and the cores busy over the run; and how the
  todos spread over the workers (from the ``host`` of each ``todo.done``).

The machine's cores are in the report: with N cores, more than N busy workers
cannot run Python faster.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import core_sync.pg_state as spg
from benchmarks.measure import REPO, child_env, machine_info
from benchmarks.scenarios import CLIENT_TIMEOUT_S, MAX_RETRIES, REALISTIC_STUB, make_workspace
from fleet.queue import FleetQueue, Timing
from fleet.workspaces import write_identity
from llm_stub import StubOptions, start_stub_process, stop_stub_process

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True)
class FleetPlan:
    """What one fleet benchmark run does."""

    workers: tuple[int, ...] = (1, 2, 4)
    workspaces: int = 12
    todos_each: int = 100
    #: drain slots of the whole fleet: each of N workers gets ceil(concurrency / N), so the work spreads
    #: (with 12 slots each, the first worker to start took every workspace and the others idled)
    concurrency: int = 12
    noop_drains: int = 500


QUICK = FleetPlan(workers=(1, 2), workspaces=6, todos_each=20, noop_drains=100)


@contextmanager
def fresh_database(server: str) -> Iterator[str]:
    """A new database on ``server`` for one run; dropped afterwards."""
    name = f"codeagent_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(server)
    params["dbname"] = name
    try:
        yield make_conninfo("", **params)
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def active_ms(dsn: str) -> float:
    """Milliseconds the database has spent executing statements (its own sessions' included once closed)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        row = conn.execute(
            "SELECT active_time FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return float(row[0]) if row and row[0] is not None else 0.0


def _join(dsn: str, roots: Sequence[Path], todos_each: int) -> list[str]:
    db = spg.PgDatabase(dsn).open()
    idents = []
    try:
        for root in roots:
            ident = write_identity(root)
            db.register(ident, root, root.name)
            store = spg.SyncPgTodoStore(db, ident)
            for i in range(todos_each):
                store.add(f'append a line "line {i}" to file f{i}.txt', [f"f{i}.txt"])
            idents.append(ident)
    finally:
        db.close()
    return idents


async def _defer(dsn: str, idents: Sequence[str]) -> None:
    queue = FleetQueue(dsn)
    async with queue.app.open_async():
        await queue.ensure_schema()
        for ident in idents:
            await queue.defer_drain(ident)


def _done(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM codeagent_todo_states WHERE doc->>'status' = 'done'"
        ).fetchone()
    return int(row[0]) if row else 0


def _completion_times(dsn: str) -> list[float]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT time FROM codeagent_events WHERE type = 'todo.done' ORDER BY id"
        ).fetchall()
    from datetime import datetime

    return sorted(datetime.fromisoformat(str(r[0]).replace("Z", "+00:00")).timestamp() for r in rows)


def _drains(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'codeagent.drain_workspace'"
        ).fetchone()
    return int(row[0]) if row else 0


def _done_by_worker(dsn: str) -> list[int]:
    """Todos done per worker (the event's ``host``), most first."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT data->>'host', count(*) FROM codeagent_events WHERE type = 'todo.done' GROUP BY 1"
        ).fetchall()
    return sorted((int(r[1]) for r in rows), reverse=True)


def _tree_cpu_s(proc: psutil.Process) -> float:
    """CPU seconds of a live process and its children (alive or reaped)."""
    try:
        times = proc.cpu_times()
        return float(times.user + times.system + times.children_user + times.children_system)
    except psutil.Error:
        return 0.0


def _machine_busy_s() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def sustained_rate(times: Sequence[float]) -> float:
    """Completions per second between the 10th and 90th percentile of the completion times."""
    if len(times) < 10:
        return 0.0
    low, high = times[len(times) // 10], times[(len(times) * 9) // 10]
    return ((len(times) * 9) // 10 - len(times) // 10) / (high - low) if high > low else 0.0


def run_workers(server: str, stub_url: str, plan: FleetPlan, count: int, scratch: Path) -> dict[str, Any]:
    """One line: ``count`` worker processes drain every workspace of a fresh fleet."""
    with fresh_database(server) as dsn:
        base = scratch / f"workers-{count}"
        roots = [base / f"ws{i:02d}" for i in range(plan.workspaces)]
        config = {"llm": {"base_url": stub_url, "timeout": CLIENT_TIMEOUT_S, "max_retries": MAX_RETRIES}}
        for root in roots:
            make_workspace(root, plan.todos_each, config=config)
            (root / ".agent/todos.json").unlink()  # a fleet workspace's todos live in the database
        idents = _join(dsn, roots, plan.todos_each)
        before = active_ms(dsn)
        asyncio.run(_defer(dsn, idents))
        total = plan.workspaces * plan.todos_each
        per_worker = -(-plan.concurrency // count)
        busy_before = _machine_busy_s()
        started = time.monotonic()
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "codeagent_app.cli",
                    "worker",
                    "--queue",
                    dsn,
                    "--concurrency",
                    str(per_worker),
                ],
                cwd=REPO,
                env=child_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(count)
        ]
        try:
            while _done(dsn) < total:
                if time.monotonic() - started > 900:
                    raise RuntimeError(f"{count} worker(s) did not finish {total} todos in 15 minutes")
                time.sleep(0.2)
            wall = time.monotonic() - started
            busy = _machine_busy_s() - busy_before
            worker_cpu = sum(_tree_cpu_s(psutil.Process(proc.pid)) for proc in procs)
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        times = _completion_times(dsn)
        db_ms = active_ms(dsn) - before
        drains = _drains(dsn)
        spread = _done_by_worker(dsn)
    return {
        "workers": count,
        "todos": total,
        "workspaces": plan.workspaces,
        "concurrency_per_worker": per_worker,
        "wall_s": round(wall, 2),
        "todos_per_s_batch": round(total / wall, 2),
        "todos_per_s_sustained": round(sustained_rate(times), 2),
        "db_ms_per_todo": round(db_ms / total, 3),
        "drains": drains,
        "drains_per_todo": round(drains / total, 4),
        "worker_cpu_ms_per_todo": round(1000 * worker_cpu / total, 2),
        "machine_cpu_ms_per_todo": round(1000 * busy / total, 2),
        "cores_busy": round(busy / wall, 2),
        "done_by_worker": spread,
    }


def queue_overhead(server: str, drains: int) -> dict[str, Any]:
    """Database time per drain of the queue alone: a worker whose drainer does nothing."""

    async def run(dsn: str) -> float:
        queue = FleetQueue(dsn, Timing())
        done = asyncio.Event()
        seen = 0

        async def noop(_workspace: str) -> None:
            nonlocal seen
            seen += 1
            if seen == drains:
                done.set()

        async with queue.app.open_async():
            await queue.ensure_schema()
            before = active_ms(dsn)
            for i in range(drains):
                await queue.defer_drain(f"bench-{i}")
            worker = asyncio.create_task(queue.run_worker(noop, concurrency=4, name="bench"))
            await asyncio.wait_for(done.wait(), 120)
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
        await asyncio.sleep(0.5)
        return active_ms(dsn) - before

    with fresh_database(server) as dsn:
        db_ms = asyncio.run(run(dsn))
    return {"drains": drains, "db_ms_total": round(db_ms, 1), "db_ms_per_drain": round(db_ms / drains, 3)}


def render(results: dict[str, Any]) -> str:
    """The Markdown report of a run."""
    machine = results["machine"]
    lines = [
        "# Fleet benchmark",
        "",
        f"Measured {results['when']} on {machine.get('cpus')} CPUs, Python {machine.get('python')},"
        f" load average {results['load_before']} before / {results['load_after']} after;"
        f" PostgreSQL {results['postgres']}; commit {results.get('commit', '?')}.",
        "",
        "Realistic LLM profile (stub in its own process): lognormal latency, median 2 s, p99 10 s;"
        " 3% 429 with Retry-After 1 s; 0.5% hangs (client timeout "
        f"{CLIENT_TIMEOUT_S:g} s, then a retry). Each line: a fresh database, N `codeagent worker --queue DSN"
        f" --concurrency C` processes with C = ceil({results['plan']['concurrency']} / N) drain slots each"
        f" (the fleet's {results['plan']['concurrency']} slots spread over its workers),"
        f" {results['plan']['workspaces']} workspaces x {results['plan']['todos_each']} todos.",
        "",
        "| worker processes | --concurrency | todos | wall (s) | todos/s sustained | todos/s batch | per core (sustained) |"
        " DB ms per todo | drains per todo | worker CPU ms per todo | machine CPU ms per todo | cores busy |"
        " todos done per worker |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    cores = machine.get("cpus") or 1
    for line in results["lines"]:
        lines.append(
            f"| {line['workers']} | {line.get('concurrency_per_worker', '-')} | {line['todos']} | {line['wall_s']} | {line['todos_per_s_sustained']} |"
            f" {line['todos_per_s_batch']} | {line['todos_per_s_sustained'] / cores:.2f} |"
            f" {line['db_ms_per_todo']} | {line['drains_per_todo']} |"
            f" {line.get('worker_cpu_ms_per_todo', '-')} | {line.get('machine_cpu_ms_per_todo', '-')} |"
            f" {line.get('cores_busy', '-')} | {', '.join(map(str, line.get('done_by_worker', []))) or '-'} |"
        )
    queue = results["queue"]
    lines += [
        "",
        f"The queue alone (a no-op drainer, {queue['drains']} drains): {queue['db_ms_per_drain']} ms of"
        " database time per drain (defer, fetch via LISTEN/NOTIFY, finish, heartbeats, stalled checks)."
        " A drain covers every todo of its workspace that is pending when it runs, so the queue's cost per"
        " todo is that figure times the drains per todo above.",
        "",
        "DB ms per todo is `pg_stat_database.active_time` of the run's own database over the run, divided"
        " by its todos: every statement of the state stores (todos, status, checkpoints), the event log"
        " and the queue (time waiting for a lock counts too). Worker CPU: the worker processes and their"
        " git children; machine CPU: every process of the machine over the run (workers, PostgreSQL, the"
        " stub, and whatever else ran), so on a shared machine read it as an upper bound. The wall time"
        " includes the workers' start-up; the sustained rate leaves the start and the tail out.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.fleet``."""
    parser = argparse.ArgumentParser(
        prog="codeagent bench --fleet", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--pg", default=os.environ.get("CODEAGENT_TEST_PG") or DEFAULT_SERVER)
    parser.add_argument("--quick", action="store_true", help="1 and 2 workers, 6 x 20 todos")
    parser.add_argument("--workers", type=int, nargs="*", help="worker counts (default 1 2 4)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FleetPlan()
    if args.workers:
        plan = FleetPlan(
            tuple(args.workers), plan.workspaces, plan.todos_each, plan.concurrency, plan.noop_drains
        )
    out: Path = args.out or REPO / "bench-results" / f"fleet-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    try:
        with psycopg.connect(args.pg, connect_timeout=5) as conn:
            version = conn.execute("SHOW server_version").fetchone()
    except psycopg.Error as exc:
        print(f"codeagent: error: no PostgreSQL at {args.pg}: {exc}", file=sys.stderr)
        return 2
    stub, url = start_stub_process(StubOptions(**REALISTIC_STUB))
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine_info(),
        "postgres": version[0] if version else "?",
        "plan": {
            "workspaces": plan.workspaces,
            "todos_each": plan.todos_each,
            "concurrency": plan.concurrency,
        },
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "commit": _commit(),
    }
    try:
        results["lines"] = []
        for count in plan.workers:
            print(f"fleet: {count} worker(s)...", file=sys.stderr, flush=True)
            results["lines"].append(run_workers(args.pg, url, plan, count, out / "scratch"))
        print("fleet: the queue alone...", file=sys.stderr, flush=True)
        results["queue"] = queue_overhead(args.pg, plan.noop_drains)
    finally:
        stop_stub_process(stub)
    results["load_after"] = [round(x, 2) for x in os.getloadavg()]
    (out / "fleet.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out / "fleet.md").write_text(render(results), encoding="utf-8")
    print((out / "fleet.md").read_text(encoding="utf-8"))
    return 0


def _commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "?"


if __name__ == "__main__":
    sys.exit(main())
