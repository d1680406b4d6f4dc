"""Which fault, if any, the next request gets, and its latency: a scripted queue first, then seeded draws."""

from __future__ import annotations

import math
import random
from collections import Counter, deque

from llm_stub.options import NO_FAULT, StubOptions, check_fault_kind


class FaultPlan:
    """Decides faults and latency for requests, reproducibly for a given seed.

    Scripted faults (:meth:`queue`) are served in order, one per request,
    whatever the rates say; ``ok`` in the queue lets one request through.
    Once the queue is empty a request gets a fault kind with its probability in
    ``fault_rates``, else a fault with probability ``fail_rate`` (its kind drawn
    uniformly from ``faults``). Its latency is ``latency_ms`` with a uniform
    jitter, or a lognormal draw (median ``latency_ms``, p99 ``latency_p99_ms``).

    With ``draws = "sequence"`` every draw comes from one generator in arrival
    order; with ``draws = "prompt"`` each request has its own generator, seeded
    by the seed, the request's key (a digest of its messages) and how many
    times that key was seen since the last reset or seed change.
    """

    def __init__(self, options: StubOptions) -> None:
        self.options = options
        self._rng = random.Random(options.seed)
        self._queue: deque[str] = deque()
        self._seen: Counter[str] = Counter()

    def configure(self, options: StubOptions) -> None:
        """Adopt new options; a new seed restarts the random sequence (and the prompts' counts)."""
        if options.seed != self.options.seed:
            self._rng = random.Random(options.seed)
            self._seen.clear()
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
        """Forget every scripted fault and restart the random draws from the seed."""
        self._queue.clear()
        self._rng = random.Random(self.options.seed)
        self._seen.clear()

    def draw(self, key: str = "") -> tuple[str | None, float]:
        """``(fault or None, latency in seconds)`` for the next request; ``key`` identifies its prompt."""
        rng = self._rng
        if self.options.draws == "prompt":
            count = self._seen[key]
            self._seen[key] = count + 1
            rng = random.Random(f"{self.options.seed}:{key}:{count}")
        return self._fault(rng), self._latency(rng)

    def next_fault(self) -> str | None:
        """The fault for the next request (arrival-order draws), or ``None`` for a normal answer."""
        return self._fault(self._rng)

    def latency_s(self) -> float:
        """Seconds to wait before answering (arrival-order draws), never negative."""
        return self._latency(self._rng)

    def _fault(self, rng: random.Random) -> str | None:
        if self._queue:
            kind = self._queue.popleft()
            return None if kind == NO_FAULT else kind
        rates = self.options.fault_rates
        if rates:
            point = rng.random()
            for kind, rate in rates.items():
                if point < rate:
                    return kind
                point -= rate
        rate = self.options.fail_rate
        if rate <= 0 or not self.options.faults:
            return None
        if rng.random() >= rate:
            return None
        return rng.choice(self.options.faults)

    def _latency(self, rng: random.Random) -> float:
        sigma = self.options.lognormal_sigma
        if sigma is not None:
            return rng.lognormvariate(math.log(self.options.latency_ms), sigma) / 1000.0
        base = self.options.latency_ms
        jitter = self.options.jitter_ms
        if jitter > 0:
            base += rng.uniform(-jitter, jitter)
        return max(0.0, base) / 1000.0
