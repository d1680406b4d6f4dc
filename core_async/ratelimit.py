"""Pacing shared by every caller of an endpoint: a token bucket (optional request rate limit) and the
``Retry-After`` gate of a burst of 429s."""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable

from core_async._compat import ALock, asleep


class AsyncTokenBucket:
    """At most ``rate`` acquisitions per second on average, bursts of up to ``burst``.

    Waiters are served in arrival order: the one at the head holds the lock
    while it sleeps until its token is due, so no caller starves and the
    bucket never goes negative. Share one instance between clients to limit
    them together.
    """

    def __init__(self, rate: float, burst: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._stamp = clock()
        self._lock = ALock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self) -> float:
        """Take one token, waiting until one is due; return how long this call waited (seconds)."""
        started = self._clock()
        async with self._lock:
            self._refill()
            while self._tokens < 1.0:
                await asleep((1.0 - self._tokens) / self.rate)
                self._refill()
            self._tokens -= 1.0
        return self._clock() - started


class AsyncRetryGate:
    """One endpoint's ``Retry-After``, shared by every request to it during a burst of 429s.

    Every answer is noted (:meth:`answered`), 429 or not, in a window of the
    last ``window`` answers. A *burst* is a window in which at least
    ``burst_share`` of the answers were 429s. During a burst the gate is closed
    until the latest instant a 429 asked for (its ``Retry-After`` counted from
    its arrival): every request, first attempts and retries alike, waits until
    then, plus a jitter of up to ``spread`` times that ``Retry-After`` so the
    waiters do not all go at the same instant. A burst of 429s so becomes one
    paced restart instead of a retry storm.

    Outside a burst a 429 delays only its own request (by its own
    ``Retry-After``, as the legacy client does): with 3% of answers 429s at
    random, a gate closed for everyone on every 429 would be closed most of
    the time at 40 requests/s (each 429 closing it for a second) and would
    delay most requests, 429 or not.

    No timer of its own: callers compute their wait (:meth:`delay`) and sleep
    it while they are in flight.
    """

    def __init__(
        self,
        *,
        window: int = 16,
        burst_share: float = 0.25,
        spread: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.burst_share = burst_share
        self.spread = spread
        self._clock = clock
        self._rng = rng or random.Random()
        self._answers: deque[bool] = deque(maxlen=window)
        self._until = 0.0
        self._asked = 0.0
        #: How many requests the gate held back (once each, however many times they looked again).
        self.paced = 0

    def answered(self, rate_limited: bool, wait: float | None = None) -> None:
        """Note one answer: whether it was a 429, and the wait it asked for (seconds)."""
        self._answers.append(rate_limited)
        if rate_limited and wait is not None:
            until = self._clock() + wait
            if until > self._until:
                self._until = until
                self._asked = wait

    @property
    def burst(self) -> bool:
        """Whether the recent answers are a burst of 429s."""
        answers = self._answers
        return bool(answers) and sum(answers) >= self.burst_share * answers.maxlen  # type: ignore[operator]

    def delay(self) -> float:
        """Seconds a request must wait before it is sent (0: the gate is open).

        Look again after the wait: a 429 that came meanwhile may have moved the gate.
        """
        remaining = self._until - self._clock()
        if remaining <= 0 or not self.burst:
            return 0.0
        return remaining + self._rng.uniform(0.0, self.spread * self._asked)

    async def wait(self, deadline: float | None = None) -> bool:
        """Wait while the gate is closed (looking again after each wait); ``False`` if that would
        pass ``deadline`` (a ``clock`` instant), and then this call does not wait."""
        seconds = self.delay()
        waited = False
        while seconds > 0:
            if deadline is not None and self._clock() + seconds >= deadline:
                return False
            if not waited:
                waited = True
                self.paced += 1
            await asleep(seconds)
            seconds = self.delay()
        return True
