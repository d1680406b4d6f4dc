"""The ``cancelled`` status and the operator's audit in ``status.json`` survive migration both ways."""

from __future__ import annotations

from pathlib import Path

from codeagent.models import TodoStatus
from legacy.status import StatusStore
from llm_stub import StubServer
from migration import engine
from migration.survey import make_plan, survey
from migration.verify import verify_workspace
from tests.migration.conftest import run_async, run_legacy, trailers


def test_cancelled_todos_migrate_stay_unrun_and_come_back(legacy_ws: Path, stub: StubServer) -> None:
    store = StatusStore(legacy_ws)
    changes = store.operate("cancel", ["t-0006", "t-0007"], source="cli", loop_running=False)
    assert [c.after for c in changes] == [TodoStatus.CANCELLED] * 2
    found = survey(legacy_ws)
    assert found.problems == []
    status_line = next(c for c in make_plan(found, quarantine=False) if c.path == ".agent/status.json")
    assert "cancelled" in status_line.detail
    status_before = (legacy_ws / ".agent/status.json").read_bytes()

    assert engine.apply(legacy_ws).ok
    assert (legacy_ws / ".agent/status.json").read_bytes() == status_before  # same format, kept as is
    problems, _notes = verify_workspace(legacy_ws)
    assert problems == []

    run_async(legacy_ws, stub.url)  # the new core finishes everything but the cancelled two
    done = StatusStore(legacy_ws).load()
    assert {k for k, s in done.todos.items() if s.status is TodoStatus.CANCELLED} == {"t-0006", "t-0007"}
    assert sorted(trailers(legacy_ws)) == sorted(f"t-{n:04d}" for n in range(1, 13) if n not in (6, 7))
    assert [o.todo_id for o in done.operations] == ["t-0006", "t-0007"]

    assert engine.rollback(legacy_ws).ok
    assert StatusStore(legacy_ws).load().operations == done.operations
    store.operate("retry", ["t-0006", "t-0007"], source="cli", loop_running=False)
    run_legacy(legacy_ws, stub.url)  # after the rollback, the legacy loop runs them once retried
    final = StatusStore(legacy_ws).load()
    assert {s.status for s in final.todos.values()} == {TodoStatus.DONE}
    assert sorted(trailers(legacy_ws)) == [f"t-{n:04d}" for n in range(1, 13)]
    assert final.todos["t-0006"].attempts == 1
