"""Sliding-window health of each component's new path, and automatic rollback.

Every call that runs the new path records an outcome: ok, error, or (in
shadow) mismatch. When a component's window holds at least ``min_samples``
outcomes and its error or mismatch rate is above the flag file's threshold,
the monitor fires its rollback action once (the router then reads the
rewritten flag file). Fewer samples than the minimum is inconclusive: no
action. A change of the component's mode in the flag file re-arms it with
an empty window.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from feature_flags import FlagSet, FlagStore
from feature_flags.health import ComponentHealth

log = logging.getLogger("codeagent.bridge")

OK, ERROR, MISMATCH = 0, 1, 2


@dataclass(frozen=True, slots=True)
class RollbackVerdict:
    """Why a component is being rolled back: the figures that crossed a threshold."""

    component: str
    samples: int
    errors: int
    mismatches: int
    error_rate: float
    mismatch_rate: float
    reason: str


RollbackAction = Callable[[RollbackVerdict], None]


class HealthMonitor:
    """Counts outcomes of new-path calls per component and triggers rollback."""

    def __init__(self, store: FlagStore, on_rollback: RollbackAction | None = None) -> None:
        self.store = store
        self.on_rollback = on_rollback
        self._lock = threading.Lock()
        self._windows: dict[str, deque[int]] = {}
        self._totals: dict[str, ComponentHealth] = {}
        self._tripped: dict[str, RollbackVerdict] = {}
        store.subscribe(self._on_flags_changed)

    def _on_flags_changed(self, old: FlagSet, new: FlagSet) -> None:
        with self._lock:
            for name in set(old.components) | set(new.components):
                if old.flag(name).mode != new.flag(name).mode:
                    self._windows.pop(name, None)
                    self._tripped.pop(name, None)
                    health = self._totals.get(name)
                    if health is not None:
                        health.rollback = "armed"

    def record(self, component: str, outcome: int) -> None:
        """Record one outcome (``OK``, ``ERROR`` or ``MISMATCH``) of the new path."""
        policy = self.store.flags.rollback
        verdict: RollbackVerdict | None = None
        with self._lock:
            window = self._windows.get(component)
            if window is None or window.maxlen != policy.window:
                window = deque(window or (), maxlen=policy.window)
                self._windows[component] = window
            window.append(outcome)
            totals = self._totals.setdefault(component, ComponentHealth())
            totals.calls += 1
            totals.errors += outcome == ERROR
            totals.mismatches += outcome == MISMATCH
            if policy.enabled and component not in self._tripped and len(window) >= policy.min_samples:
                verdict = self._judge(component, window, policy.max_error_rate, policy.max_mismatch_rate)
                if verdict is not None:
                    self._tripped[component] = verdict
                    totals.rollback = f"rolled back: {verdict.reason}"
        if verdict is not None:
            log.warning("automatic rollback of %s: %s", component, verdict.reason)
            if self.on_rollback is not None:
                self.on_rollback(verdict)

    @staticmethod
    def _judge(component: str, window: deque[int], max_err: float, max_mis: float) -> RollbackVerdict | None:
        samples = len(window)
        errors = sum(1 for o in window if o == ERROR)
        mismatches = sum(1 for o in window if o == MISMATCH)
        error_rate, mismatch_rate = errors / samples, mismatches / samples
        if error_rate > max_err:
            reason = f"error rate {error_rate:.1%} > {max_err:.1%} over {samples} calls"
        elif mismatch_rate > max_mis:
            reason = f"mismatch rate {mismatch_rate:.1%} > {max_mis:.1%} over {samples} calls"
        else:
            return None
        return RollbackVerdict(component, samples, errors, mismatches, error_rate, mismatch_rate, reason)

    def snapshot(self) -> dict[str, ComponentHealth]:
        """A copy of the totals per component (for ``flags show`` and metrics)."""
        with self._lock:
            return {
                k: ComponentHealth(v.calls, v.errors, v.mismatches, v.rollback)
                for k, v in self._totals.items()
            }

    def tripped(self, component: str) -> RollbackVerdict | None:
        """The verdict that rolled ``component`` back, if one did since it was last armed."""
        with self._lock:
            return self._tripped.get(component)
