"""A workspace moved to PostgreSQL is drained by a real fleet worker, then comes back to its files.

All through the command line: ``migrate apply --to postgres``, ``todo add
--queue``, ``worker --queue`` (the stub LLM), SIGTERM, ``migrate apply --to
files``, and ``run --until-idle``, which finds nothing left to do.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from codeagent.models import TodoStatus
from core_sync.status import SyncStatusJsonStore
from llm_stub import StubServer
from migration import layout
from tests.migration.conftest import trailers
from tests.migration.test_postgres import codeagent


def _done(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM codeagent_todo_states WHERE doc->>'status' = 'done'"
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.slow
def test_a_worker_drains_the_moved_workspace_then_it_comes_back_to_files(
    legacy_ws: Path, pg_dsn: str, stub: StubServer, tmp_path: Path
) -> None:
    ws = str(legacy_ws)
    applied = codeagent("migrate", "apply", "-w", ws, "--to", "postgres", pg_dsn)
    assert applied.returncode == 0, applied.stderr
    assert "9 unfinished todos: queued a drain" in applied.stdout  # t-0004 (halted) to t-0012
    assert not (legacy_ws / layout.TODOS).exists()
    text = 'append a line "Drained by the fleet." to file notes.txt'
    added = codeagent("todo", "add", "--queue", pg_dsn, "-w", ws, text, "--file", "notes.txt")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "t-0013"  # the ids the files had, and the next one

    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "codeagent_app.cli", "worker", "--queue", pg_dsn, "--llm-url", stub.url,
             "--concurrency", "1", "--stalled-after", "5"],
            cwd=Path(__file__).resolve().parents[2], stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while _done(pg_dsn) < 13:
            assert worker.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, f"the worker did not drain the workspace:\n{log.read_text()}"
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, log.read_text(errors="replace")

    back = codeagent("migrate", "apply", "-w", ws, "--to", "files")
    assert back.returncode == 0, back.stderr
    assert not (legacy_ws / layout.STORE).exists()
    run = codeagent("run", "-w", ws, "--loop", "async", "--until-idle", "--llm-url", stub.url)
    assert run.returncode == 0, run.stderr
    assert "processed 0 todo(s)" in run.stdout

    status = SyncStatusJsonStore(legacy_ws).load()
    assert sorted(status.todos) == [f"t-{n:04d}" for n in range(1, 14)]
    assert {s.status for s in status.todos.values()} == {TodoStatus.DONE}
    commits = Counter(trailers(legacy_ws))
    assert sorted(commits) == [f"t-{n:04d}" for n in range(1, 14)] and set(commits.values()) == {1}
    assert "Drained by the fleet." in (legacy_ws / "notes.txt").read_text()
    assert codeagent("migrate", "verify", "-w", ws).returncode == 0
