"""A tiny run of the campaign's targets (the real ones, on real processes), and its command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from codeagent_app.chaos.runner import Sizes, run_campaign

REPO = Path(__file__).resolve().parents[2]
TINY = Sizes(
    kills=2,
    crash_seconds=10,
    llm_todos=6,
    soak_todos=20,
    soak_legacy_todos=0,
    reload_todos=8,
    reload_edits=3,
    fuzz_examples=5,
    idle_connections=20,
    migrate_checkpoints=6,
)


@pytest.mark.slow
def test_a_tiny_campaign_runs_every_kind_of_target_and_finds_nothing(tmp_path: Path) -> None:
    targets = ["crash-legacy", "crash-migrate", "llm", "soak", "reload", "fuzz", "escapes", "api"]
    results = run_campaign(quick=True, out=tmp_path, targets=targets, seed=3, sizes=TINY, echo=lambda s: None)
    assert results["ok"], json.dumps(
        {k: v.get("problems") or v.get("error") for k, v in results["targets"].items()}
    )
    assert json.loads((tmp_path / "results.json").read_text())["targets"].keys() == set(targets)
    crash = results["targets"]["crash-legacy"]
    assert (
        crash["landed_working"] >= 1 and crash["lost"] == crash["doubled"] == crash["unreadable_state"] == 0
    )
    assert results["targets"]["crash-migrate"]["apply"]["landed_working"] >= 1
    assert results["targets"]["escapes"]["escapes"] == 0
    assert results["targets"]["fuzz"]["examples_total"] >= 5 * 8


def test_the_command_line_refuses_an_unknown_target_and_runs_a_small_one(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "codeagent_app.cli", "chaos"]
    bad = subprocess.run(
        [*cli, "--targets", "everything"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2 and "unknown target 'everything'" in bad.stderr
    out = tmp_path / "out"
    done = subprocess.run(
        [*cli, "--quick", "--targets", "fuzz", "--out", str(out), "--seed", "7"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((out / "results.json").read_text())
    assert (results["campaign"], results["seed"], list(results["targets"])) == ("quick", 7, ["fuzz"])
    assert "report updated" not in done.stdout  # --quick leaves docs/reliability.md alone
