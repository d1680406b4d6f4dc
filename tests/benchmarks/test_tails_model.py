"""The hedging model (benchmarks/tails_model.py): the bound the measured tails are read against."""

from __future__ import annotations

from benchmarks import tails_model


def test_one_hedge_at_the_p95_within_its_budget_shortens_the_p99_not_the_p50() -> None:
    hedged = tails_model.Hedged()
    old = tails_model.quantiles(tails_model.legacy, 20_000, 7)
    new = tails_model.quantiles(hedged, 20_000, 7)
    assert hedged.hedges <= 0.05 * 20_000 + 1  # the budget holds
    assert hedged.hedges >= 0.04 * 20_000  # and is spent: about 5% of attempts have no answer by the p95
    assert new[1] < 0.85 * old[1]
    assert abs(new[0] - old[0]) < 0.05 * old[0]


def test_the_draws_follow_the_stub_profile() -> None:
    rng = tails_model.random.Random(3)
    draws = [tails_model.draw(rng) for _ in range(40_000)]
    latencies = sorted(latency for _fault, latency in draws)
    assert 190 < latencies[len(latencies) // 2] < 210
    assert 900 < latencies[int(0.99 * len(latencies))] < 1100
    faults = [fault for fault, _latency in draws if fault is not None]
    assert 0.03 < len(faults) / len(draws) < 0.04
