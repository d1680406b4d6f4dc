"""Corrupted or partial legacy files: reported by file and field; nothing changes; --quarantine sets them aside."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from migration import engine, layout
from migration.backup import list_backups
from migration.survey import survey
from tests.migration.conftest import tree_hash


def _truncate(rel: str) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        path = root / rel
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])

    return damage


def _add_field(rel: str, key: str) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        path = root / rel
        doc = json.loads(path.read_text())
        doc[key] = 1
        path.write_text(json.dumps(doc, indent=2))

    return damage


def _orphan(root: Path) -> None:
    doc = json.loads((root / ".agent/checkpoints/t-0001.json").read_text())
    doc["todo_id"] = "t-0999"
    (root / ".agent/checkpoints/t-0999.json").write_text(json.dumps(doc, indent=2))


def _bad_config(root: Path) -> None:
    (root / ".agent/config.json").write_text('{\n  "llm": {"timeout": -1}\n}\n')


CP = ".agent/checkpoints/t-0002.json"
# name, damage, file, field (None: no field for a syntax error), quarantinable
CORPUS = [
    ("truncated todos", _truncate(".agent/todos.json"), ".agent/todos.json", None, False),
    (
        "unknown field in status",
        _add_field(".agent/status.json", "colour"),
        ".agent/status.json",
        "colour",
        False,
    ),
    ("bad config value", _bad_config, ".agent/config.json", "llm.timeout", False),
    ("truncated checkpoint", _truncate(CP), CP, None, True),
    ("unknown field in checkpoint", _add_field(CP, "extra"), CP, "extra", True),
    ("checkpoint of no todo", _orphan, ".agent/checkpoints/t-0999.json", "todo_id", True),
]


@pytest.mark.parametrize(
    ("name", "damage", "rel", "field", "quarantinable"), CORPUS, ids=[c[0] for c in CORPUS]
)
def test_reported_by_file_and_field_and_nothing_changes(
    legacy_ws: Path,
    name: str,
    damage: Callable[[Path], None],
    rel: str,
    field: str | None,
    quarantinable: bool,
) -> None:
    damage(legacy_ws)
    found = survey(legacy_ws)
    [problem] = [p for p in found.problems if p.file == rel]
    assert problem.field == field
    assert problem.quarantinable is quarantinable
    before = tree_hash(legacy_ws)
    outcome = engine.apply(legacy_ws)
    assert outcome.code == engine.EXIT_BAD_STATE
    text = "\n".join(outcome.lines)
    assert "stopped before changing anything" in text and rel in text
    if field:
        assert field in text
    assert tree_hash(legacy_ws) == before


@pytest.mark.parametrize(
    ("name", "damage", "rel", "field", "quarantinable"), CORPUS, ids=[c[0] for c in CORPUS]
)
def test_quarantine_moves_bad_checkpoints_aside(
    legacy_ws: Path,
    name: str,
    damage: Callable[[Path], None],
    rel: str,
    field: str | None,
    quarantinable: bool,
) -> None:
    damage(legacy_ws)
    bad = (legacy_ws / rel).read_bytes()
    before = tree_hash(legacy_ws)
    outcome = engine.apply(legacy_ws, quarantine=True)
    if not quarantinable:  # moving the todo list, status or config aside would lose work: still refused
        assert outcome.code == engine.EXIT_BAD_STATE
        assert tree_hash(legacy_ws) == before
        return
    assert outcome.ok, outcome.lines
    assert not (legacy_ws / rel).exists()
    [backup] = list_backups(legacy_ws)
    assert backup.quarantined == [rel]
    assert (backup.path / rel).read_bytes() == bad
    assert (legacy_ws / layout.MARKER).exists()
    assert engine.apply(legacy_ws).ok  # the rest migrated: a rerun has nothing to do
