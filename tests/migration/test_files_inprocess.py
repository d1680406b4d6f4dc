"""The migration's file-level pieces in this process: status reports, markers and journals, verify, layout.

No database: what ``migrate status``, ``verify`` and ``next`` say about a
workspace's files in each state a run (or a crash) can leave them in, on the
sample workspace (3 todos done, the 4th halted: legacy checkpoints).
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from codeagent.errors import StateFileError
from codeagent.models import dump_json
from codeagent.state_v2 import CheckpointV2
from feature_flags import COMPONENTS, ComponentChange, Mode, update_flags
from migration import engine, layout, verify
from migration.cli import migrate_app
from migration.report import render_status, workspace_status
from migration.store import (
    read_store_journal,
    read_store_marker,
    same_database,
    state_elsewhere,
    storable_dsn,
)
from migration.survey import survey


def _status(root: Path) -> tuple[str, list[str]]:
    info = workspace_status(root)
    return info["format"], render_status(info)


# ----------------------------------------------------------------- migrate status


def test_status_counts_checkpoint_formats_and_names_each_interrupted_state(legacy_ws: Path) -> None:
    checkpoints = legacy_ws / layout.CHECKPOINTS
    (checkpoints / ".t-0009.json.tmp.json").write_text("half written")  # a temp file: not counted
    (checkpoints / "t-0007.json").write_text("{torn")
    fmt, lines = _status(legacy_ws)
    assert fmt == "legacy"
    assert "checkpoints: 4 legacy, 0 v2, 1 unreadable" in lines
    assert "state:       in the workspace's files (.agent/)" in lines
    (checkpoints / "t-0007.json").unlink()

    record = CheckpointV2.model_validate({**json.loads((checkpoints / "t-0001.json").read_text()), "seq": 1})
    (checkpoints / "t-0001.json").write_text(dump_json(record))  # the new core wrote one checkpoint
    assert _status(legacy_ws)[0] == "legacy, with v2 checkpoints written by the new core (run apply)"
    (legacy_ws / layout.MARKER).write_text(
        '{"format": 2, "migrated_at": "2024-01-01T00:00:00Z", "backup": "b"}'
    )
    fmt, lines = _status(legacy_ws)
    assert fmt == "new (format 2), but with legacy checkpoints"
    assert "migrated at: 2024-01-01T00:00:00Z" in lines and "backup:      b" in lines

    (legacy_ws / layout.JOURNAL).write_text("{}")
    assert _status(legacy_ws)[0] == "interrupted (run apply or rollback again to finish)"
    (legacy_ws / layout.STORE).write_text("[]")
    fmt, lines = _status(legacy_ws)
    assert fmt == "unknown: .agent/store.json: not a JSON object"
    assert "state:       unknown: .agent/store.json: not a JSON object" in lines
    (legacy_ws / layout.STORE_JOURNAL).write_text("{}")
    assert _status(legacy_ws)[0].startswith("interrupted move between files and PostgreSQL")


def test_status_flags_a_damaged_backup_and_quarantined_files(legacy_ws: Path) -> None:
    (legacy_ws / layout.CHECKPOINTS / "t-0003.json").write_text('{"todo_id": "t-0003", "stage": "edi')
    outcome = engine.apply(legacy_ws, quarantine=True)
    assert outcome.ok, outcome.lines
    info = workspace_status(legacy_ws)
    [backup] = info["backups"]
    assert backup["quarantined"] == [".agent/checkpoints/t-0003.json"] and backup["intact"]
    assert any(
        line.endswith(f"apply  {backup['files']} files, 1 quarantined") for line in render_status(info)
    )
    (legacy_ws / layout.BACKUPS / backup["name"] / layout.TODOS).write_text("tampered")
    lines = render_status(workspace_status(legacy_ws))
    assert any(line.endswith("1 quarantined (DAMAGED: checksums differ)") for line in lines)
    result = CliRunner().invoke(migrate_app, ["status", "-w", str(legacy_ws), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["backups"][0]["intact"] is False


# ----------------------------------------------------------------- .agent/store.json and the journal


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{torn", "unreadable"),
        ('["a list"]', "not a JSON object"),
        ('{"store": "postgresql", "workspace_id": "w"}', "dsn: missing or empty"),
        ('{"store": "postgresql", "dsn": "", "workspace_id": "w"}', "dsn: missing or empty"),
        ('{"store": "mysql", "dsn": "x", "workspace_id": "w"}', "store: unknown store 'mysql'"),
    ],
)
def test_a_bad_store_marker_is_refused_and_keeps_loops_off_the_files(
    tmp_path: Path, content: str, message: str
) -> None:
    (tmp_path / ".agent").mkdir()
    (tmp_path / layout.STORE).write_text(content)
    with pytest.raises(StateFileError, match=message):
        read_store_marker(tmp_path)
    reason = state_elsewhere(tmp_path)
    assert reason is not None and message in reason
    assert reason.endswith(f"its state may live in PostgreSQL: see `codeagent migrate status -w {tmp_path}`")


def test_a_store_marker_without_times_still_reads(tmp_path: Path) -> None:
    (tmp_path / ".agent").mkdir()
    (tmp_path / layout.STORE).write_text('{"store": "postgresql", "dsn": "host=db", "workspace_id": "w"}')
    marker = read_store_marker(tmp_path)
    assert marker is not None and (marker.moved_at, marker.backup) == ("", "")
    assert "since ?:" in (state_elsewhere(tmp_path) or "")


@pytest.mark.parametrize("content", ["{torn", "[1, 2]", '"op"'])
def test_an_unreadable_journal_is_an_unknown_move(tmp_path: Path, content: str) -> None:
    (tmp_path / ".agent").mkdir()
    assert read_store_journal(tmp_path) is None
    (tmp_path / layout.STORE_JOURNAL).write_text(content)
    assert read_store_journal(tmp_path) == {"op": "unknown"}
    assert "an interrupted move between its files and PostgreSQL is pending" in (
        state_elsewhere(tmp_path) or ""
    )


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("postgresql://agent@db:5432/fleet", "postgresql://agent@db:5432/fleet"),  # no password: as given
        ("postgresql://agent:s3cret@db:5432/fleet", "user=agent dbname=fleet host=db port=5432"),
        ("host=db password='s 3cret' dbname=fleet", "host=db dbname=fleet"),
    ],
)
def test_the_marker_keeps_a_dsn_without_its_password(given: str, kept: str) -> None:
    stored = storable_dsn(given)
    assert sorted(stored.split()) == sorted(kept.split()) and "3cret" not in stored
    assert same_database(given, stored)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("postgresql://agent@db/fleet", "host=db port=5432 user=agent dbname=fleet", True),
        ("postgresql://agent:x@db:5432/fleet", "postgresql://agent:y@db/fleet", True),
        ("postgresql://agent@db/fleet", "postgresql://agent@db/other", False),
        ("postgresql://agent@db:5433/fleet", "postgresql://agent@db/fleet", False),
        ("not a dsn", "not a dsn", True),  # unparsable: only the very same text
        ("not a dsn", "not  a dsn", False),
    ],
)
def test_same_database_ignores_spelling_and_passwords(a: str, b: str, same: bool) -> None:
    assert same_database(a, b) is same


# ----------------------------------------------------------------- verify


def test_diff_names_every_path_with_both_sides() -> None:
    expected = {"a": 1, "gone": True, "todos": [{"files": ["x"]}, 2], "n": [1, 2]}
    actual = {"a": 1, "new": None, "todos": [{"files": ["y"]}, 2], "n": [1]}
    assert verify.diff(expected, actual) == [
        "gone: missing in the new reader's view",
        "n: legacy saw [1, 2], new reader sees [1]",
        "new: not seen by the legacy reader",
        "todos[0].files[0]: legacy saw 'x', new reader sees 'y'",
    ]
    assert verify.diff(1, 2) == ["(document): legacy saw 1, new reader sees 2"]
    assert verify.diff({"a": [1]}, {"a": [1]}) == []


def test_compare_names_each_checkpoint_the_new_readers_do_not_see_alike(legacy_ws: Path) -> None:
    expected = survey(legacy_ws)
    assert verify.compare(expected, legacy_ws, require_v2=False) == []
    assert verify.compare(expected, legacy_ws, require_v2=True) == [
        f".agent/checkpoints/t-000{n}.json: schema_version: still in the legacy format" for n in (1, 2, 3, 4)
    ]
    checkpoints = legacy_ws / layout.CHECKPOINTS
    (checkpoints / "t-0001.json").unlink()
    (checkpoints / "t-0002.json").write_text("{torn")
    doc = json.loads((checkpoints / "t-0003.json").read_text())
    (checkpoints / "t-0003.json").write_text(json.dumps({**doc, "stage": "started"}))
    problems = verify.compare(expected, legacy_ws, require_v2=False)
    assert problems[0] == ".agent/checkpoints/t-0001.json: missing"
    assert problems[1].startswith("new reader failed: .agent/checkpoints/t-0002.json")
    assert problems[2:] == [
        ".agent/checkpoints/t-0003.json: stage: legacy saw 'committed', new reader sees 'started'"
    ]

    expected.config = None  # a workspace without a config file: nothing to compare there
    (legacy_ws / layout.TODOS).write_text('{"version": 1, "todos": [{"id": "t-0001"}]}')
    [failed] = verify.compare(expected, legacy_ws, require_v2=False)
    assert failed.startswith("new reader failed: .agent/todos.json")


def test_verify_workspace_refuses_state_it_cannot_judge(legacy_ws: Path) -> None:
    (legacy_ws / layout.JOURNAL).write_text("{}")
    problems, _notes = verify.verify_workspace(legacy_ws)
    assert problems == [
        ".agent/migrate-journal.json: an interrupted migration is pending; run apply (or rollback) again"
    ]
    (legacy_ws / layout.JOURNAL).unlink()
    (legacy_ws / layout.STORE).write_text('{"store": "postgresql", "dsn": "host=db", "workspace_id": "w"}')
    problems, _notes = verify.verify_workspace(legacy_ws)
    assert len(problems) == 1 and problems[0].startswith(
        "not verified as files: its state lives in PostgreSQL"
    )


def test_verify_after_apply_compares_with_the_backup_until_the_loop_moves_on(legacy_ws: Path) -> None:
    assert engine.apply(legacy_ws).ok
    problems, notes = verify.verify_workspace(legacy_ws)
    assert problems == [] and any(n.startswith("compared with backup ") for n in notes)
    status = legacy_ws / layout.STATUS
    doc = json.loads(status.read_text())
    doc["agent"]["processed"] = doc["agent"].get("processed", 0) + 1
    status.write_text(json.dumps(doc))
    problems, notes = verify.verify_workspace(legacy_ws)
    assert problems == [] and any(n.startswith("the loop has made progress since backup") for n in notes)


# ----------------------------------------------------------------- migrate next


def test_next_moves_one_step_then_waits_for_evidence(tmp_path: Path) -> None:
    flags = tmp_path / "flags.toml"
    run = CliRunner().invoke
    dry = run(migrate_app, ["next", "-w", str(tmp_path), "--flags", str(flags), "--dry-run"])
    assert (
        dry.exit_code == 0 and dry.stdout.splitlines()[0] == "config: legacy -> shadow: would move (dry run)"
    )
    assert not flags.exists()
    moved = run(migrate_app, ["next", "-w", str(tmp_path), "--flags", str(flags)])
    assert moved.exit_code == 0 and moved.stdout.splitlines()[0] == "config: legacy -> shadow: moved"
    gated = run(migrate_app, ["next", "-w", str(tmp_path), "--flags", str(flags)])
    assert gated.exit_code == 2 and gated.stderr.splitlines()[0] == "config: shadow -> canary 10: not taken"
    assert "gate failed: only 0 calls on the new path (need at least 20)" in gated.stderr

    update_flags(
        flags,
        components={name: ComponentChange(mode=Mode.NEW) for name in COMPONENTS},
        source="test",
        reason="everything on the new path",
    )
    done = run(migrate_app, ["next", "-w", str(tmp_path), "--flags", str(flags)])
    assert done.exit_code == 0 and done.stdout.strip() == "every component is already on the new path"


# ----------------------------------------------------------------- layout


def test_atomic_write_leaves_no_temp_file_when_it_fails(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "dir"
    target.mkdir(parents=True)
    with pytest.raises(OSError):
        layout.atomic_write(target, "cannot replace a directory")
    assert [p.name for p in target.parent.iterdir()] == ["dir"]  # the temp file was removed
    layout.atomic_write(tmp_path / "new" / "file.json", b"{}")  # parents are made
    assert (tmp_path / "new" / "file.json").read_bytes() == b"{}"
    assert layout.dir_hashes(tmp_path / "missing") == {}
    assert layout.dir_hashes(tmp_path / "new") == {
        "file.json": layout.sha256_file(tmp_path / "new" / "file.json")
    }


def test_exchange_dirs_swaps_across_parents_and_reports_what_fails(tmp_path: Path) -> None:
    a, b = tmp_path / "one" / "a", tmp_path / "two" / "b"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    (a / "from-a").write_text("a")
    (b / "from-b").write_text("b")
    layout.exchange_dirs(a, b)
    assert [p.name for p in a.iterdir()] == ["from-b"] and [p.name for p in b.iterdir()] == ["from-a"]
    with pytest.raises(OSError) as caught:
        layout.exchange_dirs(a, tmp_path / "absent")
    assert caught.value.errno == errno.ENOENT
    assert [p.name for p in a.iterdir()] == ["from-b"]  # nothing moved


def test_an_injected_fault_fails_at_its_step_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(layout.FAIL_ENV, "pg-copy")
    layout.fault_point("pg-verify")
    with pytest.raises(layout.InjectedFault, match="'pg-copy'"):
        layout.fault_point("pg-copy")
