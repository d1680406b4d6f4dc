"""Which fault, if any, the next request gets: a scripted queue first, then a seeded draw."""

from __future__ import annotations

import random
from collections import deque

from llm_stub.options import NO_FAULT, StubOptions, check_fault_kind


class FaultPlan:
    """Decides faults and latency for requests, reproducibly for a given seed.

    Scripted faults (:meth:`queue`) are served in order, one per request,
    whatever ``fail_rate`` says; ``ok`` in the queue lets one request through.
    Once the queue is empty each request fails with probability ``fail_rate``,
    with a kind drawn uniformly from ``faults``.
    """

    def __init__(self, options: StubOptions) -> None:
        self.options = options
        self._rng = random.Random(options.seed)
        self._queue: deque[str] = deque()

    def configure(self, options: StubOptions) -> None:
        """Adopt new options; a new seed restarts the random sequence."""
        if options.seed != self.options.seed:
            self._rng = random.Random(options.seed)
        self.options = options

    def queue(self, kinds: list[str]) -> None:
        """Append scripted faults (validated: an unknown kind raises ValueError, nothing is queued)."""
        checked = [check_fault_kind(str(kind), allow_ok=True) for kind in kinds]
        self._queue.extend(checked)

    @property
    def queued(self) -> list[str]:
        """The scripted faults still waiting, in order."""
        return list(self._queue)

    def clear(self) -> None:
        """Forget every scripted fault and restart the random sequence from the seed."""
        self._queue.clear()
        self._rng = random.Random(self.options.seed)

    def next_fault(self) -> str | None:
        """The fault for the next request, or ``None`` for a normal answer."""
        if self._queue:
            kind = self._queue.popleft()
            return None if kind == NO_FAULT else kind
        rate = self.options.fail_rate
        if rate <= 0 or not self.options.faults:
            return None
        if self._rng.random() >= rate:
            return None
        return self._rng.choice(self.options.faults)

    def latency_s(self) -> float:
        """Seconds to wait before answering: latency plus a uniform jitter, never negative."""
        base = self.options.latency_ms
        jitter = self.options.jitter_ms
        if jitter > 0:
            base += self._rng.uniform(-jitter, jitter)
        return max(0.0, base) / 1000.0
