"""What both faces of the bridge share: the router, the call counts, the shadow verdicts.

Each face (the sync dispatcher the legacy loop calls, the async one the async
core calls) routes through one :class:`CallLedger` per workspace, so the
counts, the health window that drives automatic rollback and the mismatch log
are the same whichever loop runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge.health import ERROR, MISMATCH, OK, HealthMonitor
from bridge.routing import Router
from codeagent.context import current_todo
from feature_flags.mismatches import Mismatch, MismatchLog, describe


@dataclass(slots=True)
class Outcome:
    """What one path did: a value or an error, and how long it took."""

    value: Any = None
    error: BaseException | None = None
    ms: float = 0.0

    def comparable(self, normalize: Callable[[Any], Any]) -> Any:
        """The part of the outcome two paths must agree on (an error by its type only)."""
        if self.error is not None:
            return ("error", type(self.error).__name__)
        return ("ok", normalize(self.value))

    def unwrap(self) -> Any:
        """The value, or the error raised."""
        if self.error is not None:
            raise self.error
        return self.value


@dataclass(slots=True)
class BridgeCounters:
    """Calls per route of one component, for ``flags show``, metrics and tests."""

    legacy: int = 0
    new: int = 0
    shadow: int = 0
    mismatches: int = 0
    candidate_timeouts: int = 0


def identity(value: Any) -> Any:
    """The default normalisation: compare values as they are."""
    return value


class CallLedger:
    """Routes calls, counts them, and judges shadow runs for every facade of one workspace."""

    def __init__(self, router: Router, monitor: HealthMonitor, mismatches: MismatchLog) -> None:
        self.router = router
        self.monitor = monitor
        self.mismatches = mismatches
        self.counters: dict[str, BridgeCounters] = {}

    def count(self, component: str) -> BridgeCounters:
        """The counters of ``component`` (created on first use)."""
        counters = self.counters.get(component)
        if counters is None:
            counters = self.counters[component] = BridgeCounters()
        return counters

    def record_new(self, component: str, failed: bool) -> None:
        """One call that ran the new path alone (mode ``new`` or a canary todo)."""
        self.monitor.record(component, ERROR if failed else OK)

    def candidate_timed_out(self, component: str, serve_new: bool) -> None:
        """A shadow candidate did not finish in time: an error of the new path when it was the candidate."""
        self.count(component).candidate_timeouts += 1
        self.monitor.record(component, OK if serve_new else ERROR)

    def compare(
        self,
        component: str,
        operation: str,
        served: str,
        legacy: Outcome,
        new: Outcome,
        normalize: Callable[[Any], Any] = identity,
    ) -> bool:
        """Compare the two paths' outcomes; record health, count and log a mismatch. True when equal."""
        same: bool = legacy.comparable(normalize) == new.comparable(normalize)
        if new.error is not None and legacy.error is None:
            self.monitor.record(component, ERROR)
        else:
            self.monitor.record(component, OK if same else MISMATCH)
        if not same:
            self.count(component).mismatches += 1
            self.mismatches.record(
                Mismatch(
                    component=component,
                    operation=operation,
                    todo_id=current_todo.get(),
                    served=served,
                    legacy=describe(legacy.error or normalize(legacy.value)),
                    new=describe(new.error or normalize(new.value)),
                    legacy_ms=round(legacy.ms, 3),
                    new_ms=round(new.ms, 3),
                )
            )
        return same
