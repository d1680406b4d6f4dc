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

from feature_flags import FlagSet, FlagStore, Mode
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
ChangeListener = Callable[[], None]


class _Health:
    """One component's window of recent outcomes with running counts, and its totals."""

    __slots__ = ("calls", "errors", "mismatches", "outcomes", "rollback", "total_errors", "total_mismatches")

    def __init__(self) -> None:
        self.outcomes: deque[int] = deque()
        self.errors = self.mismatches = 0
        self.calls = self.total_errors = self.total_mismatches = 0
        self.rollback = "armed"

    def reset_window(self) -> None:
        self.outcomes.clear()
        self.errors = self.mismatches = 0
        self.rollback = "armed"


class HealthMonitor:
    """Counts outcomes of new-path calls per component and triggers rollback.

    Recording is O(1): the window keeps running error and mismatch counts, and
    an ``OK`` on a clean window returns before any judgement.

    ``on_change`` is called (under the monitor's lock, so it must be quick and
    must not call back) when the totals first change after :meth:`collect`;
    further changes only set a flag until the next :meth:`collect`, so a busy
    monitor notifies once per collection, not once per call.
    """

    def __init__(
        self,
        store: FlagStore,
        on_rollback: RollbackAction | None = None,
        on_change: ChangeListener | None = None,
    ) -> None:
        self.store = store
        self.on_rollback = on_rollback
        self.on_change = on_change
        self._changed = False
        self._lock = threading.Lock()
        self._health: dict[str, _Health] = {}
        self._tripped: dict[str, RollbackVerdict] = {}
        store.subscribe(self._on_flags_changed)

    def _on_flags_changed(self, old: FlagSet, new: FlagSet) -> None:
        with self._lock:
            for name in set(old.components) | set(new.components):
                mode = new.flag(name).mode
                if old.flag(name).mode == mode:
                    continue
                health = self._health.get(name)
                if mode is Mode.LEGACY and name in self._tripped:
                    # The rollback itself: keep saying why until the new path is tried again.
                    if health is not None:
                        health.outcomes.clear()
                        health.errors = health.mismatches = 0
                    continue
                self._tripped.pop(name, None)
                if health is not None:
                    health.reset_window()
                    self._mark_changed()

    def _mark_changed(self) -> None:
        # Under the lock: only the first change after a collection notifies.
        if not self._changed:
            self._changed = True
            if self.on_change is not None:
                self.on_change()

    def record(self, component: str, outcome: int) -> None:
        """Record one outcome (``OK``, ``ERROR`` or ``MISMATCH``) of the new path."""
        policy = self.store.flags.rollback
        with self._lock:
            h = self._health.get(component)
            if h is None:
                h = self._health[component] = _Health()
            window = h.outcomes
            window.append(outcome)
            h.calls += 1
            if not self._changed:
                self._mark_changed()
            if outcome == ERROR:
                h.errors += 1
                h.total_errors += 1
            elif outcome == MISMATCH:
                h.mismatches += 1
                h.total_mismatches += 1
            while len(window) > policy.window:
                old = window.popleft()
                if old == ERROR:
                    h.errors -= 1
                elif old == MISMATCH:
                    h.mismatches -= 1
            if not (h.errors or h.mismatches) or len(window) < policy.min_samples or not policy.enabled:
                return
            if component in self._tripped:
                return
            verdict = self._judge(component, h, policy.max_error_rate, policy.max_mismatch_rate)
            if verdict is None:
                return
            self._tripped[component] = verdict
            h.rollback = f"rolled back: {verdict.reason}"
        log.warning("automatic rollback of %s: %s", component, verdict.reason)
        if self.on_rollback is not None:
            self.on_rollback(verdict)

    @staticmethod
    def _judge(component: str, h: _Health, max_err: float, max_mis: float) -> RollbackVerdict | None:
        samples = len(h.outcomes)
        errors, mismatches = h.errors, h.mismatches
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
            return self._totals()

    def collect(self) -> dict[str, ComponentHealth]:
        """:meth:`snapshot`, re-arming ``on_change`` for the next change (the health writer's read)."""
        with self._lock:
            self._changed = False
            return self._totals()

    def _totals(self) -> dict[str, ComponentHealth]:
        return {
            k: ComponentHealth(v.calls, v.total_errors, v.total_mismatches, v.rollback)
            for k, v in self._health.items()
        }

    def tripped(self, component: str) -> RollbackVerdict | None:
        """The verdict that rolled ``component`` back, if one did since it was last armed."""
        with self._lock:
            return self._tripped.get(component)
