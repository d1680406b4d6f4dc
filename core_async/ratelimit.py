"""A token bucket shared by every caller of an endpoint (optional request rate limit)."""

from __future__ import annotations

import time
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
