"""The stub's latency and fault knobs for realistic profiles: a seeded lognormal latency, per-kind fault
rates, and draws keyed by prompt; deterministic for a seed, settable from StubOptions, the command line
and ``POST /_stub/options``."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from llm_stub import StubOptions, StubServer
from llm_stub.__main__ import build_parser, options_from_args
from llm_stub.faults import FaultPlan
from llm_stub.options import changed_options, parse_fault_rates
from llm_stub.process import stub_command
from tests.stub.helpers import chat_body

REALISTIC = StubOptions(
    latency_ms=2000, latency_p99_ms=10000, fault_rates={"429": 0.03, "hang": 0.005}, seed=11
)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


def test_lognormal_latency_has_the_median_and_p99_asked_for() -> None:
    plan = FaultPlan(REALISTIC)
    draws = [plan.draw()[1] for _ in range(40_000)]
    assert _quantile(draws, 0.5) == pytest.approx(2.0, rel=0.03)
    assert _quantile(draws, 0.99) == pytest.approx(10.0, rel=0.08)
    assert statistics.fmean(draws) == pytest.approx(REALISTIC.mean_latency_ms / 1000, rel=0.03)
    assert REALISTIC.mean_latency_ms == pytest.approx(2000 * 1.2705, rel=0.001)  # exp(sigma^2 / 2)
    assert min(draws) > 0


def test_fault_rates_per_kind() -> None:
    plan = FaultPlan(REALISTIC)
    n = 40_000
    kinds = Counter(plan.draw()[0] for _ in range(n))
    # within 4 standard deviations of the binomial counts
    for kind, rate in (("429", 0.03), ("hang", 0.005)):
        sd = (n * rate * (1 - rate)) ** 0.5
        assert abs(kinds[kind] - n * rate) < 4 * sd, kinds
    assert set(kinds) == {None, "429", "hang"}


def test_draws_follow_the_seed() -> None:
    def sequence(options: StubOptions) -> list[tuple[str | None, float]]:
        plan = FaultPlan(options)
        return [plan.draw() for _ in range(500)]

    first = sequence(REALISTIC)
    assert first == sequence(REALISTIC)
    assert first != sequence(changed_options(REALISTIC, {"seed": 12}))
    plan = FaultPlan(REALISTIC)
    plan.draw()
    plan.clear()  # a reset restarts the draws from the seed
    assert [plan.draw() for _ in range(500)] == first


def test_prompt_draws_do_not_depend_on_arrival_order() -> None:
    options = changed_options(REALISTIC, {"draws": "prompt", "fault_rates": {"429": 0.3, "hang": 0.2}})
    keys = [f"prompt-{i % 7}" for i in range(70)]

    def by_key(order: list[str]) -> dict[str, list[tuple[str | None, float]]]:
        plan = FaultPlan(options)
        seen: dict[str, list[tuple[str | None, float]]] = {}
        for key in order:
            seen.setdefault(key, []).append(plan.draw(key))
        return seen

    forward = by_key(keys)
    assert forward == by_key(list(reversed(keys))) == by_key(sorted(keys))
    # the k-th request of a prompt gets a draw of its own (a retry is not the same draw again)
    assert len(set(forward["prompt-0"])) == len(forward["prompt-0"])
    other_seed = FaultPlan(changed_options(options, {"seed": 99}))
    assert [other_seed.draw("prompt-0") for _ in range(10)] != forward["prompt-0"]


def test_sequence_draws_unchanged_without_the_new_knobs() -> None:
    """Options that do not use the new knobs draw exactly as before (same seed, same faults and jitter)."""
    options = StubOptions(latency_ms=100, jitter_ms=50, fail_rate=0.4, seed=5)
    plan = FaultPlan(options)
    rng = random.Random(5)
    for _ in range(200):
        fault = None
        if rng.random() < 0.4:
            fault = rng.choice(options.faults)
        latency = max(0.0, 100 + rng.uniform(-50, 50)) / 1000
        assert plan.draw() == (fault, latency)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"latency_p99_ms": 100.0, "latency_ms": 200.0}, "latency_p99_ms must be >="),
        ({"latency_p99_ms": 100.0, "latency_ms": 0}, "median"),
        ({"latency_p99_ms": 100.0, "latency_ms": 20.0, "jitter_ms": 5.0}, "jitter_ms must be 0"),
        ({"fault_rates": {"429": 1.5}}, "between 0 and 1"),
        ({"fault_rates": {"429": 0.6, "hang": 0.6}}, "add up to more than 1"),
        ({"fault_rates": {"teapot": 0.1}}, "unknown fault kind"),
        ({"draws": "shuffled"}, "draws must be one of"),
        ({"hold_until_in_flight": -1}, "hold_until_in_flight must be >= 0"),
        ({"hold_timeout_s": -1.0}, "hold_timeout_s must be >= 0"),
    ],
)
def test_bad_knobs_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StubOptions(**changes)


def test_fault_rates_text() -> None:
    assert parse_fault_rates("429=0.03, hang=0.005,") == {"429": 0.03, "hang": 0.005}
    with pytest.raises(ValueError, match="KIND=RATE"):
        parse_fault_rates("429")
    with pytest.raises(ValueError, match="unknown fault kind"):
        parse_fault_rates("teapot=0.1")


def test_command_line_sets_every_knob_and_round_trips() -> None:
    args = build_parser().parse_args(
        [
            "--latency-ms",
            "2000",
            "--latency-p99-ms",
            "10000",
            "--fault-rates",
            "429=0.03,hang=0.005",
            "--draws",
            "prompt",
            "--seed",
            "7",
            "--hold-until-in-flight",
            "50",
            "--hold-timeout-s",
            "4",
        ]
    )
    options = options_from_args(args)
    assert (options.latency_p99_ms, options.fault_rates, options.draws, options.seed) == (
        10000.0,
        {"429": 0.03, "hang": 0.005},
        "prompt",
        7,
    )
    assert (options.hold_until_in_flight, options.hold_timeout_s) == (50, 4.0)
    # what start_stub_process runs parses back to the same options
    command = stub_command(options, "127.0.0.1", 0)
    assert options_from_args(build_parser().parse_args(command[3:])) == options
    plain = StubOptions(latency_ms=5)
    assert options_from_args(build_parser().parse_args(stub_command(plain, "127.0.0.1", 0)[3:])) == plain


def _statuses(stub: StubServer, prompts: list[str]) -> list[tuple[str, int, str | None]]:
    out = []
    with httpx.Client(timeout=10) as client:
        for prompt in prompts:
            response = client.post(f"{stub.url}/chat/completions", json=chat_body(prompt))
            out.append((prompt, response.status_code, response.headers.get("retry-after-ms")))
    return out


def test_served_faults_and_latency_follow_the_prompt_whatever_the_order() -> None:
    options = StubOptions(
        latency_ms=2,
        latency_p99_ms=10,
        fault_rates={"429": 0.4},
        retry_after_s=0.25,
        draws="prompt",
        seed=3,
    )
    prompts = [f'say "p{i % 5}"' for i in range(20)]
    with StubServer(options) as stub:
        forward = _statuses(stub, prompts)
        stats = stub.stats(recent=100)
        stub.reset()
        backward = _statuses(stub, list(reversed(prompts)))
    assert sorted(forward) == sorted(backward)
    codes = Counter(code for _p, code, _h in forward)
    assert set(codes) == {200, 429} and codes[429] >= 3
    assert {h for _p, code, h in forward if code == 429} == {"250"}  # Retry-After carried by every 429
    assert stats["latency_draws"] == 20
    drawn = [r["latency_ms"] for r in stats["recent"]]
    assert all(d is not None and d > 0 for d in drawn)
    assert stats["latency_drawn_mean_ms"] == pytest.approx(statistics.fmean(drawn), abs=0.01)


def test_knobs_change_at_run_time_over_http() -> None:
    with StubServer(StubOptions()) as stub, httpx.Client(timeout=10) as client:
        origin = stub.url.rsplit("/v1", 1)[0]
        changed = client.post(
            f"{origin}/_stub/options",
            json={"latency_ms": 3, "latency_p99_ms": 6, "fault_rates": "hang=0.01", "draws": "prompt"},
        )
        assert changed.status_code == 200, changed.text
        body = changed.json()
        assert (body["latency_p99_ms"], body["fault_rates"], body["draws"]) == (6.0, {"hang": 0.01}, "prompt")
        refused = client.post(f"{origin}/_stub/options", json={"latency_p99_ms": 1})
        assert refused.status_code == 400 and "latency_p99_ms" in refused.text
        assert stub.options.latency_p99_ms == 6.0


async def _post_at_once(url: str, n: int) -> list[int]:
    async with httpx.AsyncClient(timeout=30) as client:
        responses = await asyncio.gather(
            *(client.post(f"{url}/chat/completions", json=chat_body('say "held"')) for _ in range(n))
        )
    return [r.status_code for r in responses]


async def test_a_hold_answers_nothing_until_enough_requests_are_in_flight() -> None:
    with StubServer(StubOptions(hold_until_in_flight=3, hold_timeout_s=30)) as stub:
        first = asyncio.ensure_future(_post_at_once(stub.url, 2))
        deadline = time.monotonic() + 20
        while stub.stats(recent=0)["in_flight"] < 2:  # both arrived ...
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        assert not first.done()  # ... and neither is answered: the hold waits for a third
        assert stub.stats(recent=0)["by_status"] == {}
        started = time.monotonic()
        assert await _post_at_once(stub.url, 1) == [200]  # the third opens the hold for all three
        assert await first == [200, 200]
        assert time.monotonic() - started < 10  # not the 30 s hold timeout
        assert stub.stats(recent=0)["max_in_flight"] == 3
        assert await _post_at_once(stub.url, 1) == [200]  # open for later requests too
        stub.set_options(hold_until_in_flight=2, hold_timeout_s=0.3)  # a new hold, closed again
        started = time.monotonic()
        assert await _post_at_once(stub.url, 1) == [200]  # never reached: answered at the timeout
        assert time.monotonic() - started >= 0.3
        assert stub.stats(recent=0)["by_status"] == {"200": 5}
