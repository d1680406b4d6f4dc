"""The campaign's invariant checkers, its target list and its report, on hand-made workspaces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codeagent.models import StatusFile, TodoState, TodoStatus, dump_json
from codeagent_app.chaos import checks, report, runner
from codeagent_app.chaos.llm_faults import reason_of
from codeagent_app.chaos.migrate_kills import classify
from codeagent_app.chaos.soak import bounded
from codeagent_app.chaos.workload import Workload, git, make_workspace


@pytest.fixture
def ws(tmp_path: Path) -> tuple[Path, Workload]:
    load = Workload(3)
    root = tmp_path / "ws"
    make_workspace(root, [load])
    return root, load


def _done(root: Path, load: Workload, *, commit_twice: str | None = None) -> None:
    """Finish the workload by hand: contents, one commit per todo (one twice, if asked), status done."""
    status = StatusFile()
    for i in load.indexes():
        (root / load.path(i)).write_text(load.after(i))
        git(root, "add", load.path(i))
        todo = load.todo_id(i)
        for _ in range(2 if todo == commit_twice else 1):
            git(root, "commit", "-q", "--allow-empty", "-m", f"todo {i}\n\nTodo-Id: {todo}")
        sha = git(root, "rev-parse", "HEAD").strip()
        status.todos[todo] = TodoState(status=TodoStatus.DONE, commit=sha, attempts=1)
    (root / ".agent" / "status.json").write_text(dump_json(status))


def test_a_fresh_workspace_passes_the_quick_check_and_fails_the_final_one(ws: tuple[Path, Workload]) -> None:
    root, load = ws
    assert checks.quick_check(root, [load]) == []
    final = checks.final_check(root, [load])
    assert any("status.json" in p for p in final)  # nothing ran yet: no status document


def test_a_finished_workspace_passes_every_check(ws: tuple[Path, Workload]) -> None:
    root, load = ws
    _done(root, load)
    assert checks.quick_check(root, [load]) == []
    assert checks.final_check(root, [load]) == []
    assert checks.status_counts(root) == {"done": 3}


def test_a_todo_committed_twice_is_found(ws: tuple[Path, Workload]) -> None:
    root, load = ws
    _done(root, load, commit_twice="t-00002")
    assert checks.doubled(root) == ["t-00002"]
    assert "t-00002: committed more than once" in checks.quick_check(root, [load])
    assert any("t-00002: 2 commits" in p for p in checks.final_check(root, [load]))


def test_a_doubled_line_a_lost_todo_and_a_torn_state_file_are_found(ws: tuple[Path, Workload]) -> None:
    root, load = ws
    _done(root, load)
    (root / "f1.txt").write_text("file 1\nline 1\nline 1\n")
    status = StatusFile.model_validate_json((root / ".agent/status.json").read_text())
    del status.todos["t-00003"]
    (root / ".agent/status.json").write_text(dump_json(status))
    final = checks.final_check(root, [load])
    assert any(p.startswith("f1.txt: holds") for p in final)
    assert "t-00003: lost (no status)" in final
    (root / ".agent/checkpoints").mkdir()
    (root / ".agent/checkpoints/t-00001.json").write_text('{"todo_id": "t-00001", "stage": ')
    assert any(p.startswith(".agent/checkpoints/t-00001.json") for p in checks.state_file_problems(root))
    (root / ".agent/checkpoints/.t-00001.json.0123abcd.tmp").write_text("half")
    assert checks.leftover_temp_files(root) == [".agent/checkpoints/.t-00001.json.0123abcd.tmp"]


def test_a_failed_todo_may_end_failed_only_with_a_reason_and_its_file_untouched(
    ws: tuple[Path, Workload],
) -> None:
    root, load = ws
    _done(root, load)
    status = StatusFile.model_validate_json((root / ".agent/status.json").read_text())
    status.todos["t-00001"] = TodoState(status=TodoStatus.FAILED, error=None, attempts=1)
    (root / ".agent/status.json").write_text(dump_json(status))
    problems = checks.final_check(root, [load], allow_failed=True)
    assert "t-00001: failed without a reason" in problems
    assert any(p.startswith("f0.txt: holds") for p in problems)  # its edit is there, yet it failed


def test_the_migration_state_is_classified_before_after_or_mix() -> None:
    legacy = {
        ".agent/todos.json": b"{}",
        ".agent/checkpoints/a.json": json.dumps({"todo_id": "a", "stage": "started"}).encode(),
        ".agent/checkpoints/b.json": json.dumps({"todo_id": "b", "stage": "edited"}).encode(),
    }

    def v2(rel: str) -> bytes:
        return json.dumps({"schema_version": 2, "seq": 1, **json.loads(legacy[rel])}).encode()

    after = {
        **legacy,
        ".agent/checkpoints/a.json": v2(".agent/checkpoints/a.json"),
        ".agent/checkpoints/b.json": v2(".agent/checkpoints/b.json"),
    }
    assert classify(legacy, legacy) == "before"
    assert classify(after, legacy) == "after"
    assert (
        classify({**legacy, ".agent/checkpoints/a.json": after[".agent/checkpoints/a.json"]}, legacy) == "mix"
    )
    assert classify({**after, ".agent/todos.json": b"[]"}, legacy) == "mix"
    assert classify({k: v for k, v in legacy.items() if not k.endswith("b.json")}, legacy) == "mix"


def test_small_helpers() -> None:
    assert (
        reason_of("edit block 1 for f12.txt: missing '>>>>>>> REPLACE'")
        == "edit block # for # missing '>>>>>>> REPLACE'"
    )
    flat = {
        "rss_kb": {"first_half_max": 100, "second_half_max": 110},
        "fds": {"first_half_median": 40, "second_half_median": 45},
    }
    assert bounded(flat) == []
    grown = {
        "rss_kb": {"first_half_max": 100, "second_half_max": 200},
        "fds": {"first_half_median": 40, "second_half_median": 90},
    }
    assert len(bounded(grown)) == 2
    assert runner.expand(["crash", "fuzz"]) == [
        "crash-legacy",
        "crash-async",
        "crash-worker",
        "crash-migrate",
        "fuzz",
    ]
    assert runner.expand(None) == list(runner.TARGETS)
    with pytest.raises(ValueError, match="unknown target"):
        runner.expand(["everything"])


def test_the_report_merges_runs_and_renders_every_section(tmp_path: Path) -> None:
    run = {
        "campaign": "full",
        "started_at": "2026-01-01T00:00:00+00:00",
        "commit": "abc",
        "dirty": False,
        "machine": {"usable_cores": 2, "python": "3.11"},
        "load_during_run": {"mean": 1.0, "max": 2.0},
        "seconds": 10,
        "ok": True,
        "targets": {
            "crash-legacy": {
                "ok": True,
                "landed": 5,
                "landed_working": 4,
                "kills_planned": 5,
                "todos": 80,
                "unreadable_state": 0,
                "lost": 0,
                "doubled": 0,
                "wrong_content": 0,
            }
        },
    }
    written = report.update_report(run, tmp_path)
    second = {
        **run,
        "targets": {"fuzz": {"ok": True, "examples": {"config": 10}, "examples_total": 10, "failures": {}}},
    }
    report.update_report(second, tmp_path)
    record = json.loads((tmp_path / "reliability.json").read_text())
    assert sorted(record["targets"]) == ["crash-legacy", "fuzz"] and len(record["runs"]) == 2
    page = written[0].read_text()
    for heading in (
        "## 1. Crashes",
        "## 2. LLM faults",
        "## 3. Disk",
        "## 4. Hot reloads",
        "## 5. Hostile input",
        "## 6. The API",
        "## Defects the campaign found",
    ):
        assert heading in page
    assert "4 SIGKILLs while it worked" in page
