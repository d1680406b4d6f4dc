"""The bridge's moving parts for one workspace: flags, watcher, router, health, rollback.

:class:`BridgeRuntime` owns the flag store and its watcher, the dispatcher
every facade shares, the health monitor, and the automatic rollback: when the
monitor trips, the flag file is rewritten atomically (source
``auto-rollback``), reloaded at once, logged, and an event is emitted to
whoever listens (the async core's event bus). A small thread writes the
health snapshot beside the flag file for ``codeagent flags show``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.dispatch import Dispatcher
from bridge.health import HealthMonitor, RollbackVerdict
from bridge.mismatches import MismatchLog
from bridge.routing import Router
from feature_flags import (
    FLAGS_RELPATH,
    ComponentChange,
    FlagFileError,
    FlagStore,
    FlagWatcher,
    Mode,
    atomic_write_text,
    update_flags,
)
from feature_flags.health import health_path, render_health

log = logging.getLogger("codeagent.bridge")

MISMATCHES_RELPATH = ".agent/shadow-mismatches.jsonl"
EventListener = Callable[[str, dict[str, Any]], None]


class BridgeRuntime:
    """Everything the facades of one workspace share."""

    def __init__(
        self,
        workspace: Path,
        flags_path: Path | None = None,
        *,
        watch: bool = True,
        shadow_timeout: float = 30.0,
        health_interval: float = 1.0,
    ) -> None:
        self.workspace = workspace
        self.flags_path = flags_path or workspace / FLAGS_RELPATH
        self.store = FlagStore(self.flags_path)
        self.listeners: list[EventListener] = []
        self.rollbacks: list[RollbackVerdict] = []
        self.monitor = HealthMonitor(self.store, self._rollback)
        self.mismatches = MismatchLog(workspace / MISMATCHES_RELPATH)
        self.dispatcher = Dispatcher(
            Router(self.store), self.monitor, self.mismatches, shadow_timeout=shadow_timeout
        )
        self.watcher = FlagWatcher(self.store).start() if watch else None
        self._stop = threading.Event()
        self._health_interval = health_interval
        self._health_thread = threading.Thread(target=self._write_health, name="bridge-health", daemon=True)
        self._health_thread.start()

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        """Tell every listener about a bridge event (never raises)."""
        for listener in list(self.listeners):
            try:
                listener(kind, data)
            except Exception:
                log.exception("bridge event listener failed")

    def _rollback(self, verdict: RollbackVerdict) -> None:
        # Runs on whichever thread recorded the outcome; the file write is small and rare.
        self.rollbacks.append(verdict)
        try:
            update_flags(
                self.flags_path,
                components={verdict.component: ComponentChange(mode=Mode.LEGACY)},
                source="auto-rollback",
                reason=verdict.reason,
            )
        except FlagFileError as exc:
            log.error("automatic rollback of %s could not write the flag file: %s", verdict.component, exc)
        self.store.reload()
        log.warning("rolled %s back to legacy: %s", verdict.component, verdict.reason)
        self.emit(
            "component.rollback",
            {
                "component": verdict.component,
                "reason": verdict.reason,
                "samples": verdict.samples,
                "errors": verdict.errors,
                "mismatches": verdict.mismatches,
                "error_rate": verdict.error_rate,
                "mismatch_rate": verdict.mismatch_rate,
            },
        )

    def _write_health(self) -> None:
        last = ""
        while not self._stop.wait(self._health_interval):
            last = self.flush_health(last)

    def flush_health(self, last: str = "") -> str:
        """Write the health snapshot if it changed; returns what was written."""
        text = render_health(self.monitor.snapshot())
        if text != last and self.monitor.snapshot():
            try:
                atomic_write_text(health_path(self.flags_path), text)
            except OSError as exc:
                log.warning("cannot write bridge health: %s", exc)
        return text

    def close(self) -> None:
        """Stop the watcher and the health thread, flush mismatches and health."""
        self._stop.set()
        self._health_thread.join(timeout=5)
        if self.watcher is not None:
            self.watcher.stop()
        self.flush_health()
        self.dispatcher.close()
