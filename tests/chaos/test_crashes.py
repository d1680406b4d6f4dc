"""The crash targets' kill schedule: every life gets a chance to finish something."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from codeagent_app.chaos.crashes import CrashRun, loop_targets


def _run(tmp_path: Path, target: str = "async") -> CrashRun:
    return CrashRun(
        loop_targets()[target],
        "http://127.0.0.1:9/v1",
        tmp_path,
        random.Random(0),
        kills=1,
        deadline=time.monotonic() + 60,
    )


def test_a_life_with_few_todos_left_may_live_past_its_first_answer(tmp_path: Path) -> None:
    """Chaos finding in the harness (crash-async, 1,000 kills): the horizon was remaining x per-todo cost,
    0.14 s for 4 todos, while a fresh life needs 0.2-0.3 s to its first answer (imports, connection): two
    rounds had 40 lives in a row killed before finishing anything."""
    run = _run(tmp_path)
    run.first_done_s, run.per_todo_s = 0.3, 0.034
    assert run.kill_horizon(1) == pytest.approx(0.3)
    assert run.kill_horizon(4) == pytest.approx(0.3 + 3 * 0.034)
    # Never shorter than the first answer, never longer than the cap, never zero.
    assert run.kill_horizon(0) == pytest.approx(0.3)
    assert run.kill_horizon(10_000) == run.max_horizon
    run.first_done_s = 0.0
    assert run.kill_horizon(1) == 0.05


def test_with_workspaces_in_parallel_the_rest_of_the_run_is_shorter(tmp_path: Path) -> None:
    run = _run(tmp_path, "worker")
    run.first_done_s, run.per_todo_s = 0.2, 0.04
    parallel = max(1, run.target.workspaces // 2)
    assert run.kill_horizon(11) == pytest.approx(0.2 + 10 * 0.04 / parallel)
