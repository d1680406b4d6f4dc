"""The ``migrate`` sub-app through ``python -m migration``: verbs, options, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from legacy.workspace_lock import hold_workspace
from tests.migration.conftest import tree_hash

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "migration", *args], cwd=REPO, capture_output=True, text=True, check=False
    )


def test_help_lists_the_verbs() -> None:
    out = cli("--help").stdout
    for verb in ("plan", "apply", "verify", "rollback", "status", "next"):
        assert verb in out


def test_plan_apply_verify_status_rollback(legacy_ws: Path) -> None:
    ws = str(legacy_ws)
    before = tree_hash(legacy_ws)
    plan = cli("plan", "--workspace", ws)
    assert plan.returncode == 0 and "dry run: nothing was changed" in plan.stdout
    assert tree_hash(legacy_ws) == before
    with hold_workspace(legacy_ws, "legacy"):
        busy = cli("apply", "-w", ws)
    assert busy.returncode == 3 and "held by" in busy.stderr
    applied = cli("apply", "-w", ws)
    assert applied.returncode == 0, applied.stderr
    assert "migrated: 4 checkpoints converted" in applied.stdout
    assert "nothing to do" in cli("apply", "-w", ws).stdout
    assert cli("verify", "-w", ws).returncode == 0
    info = json.loads(cli("status", "-w", ws, "--json").stdout)
    assert info["format"] == "new (format 2)" and len(info["backups"]) == 1
    rolled = cli("rollback", "-w", ws)
    assert rolled.returncode == 0 and "rolled back" in rolled.stdout
    assert "format:      legacy" in cli("status", "-w", ws).stdout


def test_apply_stops_on_a_corrupt_file_and_quarantine_goes_on(legacy_ws: Path) -> None:
    bad = legacy_ws / ".agent/checkpoints/t-0003.json"
    bad.write_text('{"todo_id": "t-0003", "stage": "edi')
    result = cli("apply", "-w", str(legacy_ws))
    assert result.returncode == 2
    assert ".agent/checkpoints/t-0003.json:1: not valid JSON" in result.stderr
    assert "--quarantine" in result.stderr
    result = cli("apply", "-w", str(legacy_ws), "--quarantine")
    assert result.returncode == 0, result.stderr
    assert "quarantined: .agent/checkpoints/t-0003.json" in result.stdout


def test_next_dry_run_and_gate(tmp_path: Path) -> None:
    flags = tmp_path / "flags.toml"
    dry = cli("next", "-w", str(tmp_path), "--flags", str(flags), "--dry-run")
    assert dry.returncode == 0 and "config: legacy -> shadow: would move (dry run)" in dry.stdout
    assert not flags.exists()
    assert cli("next", "-w", str(tmp_path), "--flags", str(flags)).returncode == 0
    gated = cli("next", "-w", str(tmp_path), "--flags", str(flags))
    assert gated.returncode == 2 and "gate failed" in gated.stderr


def test_every_verb_in_process(legacy_ws: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from migration.cli import migrate_app

    run = CliRunner().invoke
    ws = str(legacy_ws)
    assert run(migrate_app, ["status", "-w", ws]).exit_code == 0
    result = run(migrate_app, ["apply", "-w", ws])
    assert result.exit_code == 0, result.output
    assert "format:      new (format 2)" in run(migrate_app, ["status", "-w", ws]).output
    path = legacy_ws / ".agent/checkpoints/t-0001.json"
    path.write_text(path.read_text().replace('"committed"', '"edited"'))
    failed = run(migrate_app, ["verify", "-w", ws])
    assert failed.exit_code == 1 and "stage" in failed.output
    assert run(migrate_app, ["rollback", "-w", ws]).exit_code == 0
    assert run(migrate_app, ["verify", "-w", ws]).exit_code == 0
    flags = tmp_path / "flags.toml"
    flags.write_text("version = 1\nloop = 'sideways'\n")
    bad = run(migrate_app, ["next", "-w", ws, "--flags", str(flags)])
    assert bad.exit_code == 2 and "loop" in bad.output


def test_plan_reports_problems_with_exit_2(legacy_ws: Path) -> None:
    from typer.testing import CliRunner

    from migration.cli import migrate_app

    (legacy_ws / ".agent/status.json").write_text('{"version": 1, "agent": {}, "todos": {}, "x": 1}')
    before = tree_hash(legacy_ws)
    result = CliRunner().invoke(migrate_app, ["plan", "-w", str(legacy_ws)])
    assert result.exit_code == 2
    assert ".agent/status.json:1: x: Extra inputs are not permitted" in result.output
    assert tree_hash(legacy_ws) == before
