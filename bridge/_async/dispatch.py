"""The routing engine behind every facade, written once for both faces.

A facade hands :meth:`AsyncDispatcher.call` one operation on both
implementations; the dispatcher asks the router where it goes and runs the
legacy path, the new path, or both (shadow), and tells the ledger what
happened (the health window behind automatic rollback, the mismatch log).

Shadow compares like with like: the two paths must start from the same state,
or a concurrent writer makes correct code look wrong.

* A read without a plan (workspace files, git lookups, config) runs both paths
  on the live workspace: nothing else changes what they read meanwhile.
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
the new path is awaited, and a candidate runs beside the served call and is
judged in the background, so shadow adds no waiting to the call. The sync face
(generated from this file) does the same steps in line.
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
        shadow = _Shadow(self, component, operation, decision, normalize)
        if plan is None:
            return await shadow.live(lambda: self.blocking.run(legacy), new)  # type: ignore[no-any-return]
        assert legacy_at is not None and new_at is not None, (
            f"{component}.{operation}: a plan needs both runners"
        )
        if not write:
            return await shadow.snapshot_read(plan, legacy_at, new_at)  # type: ignore[no-any-return]
        if plan.same_base:
            return await shadow.same_base_write(  # type: ignore[no-any-return]
                plan, lambda: self.blocking.run(legacy), new, legacy_at, new_at
            )
        return await shadow.live_write(  # type: ignore[no-any-return]
            plan, lambda: self.blocking.run(legacy), new, legacy_at, new_at
        )

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
    ) -> None:
        self.d = dispatcher
        self.component = component
        self.operation = operation
        self.serve = decision.serve
        self.serve_new = decision.serve == "new"
        self.normalize = normalize

    def _judge(self, legacy: Outcome, new: Outcome, normalize: Callable[[Any], Any] | None = None) -> None:
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
                legacy, new = (other, served) if self.serve_new else (served, other)
                self._judge(legacy, new)
            finally:
                if cleanup is not None:
                    await self.d.blocking.run(lambda: _discard(cleanup))

        self.d.background.start(judge)

    async def live(self, legacy: Callable[[], AResult[Any]], new: Callable[[], AResult[Any]]) -> Any:
        """A read of live state: both paths, the candidate beside the served one."""
        served_fn, candidate_fn = (new, legacy) if self.serve_new else (legacy, new)
        candidate = aspawn(self.d.timed(candidate_fn))
        served = await self.d.timed(served_fn)
        self._judge_later(served, candidate)
        return served.unwrap()

    async def snapshot_read(
        self, plan: ShadowPlan, legacy_at: Callable[[Path], Any], new_at: Callable[[Path], AResult[Any]]
    ) -> Any:
        """A read of state others keep rewriting: both paths on one snapshot; the served answer from it."""
        base = await self.d.blocking.run(plan.snapshot)

        async def legacy() -> Any:
            return await self.d.blocking.run(lambda: legacy_at(base))

        async def new() -> Any:
            return await new_at(base)

        served_fn, candidate_fn = (new, legacy) if self.serve_new else (legacy, new)
        candidate = aspawn(self.d.timed(candidate_fn))
        served = await self.d.timed(served_fn)
        self._judge_later(served, candidate, cleanup=base)
        return served.unwrap()

    async def same_base_write(
        self,
        plan: ShadowPlan,
        legacy: Callable[[], AResult[Any]],
        new: Callable[[], AResult[Any]],
        legacy_at: Callable[[Path], Any],
        new_at: Callable[[Path], AResult[Any]],
    ) -> Any:
        """A write: served on the live workspace; both implementations compared on copies of one snapshot."""
        base = await self.d.blocking.run(plan.snapshot)
        served = await self.d.timed(new if self.serve_new else legacy)

        async def on_copies() -> tuple[Outcome, Outcome]:
            try:
                other = await self.d.blocking.run(lambda: plan.copy(base))
                try:
                    on_legacy = await self.d.timed(lambda: self.d.blocking.run(lambda: legacy_at(base)))
                    on_new = await self.d.timed(lambda: new_at(other))
                    legacy_digest = await self.d.blocking.run(lambda: plan.digest(base))
                    new_digest = await self.d.blocking.run(lambda: plan.digest(other))
                finally:
                    await self.d.blocking.run(lambda: _discard(other))
            finally:
                await self.d.blocking.run(lambda: _discard(base))
            return _with_digest(on_legacy, legacy_digest, self.normalize), _with_digest(
                on_new, new_digest, self.normalize
            )

        pair = aspawn(on_copies())

        async def judge() -> None:
            outcomes = await pair.result_within(self.d.shadow_timeout)
            if outcomes is None:
                self.d.ledger.candidate_timed_out(self.component, self.serve_new)
                return
            self._judge(outcomes[0], outcomes[1], identity)

        self.d.background.start(judge)
        return served.unwrap()

    async def live_write(
        self,
        plan: ShadowPlan,
        legacy: Callable[[], AResult[Any]],
        new: Callable[[], AResult[Any]],
        legacy_at: Callable[[Path], Any],
        new_at: Callable[[Path], AResult[Any]],
    ) -> Any:
        """A write whose live state cannot move meanwhile: served live, candidate on a scratch copy."""
        scratch = await self.d.blocking.run(plan.snapshot)

        async def legacy_on_scratch() -> Any:
            return await self.d.blocking.run(lambda: legacy_at(scratch))

        async def new_on_scratch() -> Any:
            return await new_at(scratch)

        async def candidate_run() -> Outcome:
            outcome = await self.d.timed(new_on_scratch if not self.serve_new else legacy_on_scratch)
            digest = await self.d.blocking.run(lambda: plan.digest(scratch))
            return Outcome(value=digest, error=outcome.error, ms=outcome.ms)

        candidate = aspawn(candidate_run())
        served = await self.d.timed(new if self.serve_new else legacy)
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
