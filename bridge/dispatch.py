"""The routing engine behind every facade: one sync face, one async face.

A facade hands the engine a call's two implementations; the engine asks the
router where the call goes and runs legacy, new, or both (shadow). In shadow,
reads run twice and their results are compared; writes run the served path
on the real workspace and the candidate on a scratch copy, then compare
digests of what each left behind. New-path outcomes feed the health monitor,
which rolls a component back when it misbehaves.

From the async face, legacy code runs on a dedicated thread pool (it blocks),
the new path is awaited, and a shadow candidate runs concurrently as a
tracked background task under a timeout, so it adds no latency to the call.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from bridge.health import ERROR, MISMATCH, OK, HealthMonitor
from bridge.mismatches import Mismatch, MismatchLog, describe
from bridge.routing import Route, Router
from codeagent.context import current_todo

log = logging.getLogger("codeagent.bridge")
T = TypeVar("T")


@dataclass(slots=True)
class Outcome:
    """What one path did: a value or an error, and how long it took."""

    value: Any = None
    error: BaseException | None = None
    ms: float = 0.0

    def comparable(self, normalize: Callable[[Any], Any]) -> Any:
        if self.error is not None:
            return ("error", type(self.error).__name__)
        return ("ok", normalize(self.value))


class WritePlan(Protocol):
    """How to shadow a write: a scratch copy of the state it touches, and digests to compare."""

    def prepare(self) -> Path:
        """Make a scratch directory holding the state the write starts from."""

    def digest_real(self) -> Any:
        """What the served write left in the real workspace."""

    def digest_scratch(self, scratch: Path) -> Any:
        """What the candidate write left in the scratch copy."""


def _identity(value: Any) -> Any:
    return value


@dataclass(slots=True)
class BridgeCounters:
    """Calls per route, for metrics and tests."""

    legacy: int = 0
    new: int = 0
    shadow: int = 0
    mismatches: int = 0
    candidate_timeouts: int = 0


class Dispatcher:
    """Runs calls where the router sends them; shared by every facade of one agent."""

    def __init__(
        self,
        router: Router,
        monitor: HealthMonitor,
        mismatches: MismatchLog,
        *,
        shadow_timeout: float = 30.0,
        legacy_threads: int = 64,
    ) -> None:
        self.router = router
        self.monitor = monitor
        self.mismatches = mismatches
        self.shadow_timeout = shadow_timeout
        self.counters: dict[str, BridgeCounters] = {}
        self._executor = ThreadPoolExecutor(max_workers=legacy_threads, thread_name_prefix="legacy")
        self._background: set[asyncio.Task[None]] = set()

    def count(self, component: str) -> BridgeCounters:
        counters = self.counters.get(component)
        if counters is None:
            counters = self.counters[component] = BridgeCounters()
        return counters

    # -- comparison ---------------------------------------------------------------------------

    def compare(
        self,
        component: str,
        operation: str,
        served: str,
        legacy: Outcome,
        new: Outcome,
        normalize: Callable[[Any], Any],
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

    # -- sync face ------------------------------------------------------------------------------

    @staticmethod
    def run_timed(fn: Callable[[], T]) -> Outcome:
        """Run ``fn``, catching its exception, timing it."""
        start = time.perf_counter()
        try:
            value = fn()
        except Exception as exc:
            return Outcome(error=exc, ms=(time.perf_counter() - start) * 1000)
        return Outcome(value=value, ms=(time.perf_counter() - start) * 1000)

    def call(
        self,
        component: str,
        operation: str,
        legacy: Callable[[], T],
        new: Callable[[], T],
        *,
        normalize: Callable[[Any], Any] = _identity,
        write: WritePlan | None = None,
        legacy_on: Callable[[Path], T] | None = None,
        new_on: Callable[[Path], T] | None = None,
    ) -> T:
        """Route one call from the sync face (the legacy loop)."""
        decision = self.router.decide(component)
        counters = self.count(component)
        if decision.route is Route.LEGACY:
            counters.legacy += 1
            return legacy()
        if decision.route is Route.NEW:
            counters.new += 1
            try:
                value = new()
            except Exception:
                self.monitor.record(component, ERROR)
                raise
            self.monitor.record(component, OK)
            return value
        counters.shadow += 1
        serve_new = decision.serve == "new"
        if write is None:
            first, second = (new, legacy) if serve_new else (legacy, new)
            served, other = self.run_timed(first), self.run_timed(second)
            lo, no = (other, served) if serve_new else (served, other)
            self.compare(component, operation, decision.serve, lo, no, normalize)
        else:
            assert legacy_on is not None and new_on is not None, "write shadow needs scratch runners"
            scratch = write.prepare()
            try:
                served = self.run_timed(new if serve_new else legacy)
                cand_fn = legacy_on if serve_new else new_on
                other = self.run_timed(lambda: cand_fn(scratch))
                real = Outcome(value=write.digest_real(), error=served.error, ms=served.ms)
                copy = Outcome(value=write.digest_scratch(scratch), error=other.error, ms=other.ms)
                lo, no = (copy, real) if serve_new else (real, copy)
                self.compare(component, operation, decision.serve, lo, no, normalize)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        if served.error is not None:
            raise served.error
        return served.value  # type: ignore[no-any-return]

    # -- async face -----------------------------------------------------------------------------

    async def arun_timed(self, coro_fn: Callable[[], Awaitable[T]]) -> Outcome:
        """Await ``coro_fn()``, catching its exception, timing it."""
        start = time.perf_counter()
        try:
            value = await coro_fn()
        except Exception as exc:
            return Outcome(error=exc, ms=(time.perf_counter() - start) * 1000)
        return Outcome(value=value, ms=(time.perf_counter() - start) * 1000)

    async def off_loop(self, fn: Callable[[], T]) -> T:
        """Run blocking (legacy) code on the bridge's thread pool, keeping context variables."""
        ctx = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, ctx.run, fn)

    async def acall(
        self,
        component: str,
        operation: str,
        legacy: Callable[[], T],
        new: Callable[[], Awaitable[T]],
        *,
        normalize: Callable[[Any], Any] = _identity,
        write: WritePlan | None = None,
        legacy_on: Callable[[Path], T] | None = None,
        new_on: Callable[[Path], Awaitable[T]] | None = None,
    ) -> T:
        """Route one call from the async face (the async core)."""
        decision = self.router.decide(component)
        counters = self.count(component)
        if decision.route is Route.LEGACY:
            counters.legacy += 1
            return await self.off_loop(legacy)
        if decision.route is Route.NEW:
            counters.new += 1
            try:
                value = await new()
            except Exception:
                self.monitor.record(component, ERROR)
                raise
            self.monitor.record(component, OK)
            return value
        counters.shadow += 1
        serve_new = decision.serve == "new"

        async def legacy_async() -> T:
            return await self.off_loop(legacy)

        if write is None:
            served_fn, cand_fn = (new, legacy_async) if serve_new else (legacy_async, new)
            candidate = asyncio.ensure_future(self.arun_timed(cand_fn))
            served = await self.arun_timed(served_fn)
            self._finish_later(component, operation, decision.serve, serve_new, served, candidate, normalize)
        else:
            assert legacy_on is not None and new_on is not None, "write shadow needs scratch runners"
            scratch = await self.off_loop(write.prepare)

            async def legacy_scratch() -> T:
                return await self.off_loop(lambda: legacy_on(scratch))

            async def new_scratch() -> T:
                return await new_on(scratch)

            served_fn2, cand_fn2 = (new, legacy_scratch) if serve_new else (legacy_async, new_scratch)
            candidate = asyncio.ensure_future(self.arun_timed(cand_fn2))
            served = await self.arun_timed(served_fn2)
            real_digest = await self.off_loop(write.digest_real)
            real = Outcome(value=real_digest, error=served.error, ms=served.ms)

            async def finish() -> None:
                try:
                    other = await asyncio.wait_for(candidate, self.shadow_timeout)
                except TimeoutError:
                    counters.candidate_timeouts += 1
                    self.monitor.record(component, ERROR if not serve_new else OK)
                    await self.off_loop(lambda: shutil.rmtree(scratch, ignore_errors=True))
                    return
                try:
                    digest = await self.off_loop(lambda: write.digest_scratch(scratch))
                    copy = Outcome(value=digest, error=other.error, ms=other.ms)
                    lo, no = (copy, real) if serve_new else (real, copy)
                    self.compare(component, operation, decision.serve, lo, no, normalize)
                finally:
                    await self.off_loop(lambda: shutil.rmtree(scratch, ignore_errors=True))

            self._track(finish())
        if served.error is not None:
            raise served.error
        return served.value  # type: ignore[no-any-return]

    def _finish_later(
        self,
        component: str,
        operation: str,
        serve: str,
        serve_new: bool,
        served: Outcome,
        candidate: asyncio.Future[Outcome],
        normalize: Callable[[Any], Any],
    ) -> None:
        async def finish() -> None:
            try:
                other = await asyncio.wait_for(candidate, self.shadow_timeout)
            except TimeoutError:
                self.count(component).candidate_timeouts += 1
                self.monitor.record(component, ERROR if not serve_new else OK)
                return
            lo, no = (other, served) if serve_new else (served, other)
            self.compare(component, operation, serve, lo, no, normalize)

        self._track(finish())

    def _track(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_task_failure)

    async def drain(self) -> None:
        """Wait for every shadow candidate still running (at shutdown, and in tests)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    def close(self) -> None:
        """Stop the legacy thread pool and flush the mismatch log."""
        self._executor.shutdown(wait=True)
        self.mismatches.close()


def _log_task_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("shadow comparison failed", exc_info=task.exception())
