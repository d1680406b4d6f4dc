"""The sync half of the bridge's compat pair (see ``bridge/_async/_compat.py``): everything in line."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Generic, TypeVar

log = logging.getLogger("codeagent.bridge")

T = TypeVar("T")

#: What a call of the new path gives: its value.
Result = Annotated[T, "sync"]

__all__ = ["Background", "BlockingPool", "Candidate", "Result", "spawn"]


class BlockingPool:
    """The sync face runs legacy code where it is called: the caller's thread."""

    def __init__(self, threads: int = 0) -> None:
        del threads

    def run(self, fn: Callable[[], T]) -> T:
        """``fn()``, here and now."""
        return fn()

    def close(self) -> None:
        """Nothing to stop."""


class Candidate(Generic[T]):
    """A shadow candidate that already ran (the sync face runs it in line)."""

    def __init__(self, value: T) -> None:
        self._value = value

    def result_within(self, seconds: float) -> T | None:
        """Its result (it is already there)."""
        del seconds
        return self._value


def spawn(work: T) -> Candidate[T]:
    """``work`` was evaluated by the caller already; hold its result."""
    return Candidate(work)


class Background:
    """The sync face judges in line."""

    def start(self, work: Callable[[], None]) -> None:
        """Run ``work()`` now (its failure is logged, never raised, as on the async face)."""
        try:
            work()
        except Exception:
            log.exception("shadow comparison failed")

    def drain(self) -> None:
        """Nothing to wait for."""
