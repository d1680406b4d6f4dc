"""The async half of the bridge's compat pair: what the async face does that has no sync spelling.

=================  ==================  ==============================================
async (here)       sync (``_sync``)    what it is
=================  ==================  ==============================================
``AResult[T]``     ``Result[T]``       what a component call gives: an awaitable / a value
``BlockingPool``   ``BlockingPool``    where legacy (blocking) code runs: a thread pool / inline
``aspawn``         ``spawn``           start a shadow candidate beside the served call / run it now
``Candidate``      ``Candidate``       its outcome, waited for with a time limit / already there
``Background``     ``Background``      judgements left to finish after the call / done inline
=================  ==================  ==============================================

The async face never lets a shadow candidate delay the served call: the
candidate runs concurrently, and its comparison finishes in the background.
The sync face (the legacy loop) has nothing to run beside it, so everything
happens in line, in order.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

log = logging.getLogger("codeagent.bridge")

T = TypeVar("T")

#: What a call of the new path gives before it is awaited.
AResult = Awaitable[T]

__all__ = ["AResult", "Background", "BlockingPool", "Candidate", "aspawn"]


class BlockingPool:
    """Runs blocking (legacy) code off the event loop, on threads of its own, keeping context variables.

    Its own pool keeps the legacy path's waits out of the default executor,
    which the async components use for their file hops.
    """

    def __init__(self, threads: int = 64) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="legacy")

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on a pool thread, in a copy of the caller's context."""
        ctx = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self._executor, ctx.run, fn)

    def close(self) -> None:
        """Wait for running calls, then stop the threads."""
        self._executor.shutdown(wait=True)


class Candidate(Generic[T]):
    """A shadow candidate running beside the served call."""

    def __init__(self, task: asyncio.Future[T]) -> None:
        self._task = task

    async def result_within(self, seconds: float) -> T | None:
        """Its result, or ``None`` when it takes longer than ``seconds`` (it is then cancelled)."""
        try:
            return await asyncio.wait_for(self._task, seconds)
        except TimeoutError:
            return None


def aspawn(work: Awaitable[T]) -> Candidate[T]:
    """Start ``work`` now, beside whatever the caller does next."""
    return Candidate(asyncio.ensure_future(work))


class Background:
    """Judgements that finish after the call returned; drained at shutdown."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Future[None]] = set()

    def start(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``work()`` in the background (its failure is logged, never raised)."""
        task = asyncio.ensure_future(work())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)

    async def drain(self) -> None:
        """Wait until every background judgement has finished."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("shadow comparison failed", exc_info=task.exception())
