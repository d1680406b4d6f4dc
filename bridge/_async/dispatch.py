"""The routing engine behind every facade, written once for both faces.

A facade hands :meth:`AsyncDispatcher.call` one operation on both
implementations; the dispatcher asks the router where it goes and runs the
legacy path, the new path, or both (shadow), and tells the ledger what
happened (the health window behind automatic rollback, the mismatch log).

Shadow compares like with like: the two paths must start from the same state,
or a concurrent writer makes correct code look wrong.

* A read without a plan (workspace files, a todo's checkpoint, git lookups,
  config) runs both paths on the live workspace at once and returns when both
  are done: nothing else changes what they read meanwhile (a todo's files and
  checkpoint are its own), and the caller's next write cannot overtake them.
* A read with a plan (the todo list, the status document, which every running
  todo rewrites) runs both paths on one snapshot of the state files, and
  serves the served path's answer from it.
* A write with a same-base plan runs the served path on the live workspace,
  then both implementations on two copies of the snapshot taken just before,
  and compares what each left there (and returned).
* A write whose plan is not same-base (a git commit: the repository's writer
  lock keeps its state still) compares the live result with the candidate's on
  a scratch copy.

From the async face, legacy code runs on the bridge's own threads (it blocks),
the new path is awaited, and a candidate runs beside the served call. Except
for reads of live state, the candidate is judged in the background, so shadow
adds no waiting to a write. The sync face (generated from this file) does the
same steps in line.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bridge._async._compat import AResult, Background, BlockingPool, Candidate, aspawn
from bridge.ledger import CallLedger, Outcome, identity
from bridge.plans import ShadowPlan
from bridge.routing import Decision, Route

T = TypeVar("T")


def _discard(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


class AsyncDispatcher:
    """Runs each call where the router sends it; shared by every facade of one workspace and face."""

    def __init__(self, ledger: CallLedger, blocking: BlockingPool, *, shadow_timeout: float = 30.0) -> None:
        self.ledger = ledger
        self.blocking = blocking
        self.shadow_timeout = shadow_timeout
        self.background = Background()

    async def timed(self, fn: Callable[[], AResult[T]]) -> Outcome:
        """Run ``fn``, catching its exception, timing it."""
        start = time.perf_counter()
        try:
            value = await fn()
        except Exception as exc:
            return Outcome(error=exc, ms=(time.perf_counter() - start) * 1000)
        return Outcome(value=value, ms=(time.perf_counter() - start) * 1000)

    async def call(
        self,
        component: str,
        operation: str,
        legacy: Callable[[], T],
        new: Callable[[], AResult[T]],
        *,
        normalize: Callable[[Any], Any] = identity,
        plan: ShadowPlan | None = None,
        write: bool = False,
        legacy_at: Callable[[Path], T] | None = None,
        new_at: Callable[[Path], AResult[T]] | None = None,
    ) -> T:
        """Route one operation of ``component``; return what the served path returned (or raise its error).

        ``legacy_at`` / ``new_at`` run the operation on a component rooted at
        a scratch directory; a ``plan`` needs both.
        """
        ledger = self.ledger
        decision = ledger.router.decide(component)
        counters = ledger.count(component)
        if decision.route is Route.LEGACY:
            counters.legacy += 1
            return await self.blocking.run(legacy)
        if decision.route is Route.NEW:
            counters.new += 1
            try:
                value = await new()
            except Exception:
                ledger.record_new(component, failed=True)
                raise
            ledger.record_new(component, failed=False)
            return value
        counters.shadow += 1
        shadow = _Shadow(self, component, operation, decision, normalize, legacy, new, legacy_at, new_at)
        if plan is None:
            return await shadow.live()  # type: ignore[no-any-return]
        if not write:
            return await shadow.snapshot_read(plan)  # type: ignore[no-any-return]
        if plan.same_base:
            return await shadow.same_base_write(plan)  # type: ignore[no-any-return]
        return await shadow.live_write(plan)  # type: ignore[no-any-return]

    async def drain(self) -> None:
        """Wait for every shadow judgement still running (at shutdown, and in tests)."""
        await self.background.drain()

    def close(self) -> None:
        """Stop the legacy threads (after :meth:`drain`)."""
        self.blocking.close()


class _Shadow:
    """One shadowed call: runs both paths as the plan says and has the ledger judge them."""

    def __init__(
        self,
        dispatcher: AsyncDispatcher,
        component: str,
        operation: str,
        decision: Decision,
        normalize: Callable[[Any], Any],
        legacy: Callable[[], Any],
        new: Callable[[], AResult[Any]],
        legacy_at: Callable[[Path], Any] | None,
        new_at: Callable[[Path], AResult[Any]] | None,
    ) -> None:
        self.d = dispatcher
        self.component = component
        self.operation = operation
        self.serve = decision.serve
        self.serve_new = decision.serve == "new"
        self.normalize = normalize
        self.legacy = legacy
        self.new = new
        self.legacy_at = legacy_at
        self.new_at = new_at

    async def _legacy_live(self) -> Any:
        return await self.d.blocking.run(self.legacy)

    async def _new_live(self) -> Any:
        return await self.new()

    async def _legacy_on(self, where: Path) -> Any:
        run_at = self.legacy_at
        assert run_at is not None, f"{self.component}.{self.operation}: a plan needs a legacy runner"
        return await self.d.blocking.run(lambda: run_at(where))

    async def _new_on(self, where: Path) -> Any:
        assert self.new_at is not None, f"{self.component}.{self.operation}: a plan needs a new runner"
        return await self.new_at(where)

    def _served_first(
        self, legacy: Callable[[], AResult[Any]], new: Callable[[], AResult[Any]]
    ) -> tuple[Callable[[], AResult[Any]], Callable[[], AResult[Any]]]:
        """``(served, candidate)`` of the two paths."""
        return (new, legacy) if self.serve_new else (legacy, new)

    def _judge(self, served: Outcome, other: Outcome, normalize: Callable[[Any], Any] | None = None) -> None:
        legacy, new = (other, served) if self.serve_new else (served, other)
        self.d.ledger.compare(
            self.component, self.operation, self.serve, legacy, new, normalize or self.normalize
        )

    def _judge_later(
        self, served: Outcome, candidate: Candidate[Outcome], cleanup: Path | None = None
    ) -> None:
        """Compare ``served`` with the candidate once it is done, in the background."""

        async def judge() -> None:
            try:
                other = await candidate.result_within(self.d.shadow_timeout)
                if other is None:
                    self.d.ledger.candidate_timed_out(self.component, self.serve_new)
                    return
                self._judge(served, other)
            finally:
                if cleanup is not None:
                    await self.d.blocking.run(lambda: _discard(cleanup))

        self.d.background.start(judge)

    async def live(self) -> Any:
        """A read of live state: both paths at once, and the call returns when both are done.

        Waiting for the candidate (within the shadow timeout) keeps the
        caller's next step, often a write of what was just read, from
        overtaking a candidate still reading.
        """
        served_fn, candidate_fn = self._served_first(self._legacy_live, self._new_live)
        candidate = aspawn(self.d.timed(candidate_fn))
        served = await self.d.timed(served_fn)
        other = await candidate.result_within(self.d.shadow_timeout)
        if other is None:
            self.d.ledger.candidate_timed_out(self.component, self.serve_new)
        else:
            self._judge(served, other)
        return served.unwrap()

    async def snapshot_read(self, plan: ShadowPlan) -> Any:
        """A read of state others keep rewriting: both paths on one snapshot; the served answer from it."""
        base = await self.d.blocking.run(plan.snapshot)
        served_fn, candidate_fn = self._served_first(
            lambda: self._legacy_on(base), lambda: self._new_on(base)
        )
        candidate = aspawn(self.d.timed(candidate_fn))
        served = await self.d.timed(served_fn)
        self._judge_later(served, candidate, cleanup=base)
        return served.unwrap()

    async def same_base_write(self, plan: ShadowPlan) -> Any:
        """A write: served on the live workspace; both implementations compared on copies of one snapshot."""
        base = await self.d.blocking.run(plan.snapshot)
        served = await self.d.timed(self._served_first(self._legacy_live, self._new_live)[0])

        async def on_copies() -> tuple[Outcome, Outcome]:
            try:
                other = await self.d.blocking.run(lambda: plan.copy(base))
                try:
                    on_legacy = await self.d.timed(lambda: self._legacy_on(base))
                    on_new = await self.d.timed(lambda: self._new_on(other))
                    legacy_digest = await self.d.blocking.run(lambda: plan.digest(base))
                    new_digest = await self.d.blocking.run(lambda: plan.digest(other))
                finally:
                    await self.d.blocking.run(lambda: _discard(other))
            finally:
                await self.d.blocking.run(lambda: _discard(base))
            legacy = _with_digest(on_legacy, legacy_digest, self.normalize)
            return legacy, _with_digest(on_new, new_digest, self.normalize)

        pair = aspawn(on_copies())

        async def judge() -> None:
            outcomes = await pair.result_within(self.d.shadow_timeout)
            if outcomes is None:
                self.d.ledger.candidate_timed_out(self.component, self.serve_new)
                return
            self.d.ledger.compare(self.component, self.operation, self.serve, *outcomes)

        self.d.background.start(judge)
        return served.unwrap()

    async def live_write(self, plan: ShadowPlan) -> Any:
        """A write whose live state cannot move meanwhile: served live, candidate on a scratch copy."""
        scratch = await self.d.blocking.run(plan.snapshot)
        candidate_at = self._served_first(lambda: self._legacy_on(scratch), lambda: self._new_on(scratch))[1]

        async def candidate_run() -> Outcome:
            outcome = await self.d.timed(candidate_at)
            digest = await self.d.blocking.run(lambda: plan.digest(scratch))
            return Outcome(value=digest, error=outcome.error, ms=outcome.ms)

        candidate = aspawn(candidate_run())
        served = await self.d.timed(self._served_first(self._legacy_live, self._new_live)[0])
        live_digest = await self.d.blocking.run(lambda: plan.digest(plan.root))
        self._judge_later(
            Outcome(value=live_digest, error=served.error, ms=served.ms), candidate, cleanup=scratch
        )
        return served.unwrap()


def _with_digest(outcome: Outcome, digest: Any, normalize: Callable[[Any], Any]) -> Outcome:
    """An outcome whose value is what the call returned (normalised) and what it left behind."""
    if outcome.error is not None:
        return outcome
    return Outcome(value=(normalize(outcome.value), digest), ms=outcome.ms)
