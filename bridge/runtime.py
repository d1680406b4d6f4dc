"""The bridge's moving parts for one workspace: flags, watcher, router, health, rollback.

:class:`BridgeRuntime` owns the flag store and its watcher, the ledger and
the dispatcher of each face that the facades share, the health monitor, and
the automatic rollback: when the
monitor trips, the flag file is rewritten atomically (source
``auto-rollback``), reloaded at once, logged, and an event is emitted to
whoever listens (the async core's event bus). A small thread writes the
health snapshot beside the flag file for ``codeagent flags show``.

Nothing here wakes up on a timer while the agent is idle: the flag watcher
sleeps on inotify (the kernel's binding, handed to :class:`FlagWatcher`;
watchfiles polls only where inotify is unavailable), and the health thread
sleeps until the monitor reports a change, then writes at most once per
``health_interval`` while changes keep coming.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge._async._compat import BlockingPool as ThreadedBlockingPool
from bridge._async.dispatch import AsyncDispatcher
from bridge._sync._compat import BlockingPool as InlineBlockingPool
from bridge._sync.dispatch import SyncDispatcher
from bridge.health import HealthMonitor, RollbackVerdict
from bridge.ledger import BridgeCounters, CallLedger
from bridge.routing import Router
from codeagent.paths import FLAGS_RELPATH, MISMATCHES_RELPATH
from core_async.kernel import inotify
from core_async.kernel.watching import default_backend
from feature_flags import (
    ComponentChange,
    FlagFileError,
    FlagStore,
    FlagWatcher,
    Mode,
    atomic_write_text,
    update_flags,
)
from feature_flags.health import health_path, render_health
from feature_flags.mismatches import MismatchLog
from feature_flags.watcher import NotifierFactory

log = logging.getLogger("codeagent.bridge")

EventListener = Callable[[str, dict[str, Any]], None]


def flag_notifier() -> NotifierFactory | None:
    """The flag watcher's event source: inotify wherever the kernel's own watcher uses it.

    ``None`` (watchfiles) off Linux or with ``CODEAGENT_WATCH_BACKEND=watchfiles``.
    """
    return inotify.Inotify if default_backend() == "inotify" else None


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
        write_health: bool = True,
    ) -> None:
        self.workspace = workspace
        self.flags_path = flags_path or workspace / FLAGS_RELPATH
        self.store = FlagStore(self.flags_path)
        self.listeners: list[EventListener] = []
        self.rollbacks: list[RollbackVerdict] = []
        # Set by the monitor on its first change after a write (not per call): wakes the health thread.
        self._health_due = threading.Event()
        self.monitor = HealthMonitor(self.store, self._rollback, on_change=self._health_due.set)
        self.mismatches = MismatchLog(workspace / MISMATCHES_RELPATH)
        self.ledger = CallLedger(Router(self.store), self.monitor, self.mismatches)
        self.shadow_timeout = shadow_timeout
        self._sync: SyncDispatcher | None = None
        self._async: AsyncDispatcher | None = None
        self.watcher = FlagWatcher(self.store, notifier=flag_notifier()).start() if watch else None
        self._stop = threading.Event()
        self._health_interval = health_interval
        # A process that routes calls but drives no loop (an API front) leaves the health file to the loop's.
        self._health_thread: threading.Thread | None = None
        if write_health:
            self._health_thread = threading.Thread(
                target=self._write_health, name="bridge-health", daemon=True
            )
            self._health_thread.start()

    @property
    def counters(self) -> dict[str, BridgeCounters]:
        """Calls per route and component, over both faces."""
        return self.ledger.counters

    def sync_dispatcher(self) -> SyncDispatcher:
        """The dispatcher of the sync face (the legacy loop's facades)."""
        if self._sync is None:
            self._sync = SyncDispatcher(self.ledger, InlineBlockingPool(), shadow_timeout=self.shadow_timeout)
        return self._sync

    def async_dispatcher(self) -> AsyncDispatcher:
        """The dispatcher of the async face (the async core's facades)."""
        if self._async is None:
            self._async = AsyncDispatcher(
                self.ledger, ThreadedBlockingPool(), shadow_timeout=self.shadow_timeout
            )
        return self._async

    async def drain(self) -> None:
        """Let the async face's shadow judgements finish (before :meth:`close`, on the loop)."""
        if self._async is not None:
            await self._async.drain()

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
        while True:
            self._health_due.wait()  # no timeout: nothing recorded, no wake-up
            if self._stop.is_set():
                return
            self._health_due.clear()
            last = self.flush_health(last)
            # Calls keep coming while a todo runs: their changes wait for the next turn, so the
            # file is written at most once per interval (close writes the last state).
            if self._stop.wait(self._health_interval):
                return

    def flush_health(self, last: str = "") -> str:
        """Write the health snapshot if it changed; returns what was written."""
        health = self.monitor.collect()
        text = render_health(health)
        if text != last and health:
            try:
                atomic_write_text(health_path(self.flags_path), text)
            except OSError as exc:
                log.warning("cannot write bridge health: %s", exc)
        return text

    def close(self) -> None:
        """Stop the watcher and the health thread, flush mismatches and health."""
        self._stop.set()
        self._health_due.set()
        if self._health_thread is not None:
            self._health_thread.join(timeout=5)
        if self.watcher is not None:
            self.watcher.stop()
        if self._health_thread is not None:
            self.flush_health()
        for dispatcher in (self._sync, self._async):
            if dispatcher is not None:
                dispatcher.close()
        self.mismatches.close()
