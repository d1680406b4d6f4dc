"""``next``: move one component one step along the staged rollout, when its evidence allows it.

Steps: legacy -> shadow -> canary 10 -> canary 50 -> new; components in the
order config, todos, status, checkpoints, files, git, llm. The component that
moves is the first one not yet on ``new``. Entering ``shadow`` needs no
evidence (nothing runs on the new path before it); every later step needs,
for that component, no shadow mismatch recorded since it entered its current
mode, and an error rate under ``rollback.max_error_rate`` over at least
``rollback.min_samples`` calls on the new path (from the health snapshot the
running agent writes beside the flag file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from feature_flags import (
    ComponentChange,
    FlagSet,
    Mode,
    default_flags,
    read_entries,
    read_flags,
    update_flags,
)
from feature_flags.health import read_health
from feature_flags.mismatches import read_mismatches
from migration import layout

ORDER: tuple[str, ...] = ("config", "todos", "status", "checkpoints", "files", "git", "llm")
STAGES: tuple[tuple[Mode, float], ...] = (
    (Mode.LEGACY, 0),
    (Mode.SHADOW, 0),
    (Mode.CANARY, 10),
    (Mode.CANARY, 50),
    (Mode.NEW, 0),
)


@dataclass(frozen=True, slots=True)
class Step:
    """The next step (or why there is none): component, from, to, and the gate results."""

    component: str | None
    current: str
    target: str
    allowed: bool
    reasons: list[str]
    mode: Mode | None = None
    percent: float = 0


def describe(mode: Mode, percent: float) -> str:
    """``canary 10`` / ``shadow`` / ..."""
    return f"canary {percent:g}" if mode is Mode.CANARY else mode.value


def stage_index(flags: FlagSet, component: str) -> int:
    """Where a component stands on the ladder (a canary between rungs counts as the rung below)."""
    flag = flags.flag(component)
    if flag.mode is Mode.LEGACY:
        return 0
    if flag.mode is Mode.SHADOW:
        return 1
    if flag.mode is Mode.NEW:
        return 4
    return 3 if flag.percent >= 50 else 2 if flag.percent >= 10 else 1


def _since(flags_path: Path, component: str) -> str:
    """When the component last changed mode or percent (ISO time; empty when never recorded)."""
    last = ""
    for entry in read_entries(flags_path):
        if any(c.key.startswith(f"components.{component}.") for c in entry.changes):
            last = entry.time
    return last


def _mismatches(workspace: Path, component: str, since: str) -> int:
    try:
        records = read_mismatches(workspace / layout.MISMATCHES)
    except ValueError:  # a torn line: count what we can read, conservatively as a mismatch
        return 1
    return sum(1 for r in records if r.get("component") == component and str(r.get("time", "")) >= since)


def plan_next(workspace: Path, flags_path: Path) -> Step:
    """The next step and whether its gates pass; reads only."""
    flags = read_flags(flags_path) if flags_path.exists() else default_flags()
    for component in ORDER:
        index = stage_index(flags, component)
        if index == len(STAGES) - 1:
            continue
        flag = flags.flag(component)
        current = describe(flag.mode, flag.percent)
        mode, percent = STAGES[index + 1]
        target = describe(mode, percent)
        if index == 0:
            return Step(
                component, current, target, True, ["entering shadow needs no evidence"], mode, percent
            )
        reasons: list[str] = []
        allowed = True
        policy = flags.rollback
        since = _since(flags_path, component)
        count = _mismatches(workspace, component, since)
        health = read_health(flags_path).get(component)
        mismatches = max(count, health.mismatches if health else 0)
        if mismatches:
            allowed = False
            reasons.append(f"gate failed: {mismatches} shadow mismatch(es) recorded for {component} (need 0)")
        else:
            reasons.append("gate passed: 0 shadow mismatches")
        calls = health.calls if health else 0
        if calls < policy.min_samples:
            allowed = False
            reasons.append(
                f"gate failed: only {calls} calls on the new path (need at least {policy.min_samples})"
            )
        else:
            rate = (health.errors if health else 0) / calls
            if rate >= policy.max_error_rate:
                allowed = False
                reasons.append(f"gate failed: error rate {rate:.3f} is not under {policy.max_error_rate:g}")
            else:
                reasons.append(
                    f"gate passed: error rate {rate:.3f} < {policy.max_error_rate:g} over {calls} calls"
                )
        return Step(component, current, target, allowed, reasons, mode, percent)
    return Step(None, "new", "new", False, ["every component is already on the new path"])


def take_next(workspace: Path, flags_path: Path, *, dry_run: bool = False) -> Step:
    """Plan the next step and, unless ``dry_run`` or a gate failed, write it to the flag file."""
    step = plan_next(workspace, flags_path)
    if step.allowed and not dry_run and step.component is not None and step.mode is not None:
        update_flags(
            flags_path,
            components={step.component: ComponentChange(mode=step.mode, percent=step.percent)},
            source="migrate",
            reason=f"migrate next: {step.component} {step.current} -> {step.target}",
        )
    return step
