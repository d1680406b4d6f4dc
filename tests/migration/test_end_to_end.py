"""Real workspaces made by the legacy loop, migrated, then finished by the async core or, after rollback, by legacy."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from codeagent.models import Stage, TodoStatus
from legacy.status import StatusStore
from legacy.workspace_lock import hold_workspace
from migration import engine
from migration.report import workspace_status
from migration.verify import verify_workspace
from tests.migration.conftest import checkpoint_docs, run_async, run_legacy, state_bytes, trailers, tree_hash


def _assert_all_done_once(root: Path) -> None:
    status = StatusStore(root).load()
    assert len(status.todos) == 12
    assert {s.status for s in status.todos.values()} == {TodoStatus.DONE}
    commits = Counter(trailers(root))
    assert sorted(commits) == [f"t-{n:04d}" for n in range(1, 13)]
    assert set(commits.values()) == {1}, commits
    assert {s.commit for s in status.todos.values()} == {
        line for line in _shas(root) if line
    }  # every recorded commit exists, no other agent commit


def _shas(root: Path) -> list[str]:
    import subprocess

    out = subprocess.run(
        ["git", "log", "--format=%H %(trailers:key=Todo-Id,valueonly)"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split()[0] for line in out.splitlines() if len(line.split()) > 1]


def test_plan_changes_nothing(legacy_ws: Path) -> None:
    from typer.testing import CliRunner

    from migration.cli import migrate_app

    before = tree_hash(legacy_ws)
    result = CliRunner().invoke(migrate_app, ["plan", "-w", str(legacy_ws)])
    assert result.exit_code == 0, result.output
    assert "convert    .agent/checkpoints/t-0004.json" in result.output
    assert "counts: 1 backup, 4 convert, 1 create, 3 keep" in result.output
    assert tree_hash(legacy_ws) == before


def test_apply_then_async_core_finishes(legacy_ws: Path, stub: object) -> None:
    before = state_bytes(legacy_ws)
    outcome = engine.apply(legacy_ws)
    assert outcome.ok, outcome.lines
    docs = checkpoint_docs(legacy_ws)
    assert len(docs) == 4
    assert all(d["schema_version"] == 2 and d["seq"] == 1 for d in docs.values())
    assert docs["t-0004.json"]["stage"] == "edited"
    for rel in (".agent/todos.json", ".agent/status.json"):
        assert (legacy_ws / rel).read_bytes() == before[rel]
    marker = json.loads((legacy_ws / ".agent/format.json").read_text())
    assert marker["format"] == 2 and marker["backup"].startswith(".agent/backup/")
    backup = legacy_ws / marker["backup"]
    manifest = json.loads((backup / "manifest.json").read_text())
    assert manifest["files"].keys() == before.keys()
    assert (backup / ".agent/checkpoints/t-0004.json").read_bytes() == before[
        ".agent/checkpoints/t-0004.json"
    ]
    assert verify_workspace(legacy_ws)[0] == []

    run_async(legacy_ws, stub.url)  # type: ignore[attr-defined]
    _assert_all_done_once(legacy_ws)
    assert checkpoint_docs(legacy_ws)["t-0004.json"]["seq"] == 2  # resumed: committed after edited
    assert verify_workspace(legacy_ws)[0] == []


def test_rollback_then_legacy_finishes(legacy_ws: Path, stub: object) -> None:
    url = stub.url  # type: ignore[attr-defined]
    assert engine.apply(legacy_ws).ok
    run_async(legacy_ws, url, todos=3, halt=("t-0007", Stage.ANSWERED))
    assert checkpoint_docs(legacy_ws)["t-0007.json"]["stage"] == "answered"
    outcome = engine.rollback(legacy_ws)
    assert outcome.ok, outcome.lines
    assert not (legacy_ws / ".agent/format.json").exists()
    docs = checkpoint_docs(legacy_ws)
    assert len(docs) == 7
    assert all("schema_version" not in d for d in docs.values())
    assert docs["t-0007.json"]["stage"] == "answered"
    assert workspace_status(legacy_ws)["format"] == "legacy"
    run_legacy(legacy_ws, url)
    _assert_all_done_once(legacy_ws)


def test_apply_and_rollback_twice_are_no_ops(legacy_ws: Path) -> None:
    assert engine.apply(legacy_ws).ok
    after = state_bytes(legacy_ws)
    again = engine.apply(legacy_ws)
    assert again.ok and "nothing to do" in again.lines[-1]
    assert state_bytes(legacy_ws) == after
    assert engine.rollback(legacy_ws).ok
    again = engine.rollback(legacy_ws)
    assert again.ok and "nothing to do" in again.lines[-1]


def test_round_trip_restores_the_original_bytes(legacy_ws: Path) -> None:
    before = state_bytes(legacy_ws)
    assert engine.apply(legacy_ws).ok
    assert engine.rollback(legacy_ws).ok
    assert state_bytes(legacy_ws) == before


@pytest.mark.parametrize("op", ["apply", "rollback"])
def test_refuses_while_a_loop_holds_the_workspace(legacy_ws: Path, op: str) -> None:
    if op == "rollback":
        assert engine.apply(legacy_ws).ok
    before = state_bytes(legacy_ws)
    with hold_workspace(legacy_ws, "legacy"):
        outcome = engine.apply(legacy_ws) if op == "apply" else engine.rollback(legacy_ws)
    assert outcome.code == engine.EXIT_BUSY
    assert "held by pid" in outcome.lines[0] and "legacy loop" in outcome.lines[0]
    assert state_bytes(legacy_ws) == before


def test_failed_verification_restores_and_exits_non_zero(
    legacy_ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = state_bytes(legacy_ws)
    monkeypatch.setattr(engine, "compare", lambda *a, **k: ["t-0001.json: reply: differs"])
    outcome = engine.apply(legacy_ws)
    assert outcome.code == engine.EXIT_FAILED
    assert "verification found differences" in outcome.lines[0]
    assert state_bytes(legacy_ws) == before
    assert not (legacy_ws / ".agent/migrate-journal.json").exists()


def test_verify_reports_a_tampered_checkpoint_by_field(legacy_ws: Path) -> None:
    assert engine.apply(legacy_ws).ok
    path = legacy_ws / ".agent/checkpoints/t-0002.json"
    doc = json.loads(path.read_text())
    doc["reply"] = "something else"
    path.write_text(json.dumps(doc))
    problems, _ = verify_workspace(legacy_ws)
    assert any("t-0002.json" in p and "reply" in p for p in problems), problems


def test_status_lists_format_and_backups(legacy_ws: Path) -> None:
    assert workspace_status(legacy_ws)["format"] == "legacy"
    assert engine.apply(legacy_ws).ok
    info = workspace_status(legacy_ws)
    assert info["format"] == "new (format 2)"
    assert info["migrated_at"] and info["backup"]
    assert [(b["op"], b["files"], b["intact"]) for b in info["backups"]] == [("apply", 6, True)]


def test_files_it_does_not_understand_are_carried_over(legacy_ws: Path) -> None:
    note = legacy_ws / ".agent/checkpoints/README"
    note.write_text("kept by hand\n")
    assert engine.apply(legacy_ws).ok
    assert note.read_text() == "kept by hand\n"
    assert engine.rollback(legacy_ws).ok
    assert note.read_text() == "kept by hand\n"


def test_not_a_workspace_is_refused_and_left_alone(tmp_path: Path) -> None:
    outcome = engine.apply(tmp_path)
    assert outcome.code == engine.EXIT_BAD_STATE and "not a Code Agent workspace" in outcome.lines[0]
    assert engine.rollback(tmp_path).code == engine.EXIT_BAD_STATE
    assert list(tmp_path.iterdir()) == []


def test_plan_after_apply_says_nothing_to_do(legacy_ws: Path) -> None:
    from typer.testing import CliRunner

    from migration.cli import migrate_app

    assert engine.apply(legacy_ws).ok
    result = CliRunner().invoke(migrate_app, ["plan", "-w", str(legacy_ws)])
    assert result.exit_code == 0 and "apply would do nothing" in result.output
