"""A fault at every apply step (raised, or a real SIGKILL) leaves the untouched legacy state or the complete new one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from migration import engine, layout
from migration.verify import verify_workspace
from tests.migration.conftest import state_bytes

REPO = Path(__file__).resolve().parents[2]


def _is_untouched(root: Path, before: dict[str, bytes]) -> bool:
    return state_bytes(root) == before


def _is_complete_new(root: Path, before: dict[str, bytes]) -> bool:
    now = state_bytes(root)
    for rel, data in before.items():
        if not rel.startswith(layout.CHECKPOINTS):
            if now.get(rel) != data:
                return False
            continue
        doc = json.loads(now.get(rel, b"null") or b"null")
        old = json.loads(data)
        if not isinstance(doc, dict) or doc.pop("schema_version", None) != 2 or doc.pop("seq", None) != 1:
            return False
        if doc != old:
            return False
    return {r for r in now if r.startswith(layout.CHECKPOINTS)} == {
        r for r in before if r.startswith(layout.CHECKPOINTS)
    }


def _finished_ok(root: Path, before: dict[str, bytes]) -> None:
    outcome = engine.apply(root)
    assert outcome.ok, outcome.lines
    assert _is_complete_new(root, before)
    assert (root / layout.MARKER).exists()
    assert not (root / layout.JOURNAL).exists() and not (root / layout.STAGING).exists()
    problems, _ = verify_workspace(root)
    assert problems == []


@pytest.mark.parametrize("step", layout.STEPS)
def test_injected_fault_then_rerun(legacy_ws: Path, monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    before = state_bytes(legacy_ws)
    monkeypatch.setenv(layout.FAIL_ENV, step)
    outcome = engine.apply(legacy_ws)
    assert outcome.code == engine.EXIT_FAILED
    assert f"step {step!r}" in "\n".join(outcome.lines)
    if step == "cleanup":  # after the commit point: new and verified, only the tidying is left
        assert _is_complete_new(legacy_ws, before)
    else:
        assert _is_untouched(legacy_ws, before)
        assert not (legacy_ws / layout.JOURNAL).exists()
    monkeypatch.delenv(layout.FAIL_ENV)
    _finished_ok(legacy_ws, before)


@pytest.mark.parametrize("step", layout.STEPS)
def test_killed_process_then_rerun(legacy_ws: Path, step: str) -> None:
    before = state_bytes(legacy_ws)
    env = {**os.environ, layout.KILL_ENV: step}
    code = "import sys; from migration.engine import apply; apply(sys.argv[1])"
    proc = subprocess.run([sys.executable, "-c", code, str(legacy_ws)], cwd=REPO, env=env, check=False)
    assert proc.returncode == -9
    assert _is_untouched(legacy_ws, before) or _is_complete_new(legacy_ws, before)
    _finished_ok(legacy_ws, before)


def test_rollback_killed_after_swap_finishes_on_rerun(legacy_ws: Path) -> None:
    before = state_bytes(legacy_ws)
    assert engine.apply(legacy_ws).ok
    env = {**os.environ, layout.KILL_ENV: "swap"}
    code = "import sys; from migration.engine import rollback; rollback(sys.argv[1])"
    proc = subprocess.run([sys.executable, "-c", code, str(legacy_ws)], cwd=REPO, env=env, check=False)
    assert proc.returncode == -9
    assert engine.rollback(legacy_ws).ok
    assert state_bytes(legacy_ws) == before
