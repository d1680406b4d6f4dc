"""``next``: one component, one step, only when its shadow mismatches and error rate allow it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from feature_flags import Mode, read_entries, read_flags
from feature_flags.health import ComponentHealth, health_path, render_health
from migration.rollout import plan_next, take_next


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    (tmp_path / ".agent").mkdir()
    return tmp_path


def _flags(ws: Path) -> Path:
    return ws / ".agent/flags.toml"


def _health(ws: Path, **components: ComponentHealth) -> None:
    health_path(_flags(ws)).write_text(render_health(dict(components)))


def test_ladder_with_gates(ws: Path) -> None:
    flags = _flags(ws)
    step = take_next(ws, flags)  # no flag file yet: everything legacy
    assert (step.component, step.current, step.target, step.allowed) == ("config", "legacy", "shadow", True)
    assert read_flags(flags).flag("config").mode is Mode.SHADOW
    assert read_entries(flags)[-1].source == "migrate"

    step = take_next(ws, flags)
    assert not step.allowed
    assert any("only 0 calls" in r for r in step.reasons)

    _health(ws, config=ComponentHealth(calls=25, errors=3))
    step = take_next(ws, flags)
    assert not step.allowed and any("error rate 0.120" in r for r in step.reasons)

    _health(ws, config=ComponentHealth(calls=25, errors=0))
    for target in ("canary 10", "canary 50", "new"):
        step = take_next(ws, flags)
        assert step.allowed and step.target == target, step.reasons
    assert read_flags(flags).flag("config").mode is Mode.NEW
    step = plan_next(ws, flags)
    assert (step.component, step.target) == ("todos", "shadow")


def test_mismatch_since_the_last_step_blocks(ws: Path) -> None:
    flags = _flags(ws)
    take_next(ws, flags)
    _health(ws, config=ComponentHealth(calls=100, errors=0))
    record = {"component": "config", "operation": "load", "time": "9999-01-01T00:00:00+00:00"}
    (ws / ".agent/shadow-mismatches.jsonl").write_text(json.dumps(record) + "\n")
    step = take_next(ws, flags)
    assert not step.allowed and any("1 shadow mismatch" in r for r in step.reasons)
    old = {**record, "time": "2000-01-01T00:00:00+00:00"}  # before config entered shadow: not counted
    (ws / ".agent/shadow-mismatches.jsonl").write_text(json.dumps(old) + "\n")
    assert take_next(ws, flags).allowed


def test_dry_run_changes_nothing(ws: Path) -> None:
    flags = _flags(ws)
    take_next(ws, flags)
    text = flags.read_text()
    _health(ws, config=ComponentHealth(calls=100, errors=0))
    step = take_next(ws, flags, dry_run=True)
    assert step.allowed and step.target == "canary 10"
    assert flags.read_text() == text
