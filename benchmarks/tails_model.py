"""What hedging can buy at best: the scaled realistic profile simulated, without any client overhead.

``python -m benchmarks.tails_model [--requests N] [--seed S]`` prints p50 / p99 per request for

* the legacy client: attempts in a row; a hang costs the 2 s timeout, a 429 its Retry-After,
  then a full-jitter backoff (base 0.5 s) after a hang, as ``legacy/llm.py`` does;
* the async client's rule (``core_async/llm.py``): one hedge per request, sent when an attempt
  has no first byte by the p95 of the latency distribution, within a budget of 5% of requests;
  the first answer wins.

Same draws as the stub (``llm_stub/faults.py``): a lognormal latency (median 200 ms, p99
1,000 ms), 3% 429 after the latency with Retry-After 0.1 s, 0.5% hangs. No queueing, no CPU, no
network: the bound the measured figures (``benchmarks/micro/test_llm_transports.py::tails``)
can approach, not a measurement. Its answer on the day it was written (100,000 requests, seed 1):
legacy p99 1,254 ms, async 924 ms, a ratio of 0.74; most of what is left above the async p99 are requests whose
first attempt and hedge were both slow (one hedge per request is the rule). With the budget at 5% no other
quantile does better (``--quantile 0.93``: 0.77, ``0.9``: 0.82: an earlier hedge spends the budget on
requests that would have answered); below 0.7 takes both an earlier hedge and more hedges
(``--quantile 0.93 --budget 0.1``: 0.685 with 7.7% hedged).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
from collections.abc import Callable

MEDIAN_MS = 200.0
P99_MS = 1000.0
SIGMA = math.log(P99_MS / MEDIAN_MS) / 2.3263478740408408  # z of the 99th percentile
RATE_429 = 0.03
RATE_HANG = 0.005
RETRY_AFTER_MS = 100.0
TIMEOUT_MS = 2000.0
ATTEMPTS = 4  # the first and 3 retries
HEDGE_QUANTILE = 0.95
HEDGE_BUDGET = 0.05


def latency_quantile(q: float) -> float:
    """The ``q`` quantile of the latency distribution, in ms."""
    return MEDIAN_MS * math.exp(statistics.NormalDist().inv_cdf(q) * SIGMA)


Attempt = tuple[str | None, float]  # (fault, latency ms)


def draw(rng: random.Random) -> Attempt:
    """One attempt's fault (``429``, ``hang`` or ``None``) and latency."""
    point = rng.random()
    fault = "429" if point < RATE_429 else "hang" if point < RATE_429 + RATE_HANG else None
    return fault, rng.lognormvariate(math.log(MEDIAN_MS), SIGMA)


def alone(fault: str | None, latency: float, attempt: int, rng: random.Random) -> tuple[float, bool]:
    """``(ms spent, answered)`` of one attempt nobody races: a hang costs the timeout and a backoff,
    a 429 its latency and Retry-After."""
    if fault == "hang":
        return TIMEOUT_MS + rng.uniform(0.0, 500.0 * 2**attempt), False
    if fault == "429":
        return latency + RETRY_AFTER_MS, False
    return latency, True


def legacy(rng: random.Random) -> float:
    """Milliseconds one request takes with the legacy client."""
    spent = 0.0
    for attempt in range(ATTEMPTS):
        cost, answered = alone(*draw(rng), attempt, rng)
        spent += cost
        if answered:
            return spent
    return spent


class Hedged:
    """The async client's rule, with its budget carried from request to request."""

    def __init__(self, quantile: float = HEDGE_QUANTILE, budget: float = HEDGE_BUDGET) -> None:
        self.hedge_at = latency_quantile(quantile)
        self.budget = budget
        self.tokens = 0.0
        self.hedges = 0

    def __call__(self, rng: random.Random) -> float:
        """Milliseconds one request takes with one hedge at the p95, within the budget."""
        spent, hedged = 0.0, False
        self.tokens += self.budget
        for attempt in range(ATTEMPTS):
            fault, latency = draw(rng)
            first = math.inf if fault == "hang" else latency
            if not hedged and first > self.hedge_at and self.tokens >= 1.0:
                self.tokens -= 1.0
                self.hedges += 1
                hedged = True
                copy_fault, copy_latency = draw(rng)
                copy = self.hedge_at + (math.inf if copy_fault == "hang" else copy_latency)
                answers = [t for t, f in ((first, fault), (copy, copy_fault)) if f is None]
                if answers:
                    return spent + min(answers)
                ends = [TIMEOUT_MS if f == "hang" else t for t, f in ((first, fault), (copy, copy_fault))]
                spent += min(ends) + RETRY_AFTER_MS
                continue
            cost, answered = alone(fault, latency, attempt, rng)
            spent += cost
            if answered:
                return spent
        return spent


def quantiles(client: Callable[[random.Random], float], n: int, seed: int) -> tuple[float, float]:
    """(p50, p99) of ``n`` simulated requests."""
    rng = random.Random(seed)
    walls = sorted(client(rng) for _ in range(n))
    return walls[n // 2], walls[min(n - 1, int(0.99 * n))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--quantile", type=float, default=HEDGE_QUANTILE, help="hedge at this latency quantile"
    )
    parser.add_argument("--budget", type=float, default=HEDGE_BUDGET, help="hedges per request at most")
    args = parser.parse_args()
    old = quantiles(legacy, args.requests, args.seed)
    hedged = Hedged(args.quantile, args.budget)
    new = quantiles(hedged, args.requests, args.seed)
    print(
        f"hedge at {hedged.hedge_at:.0f} ms (p{args.quantile * 100:g}), budget {args.budget:.0%}:"
        f" {hedged.hedges / args.requests:.1%} of requests hedged"
    )
    print(f"legacy: p50 {old[0]:.0f} ms, p99 {old[1]:.0f} ms")
    print(f"async:  p50 {new[0]:.0f} ms, p99 {new[1]:.0f} ms; p99 ratio {new[1] / old[1]:.3f}")


if __name__ == "__main__":
    main()
