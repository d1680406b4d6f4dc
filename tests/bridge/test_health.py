"""Automatic rollback: thresholds over a window, inconclusive below the minimum, re-armed on change."""

from __future__ import annotations

from pathlib import Path

from bridge.health import ERROR, MISMATCH, OK, HealthMonitor, RollbackVerdict
from feature_flags import ComponentChange, FlagStore, Mode, update_flags

FLAGS = """\
version = 1
loop = "legacy"
[rollback]
max_error_rate = 0.2
max_mismatch_rate = 0.0
min_samples = 10
window = 20
[components.llm]
mode = "new"
[components.git]
mode = "shadow"
"""


def _monitor(tmp_path: Path) -> tuple[HealthMonitor, list[RollbackVerdict], FlagStore]:
    path = tmp_path / "flags.toml"
    path.write_text(FLAGS)
    store = FlagStore(path)
    fired: list[RollbackVerdict] = []
    return HealthMonitor(store, fired.append), fired, store


def test_too_few_samples_is_inconclusive(tmp_path: Path) -> None:
    monitor, fired, _ = _monitor(tmp_path)
    for _ in range(9):
        monitor.record("llm", ERROR)
    assert fired == []
    assert monitor.snapshot()["llm"].errors == 9


def test_error_rate_over_threshold_rolls_back_once(tmp_path: Path) -> None:
    monitor, fired, _ = _monitor(tmp_path)
    for i in range(30):
        monitor.record("llm", ERROR if i % 3 == 0 else OK)  # 33% errors
    assert len(fired) == 1
    verdict = fired[0]
    assert verdict.component == "llm"
    assert verdict.samples == 10
    assert verdict.error_rate > 0.2
    assert "error rate" in verdict.reason
    assert monitor.snapshot()["llm"].rollback.startswith("rolled back")
    assert monitor.tripped("llm") == verdict


def test_errors_under_threshold_do_nothing(tmp_path: Path) -> None:
    monitor, fired, _ = _monitor(tmp_path)
    for i in range(100):
        monitor.record("llm", ERROR if i % 10 == 0 else OK)  # 10% < 20%
    assert fired == []


def test_any_mismatch_over_zero_threshold_rolls_back_only_that_component(tmp_path: Path) -> None:
    monitor, fired, _ = _monitor(tmp_path)
    for _ in range(12):
        monitor.record("llm", OK)
    for i in range(10):
        monitor.record("git", MISMATCH if i == 9 else OK)
    assert [v.component for v in fired] == ["git"]
    assert "mismatch rate" in fired[0].reason


def test_mode_change_rearms_with_an_empty_window(tmp_path: Path) -> None:
    monitor, fired, store = _monitor(tmp_path)
    for _ in range(10):
        monitor.record("llm", ERROR)
    assert len(fired) == 1
    update_flags(
        store.path, components={"llm": ComponentChange(mode=Mode.LEGACY)}, source="auto-rollback", reason="x"
    )
    store.reload()
    update_flags(store.path, components={"llm": ComponentChange(mode=Mode.NEW)}, source="cli", reason="again")
    store.reload()
    assert monitor.tripped("llm") is None
    assert monitor.snapshot()["llm"].rollback == "armed"
    for _ in range(9):
        monitor.record("llm", ERROR)
    assert len(fired) == 1  # window restarted: 9 < min_samples
    monitor.record("llm", ERROR)
    assert len(fired) == 2
