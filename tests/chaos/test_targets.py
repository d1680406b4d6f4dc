"""The campaign's command line.

Every target runs for real (processes, signals, mounts) in `.ci/run`'s `codeagent chaos --quick`, which fails
CI on any finding; a second, smaller copy of that run here only made the suite slower.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


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
