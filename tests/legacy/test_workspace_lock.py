"""The workspace lock: one holder at a time, and the holder tidies what crashed writers left."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from legacy.workspace_lock import WorkspaceBusy, hold_workspace, sweep_stale_temps


def test_a_second_holder_is_refused_and_the_first_is_named(workspace: Path) -> None:
    second = hold_workspace(workspace, "async")
    with hold_workspace(workspace, "legacy"), pytest.raises(WorkspaceBusy, match=f"pid {os.getpid()}"):
        second.__enter__()
    with hold_workspace(workspace, "async"):
        pass


def test_taking_the_workspace_removes_temp_files_of_interrupted_state_writes(workspace: Path) -> None:
    """Chaos campaign finding: every SIGKILL mid-write left a ``.status.json.xxxxxxxx.tmp`` for good."""
    state = workspace / ".agent"
    (state / "checkpoints").mkdir(parents=True)
    left = [
        state / ".status.json.0123abcd.tmp",
        state / ".todos.json.89abcdef.tmp",
        state / "checkpoints" / ".t-0001.json.00ff00ff.tmp",
    ]
    kept = [
        state / "status.json",
        state / ".flags.toml.0123abcd.tmp",  # not a file this sweep knows the writers of
        state / ".todos.json.chaos.tmp",
        state / "checkpoints" / "t-0001.json",
    ]
    for path in left + kept:
        path.write_text("x")
    with hold_workspace(workspace, "legacy"):
        assert [p.exists() for p in left] == [False] * len(left)
        assert [p.exists() for p in kept] == [True] * len(kept)
    assert sweep_stale_temps(workspace) == []


def test_the_sweep_needs_no_state_directory_contents(workspace: Path) -> None:
    (workspace / ".agent").mkdir()
    assert sweep_stale_temps(workspace) == []
