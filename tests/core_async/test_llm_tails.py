"""Short tails of the async LLM client: hedged requests, the idle timeout, shared Retry-After pacing.

And their pure parts (the time-to-first-byte window, the hedge budget, the gate), the
configuration switches, and that an idle client keeps no task and no timer of its own. What the
generated sync twin shares (the pure parts, the gate, streamed answers, the transports) is checked
for both (the ``twin`` fixture); it never hedges and has no idle timer.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from types import ModuleType
from typing import Any

import httpx
import pytest

import core_async.llm_wire
import core_async.ratelimit
import core_sync.llm_wire
import core_sync.ratelimit
from codeagent.config import AgentConfig, parse_config
from codeagent.errors import ConfigError, LLMConnectionError, LLMRateLimited, LLMTimeout
from core_async.components import build_llm
from core_async.llm_transport import AsyncEndpointPool, HTTPVersion, PoolLimits
from core_async.llm_wire import AsyncAnswer, TailPolicy
from tests.core_async.test_llm_client import chat_requests, client, llm_of, pool_of, stream_of, twin_class
from tests.parity._support import Impl, chat_messages

#: The wire modules (pure: no I/O) of the async client and of its generated twin.
WIRES = [core_async.llm_wire, core_sync.llm_wire]
GATES = [core_async.ratelimit.AsyncRetryGate, core_sync.ratelimit.SyncRetryGate]

# ----------------------------------------------------------------------------- the pure parts


@pytest.mark.parametrize("wire", WIRES, ids=["core_async", "core_sync"])
def test_the_quantile_window_is_exact_over_its_last_samples(wire: ModuleType) -> None:
    QuantileWindow = wire.QuantileWindow
    rng = random.Random(7)
    window = QuantileWindow(size=50)
    samples = [rng.lognormvariate(0.0, 1.0) for _ in range(400)]
    for n, sample in enumerate(samples, 1):
        window.add(sample)
        last = sorted(samples[max(0, n - 50) : n])
        assert len(window) == len(last)
        for q in (0.5, 0.95, 1.0):
            assert window.quantile(q) == last[max(0, math.ceil(q * len(last)) - 1)]
    assert QuantileWindow().quantile(0.95) is None
    assert window.quantile(0.95, min_samples=51) is None
    with pytest.raises(ValueError, match="size"):
        QuantileWindow(0)


@pytest.mark.parametrize("wire", WIRES, ids=["core_async", "core_sync"])
def test_the_hedge_budget_holds_its_ratio_over_a_sliding_window(wire: ModuleType) -> None:
    budget = wire.HedgeBudget(ratio=0.05, window=100, buckets=10)
    assert not budget.try_spend()  # nothing asked yet: no room
    spent = 0
    for _ in range(100):
        budget.request()
        spent += budget.try_spend()  # ask for a hedge at every request: the ratio decides
    assert spent == 5
    assert (budget.requests, budget.hedges) == (100, 5)
    for _ in range(50):  # half the window slides out, with its share of the hedges
        budget.request()
    assert budget.requests <= 100
    assert budget.hedges <= 0.05 * budget.requests
    assert budget.try_spend(ratio=1.0)  # a caller's own ratio
    with pytest.raises(ValueError, match="ratio"):
        wire.HedgeBudget(ratio=1.5)
    with pytest.raises(ValueError, match="window"):
        wire.HedgeBudget(window=0)


@pytest.mark.parametrize("gate_class", GATES, ids=["core_async", "core_sync"])
def test_an_isolated_429_closes_the_gate_for_nobody_but_a_burst_does(gate_class: type[Any]) -> None:
    now = [100.0]
    gate = gate_class(window=16, burst_share=0.25, spread=0.25, clock=lambda: now[0], rng=random.Random(1))
    for _ in range(12):
        gate.answered(False)
    gate.answered(True, 1.0)  # one 429 in 13 answers: its own request waits, nobody else
    assert not gate.burst
    assert gate.delay() == 0.0
    for _ in range(3):
        now[0] += 0.1
        gate.answered(True, 1.0)  # 4 of 16: a burst
    assert gate.burst
    delays = [gate.delay() for _ in range(50)]
    assert all(1.0 <= d <= 1.0 + 0.25 for d in delays)  # until the latest Retry-After, then spread
    assert max(delays) - min(delays) > 0.1
    now[0] += 1.0
    assert gate.delay() == 0.0  # the gate is open again, burst or not
    with pytest.raises(ValueError, match="window"):
        gate_class(window=0)


def test_a_gate_wait_looks_again_and_gives_up_at_the_deadline(twin: Impl) -> None:
    gate = twin_class(twin, "ratelimit", "RetryGate")(spread=0.0)
    for _ in range(4):
        gate.answered(True, 0.2)
    started = time.monotonic()
    assert not twin.run(gate.wait(deadline=started + 0.1))  # would pass the deadline: no wait at all
    assert time.monotonic() - started < 0.05
    mover = threading.Timer(0.1, gate.answered, (True, 0.2))  # moves the gate to 0.3 s from the start
    mover.start()
    try:
        assert twin.run(gate.wait())
    finally:
        mover.join()
    assert time.monotonic() - started >= 0.29
    assert gate.paced == 1


# ----------------------------------------------------------------------------- hedging


@pytest.fixture
def long_tail(stub: Any) -> Iterator[Any]:
    """The stub with a lognormal latency (median 2-5 ms, p99 40-60 ms) and maybe some hangs, put back
    as it was afterwards."""
    yield stub
    stub.set_options(latency_p99_ms=None, fault_rates={})


def _warm(pool: AsyncEndpointPool, url: str, n: int = 40) -> Any:
    """A client that never hedges, to teach the shared endpoint its time to first byte."""

    async def warm() -> None:
        async with client(url, pool=pool, tail=TailPolicy(hedge=False)) as warmer:
            for _ in range(n):
                await warmer.chat(chat_messages())

    return warm()


async def _until(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("version", ["auto", "http1", "http2"])
async def test_a_hung_attempt_is_hedged_at_the_observed_p95_and_counted_once(stub: Any, version: str) -> None:
    stub.set_options(latency_ms=10)
    async with AsyncEndpointPool(version) as pool:
        await _warm(pool, stub.url)
        [endpoint] = pool.endpoints()
        tail = endpoint.tail
        p95 = tail.ttfb.quantile(0.95)
        assert p95 is not None
        assert p95 < 0.5
        stub.reset()
        stub.set_options(latency_ms=10)
        stub.queue_faults(["hang"])
        async with client(stub.url, pool=pool, timeout=20.0, max_retries=0) as llm:
            started = time.monotonic()
            assert "notes.txt" in await llm.chat(chat_messages())
            elapsed = time.monotonic() - started
        assert elapsed < 1.0  # not the 20 s timeout: the hedge went at the p95 and answered
        assert (tail.requests, tail.hedges, tail.hedge_wins) == (41, 1, 1)
        assert tail.attempts == 41  # the copy is not an attempt of its own
        assert stub.stats()["by_path"]["/v1/chat/completions"] == 2
        if version != "http2":  # over HTTP/1.1 the hung request's connection is closed; httpcore's
            # HTTP/2 abandons a cancelled stream without a RST_STREAM, so the server finishes it alone
            await _until(lambda: stub.stats()["in_flight"] == 0)
            assert stub.stats()["client_disconnects"] == 1


async def test_the_first_attempt_may_win_and_then_the_copy_is_cancelled(stub: Any) -> None:
    stub.set_options(latency_ms=10)
    async with AsyncEndpointPool() as pool:
        await _warm(pool, stub.url)
        tail = pool.endpoints()[0].tail
        stub.reset()
        stub.set_options(latency_ms=0, hang_s=0.6)
        stub.queue_faults(["hang", "hang"])  # the first hangs 0.6 s, its copy (sent later) as long
        async with client(stub.url, pool=pool, timeout=20.0, max_retries=0) as llm:
            started = time.monotonic()
            assert "notes.txt" in await llm.chat(chat_messages())
            elapsed = time.monotonic() - started
            assert 0.55 < elapsed < 0.65 + tail.ttfb.quantile(0.95)  # type: ignore[operator]
            assert (tail.hedges, tail.hedge_wins) == (1, 0)
            await _until(lambda: stub.stats()["in_flight"] == 0, 0.4)  # not left to hang out its 0.6 s
        assert stub.stats()["client_disconnects"] == 1


async def test_no_hedge_before_the_window_has_its_samples(stub: Any) -> None:
    stub.queue_faults(["hang"])
    async with client(stub.url, timeout=0.5, max_retries=0) as llm:
        with pytest.raises(LLMTimeout):
            await llm.chat(chat_messages())
        assert llm.pool.endpoints()[0].tail.hedges == 0


async def _learned_p95(pool: AsyncEndpointPool, url: str, n: int, concurrency: int) -> float:
    """The endpoint's p95 time to first byte after ``n`` requests, ``concurrency`` at a time, none hedged.

    On a loaded machine (and under coverage) that is mostly the test process's own queueing, not the
    stub's latency: a tail meant to stand out has to be measured against it.
    """
    async with client(url, pool=pool, tail=TailPolicy(hedge=False), batch_concurrency=concurrency) as warmer:
        got = await warmer.complete_many([chat_messages()] * n)
        assert [r for r in got if not isinstance(r, str)] == []
    p95 = pool.endpoints()[0].tail.ttfb.quantile(0.95)
    assert p95 is not None
    return p95


async def test_hedges_stay_within_the_budget_under_a_long_tail(long_tail: Any) -> None:
    """A lognormal latency, and 4% of the answers hanging far past the p95 the endpoint has seen: every
    hang wants a hedge, as does each attempt that the machine's own noise pushes past the p95, more than
    the 5% budget has room for.

    The hang is five times the p95 learned first, so it stands out of what a loaded machine adds (the
    stub's 60 ms p99 alone once did not: no hedge was sent at all).
    """
    stub = long_tail
    stub.set_options(latency_ms=5, latency_p99_ms=60)
    async with AsyncEndpointPool() as pool:
        p95 = await _learned_p95(pool, stub.url, 40, 10)
        hang = max(1.0, 5 * p95)
        stub.set_options(fault_rates={"hang": 0.04}, hang_s=hang)
        patient = hang + 30  # an unhedged hang is answered late, not timed out
        async with client(stub.url, pool=pool, timeout=patient, max_retries=0, batch_concurrency=10) as llm:
            results = await llm.complete_many([chat_messages()] * 200)
        [endpoint] = pool.endpoints()
        tail = endpoint.tail
    assert [r for r in results if not isinstance(r, str)] == []
    assert tail.requests == 240
    assert 0 < tail.hedges <= 0.05 * tail.requests
    stats = stub.stats()
    assert stats["by_fault"].get("hang", 0) >= 2  # the tail was there (8 expected)
    # a copy cancelled before it was written never reaches the stub
    assert tail.attempts <= stats["by_path"]["/v1/chat/completions"] <= tail.attempts + tail.hedges


async def test_attempts_that_all_want_a_hedge_at_once_get_only_the_budget(stub: Any) -> None:
    """The stub turns slow for everyone at once: all 20 attempts pass the p95 learned before, and the
    5% budget of 60 requests lets 3 of them (at most) be hedged."""
    async with AsyncEndpointPool() as pool:
        p95 = await _learned_p95(pool, stub.url, 40, 1)
        stub.set_options(latency_ms=1000 * max(0.5, 5 * p95))
        async with client(stub.url, pool=pool, timeout=60, max_retries=0, batch_concurrency=20) as llm:
            results = await llm.complete_many([chat_messages()] * 20)
        tail = pool.endpoints()[0].tail
    assert all(isinstance(r, str) for r in results)
    assert tail.requests == 60
    assert 0 < tail.hedges <= 3
    assert stub.stats()["by_path"]["/v1/chat/completions"] <= 60 + tail.hedges


async def test_no_hedge_when_switched_off(long_tail: Any) -> None:
    stub = long_tail
    stub.set_options(latency_ms=2, latency_p99_ms=60)
    async with client(stub.url, max_retries=0, tail=TailPolicy(hedge=False)) as llm:
        await llm.complete_many([chat_messages()] * 200)
        assert llm.pool.endpoints()[0].tail.hedges == 0
    assert stub.stats()["by_path"]["/v1/chat/completions"] == 200


# ----------------------------------------------------------------------------- the idle timeout

GOOD_SSE = b'data: {"choices":[{"index":0,"delta":{"content":"hel"}}]}\n\ndata: {"choices":[{"index":0,"delta":{"content":"lo"}}]}\n\ndata: [DONE]\n\n'
GOOD_JSON = json.dumps(
    {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}}]}
).encode()


class _Stalling(httpx.AsyncByteStream):
    """A body that sends its first bytes, then nothing at all."""

    def __init__(self, first: bytes) -> None:
        self.first = first

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.first
        await asyncio.sleep(3600)


def _stalls_once(
    first: bytes, then: bytes, content_type: str
) -> tuple[Callable[[httpx.Request], httpx.Response], list[int]]:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        headers = {"content-type": content_type}
        if len(calls) == 1:
            return httpx.Response(200, headers=headers, stream=_Stalling(first))
        return httpx.Response(200, headers=headers, content=then)

    return handler, calls


@pytest.mark.parametrize("stream", [True, False])
async def test_an_answer_that_stalls_once_started_is_retried_after_the_idle_timeout(stream: bool) -> None:
    if stream:
        handler, calls = _stalls_once(GOOD_SSE[:60], GOOD_SSE, "text/event-stream")
    else:
        handler, calls = _stalls_once(GOOD_JSON[:20], GOOD_JSON, "application/json")
    pool = AsyncEndpointPool(wrap_transport=lambda _t: httpx.MockTransport(handler))
    policy = TailPolicy(hedge=False, stream_idle_timeout=0.3)
    async with (
        pool,
        client("http://llm.invalid/v1", pool=pool, tail=policy, stream=stream, timeout=30) as llm,
    ):
        started = time.monotonic()
        assert await llm.chat(chat_messages()) == "hello"
        assert 0.3 <= time.monotonic() - started < 1.5  # seconds, not the 30 s request timeout
        assert llm.pool.endpoints()[0].tail.idle_timeouts == 1
    assert len(calls) == 2


async def test_a_stream_that_stalls_mid_way_raises_after_the_idle_timeout() -> None:
    handler, _calls = _stalls_once(GOOD_SSE[:60], GOOD_SSE, "text/event-stream")
    pool = AsyncEndpointPool(wrap_transport=lambda _t: httpx.MockTransport(handler))
    async with (
        pool,
        client("http://llm.invalid/v1", pool=pool, tail=TailPolicy(stream_idle_timeout=0.3)) as llm,
    ):
        parts: list[str] = []

        async def read() -> None:
            async for part in llm.stream_chat(chat_messages()):
                parts.append(part)

        started = time.monotonic()
        with pytest.raises(LLMTimeout, match="stalled"):
            await read()
        assert parts == ["hel"]
        assert time.monotonic() - started < 1.5
        [endpoint] = llm.pool.endpoints()
        assert endpoint.in_flight == 0  # its slot came back


def test_streamed_chat_joins_the_deltas(twin: Impl, stub: Any) -> None:
    with llm_of(twin, stub.url, stream=True) as llm:
        streamed = llm.chat(chat_messages())
    with llm_of(twin, stub.url) as llm:
        assert llm.chat(chat_messages()) == streamed
    assert stub.stats()["by_path"]["/v1/chat/completions"] == 2


def test_a_streamed_answer_cut_short_is_retried(twin: Impl, stub: Any) -> None:
    stub.queue_faults(["malformed"])  # streamed: a chunk that is not JSON
    with llm_of(twin, stub.url, stream=True) as llm:
        assert "notes.txt" in llm.chat(chat_messages())
        assert llm.pool.endpoints()[0].tail.cut_short == 1
    assert stub.stats()["by_path"]["/v1/chat/completions"] == 2


def test_a_stream_broken_half_way(twin: Impl, stub: Any) -> None:
    """The stub's ``cut``: a streamed 200 whose connection breaks after half the chunks. Joined by
    ``chat`` it is retried like a reset; read by ``stream_chat`` the chunks that came are handed out,
    then the break is a connection error."""
    stub.queue_faults(["cut"])
    with llm_of(twin, stub.url, stream=True) as llm:
        assert "notes.txt" in llm.chat(chat_messages())
        stub.queue_faults(["cut"])
        parts: list[str] = []
        with pytest.raises(LLMConnectionError, match="stream broken"):
            stream_of(twin, llm, parts, chat_messages())
        assert parts
        [endpoint] = llm.pool.endpoints()
        assert endpoint.in_flight == 0  # its slot came back
    assert chat_requests(stub) == 3
    assert stub.stats()["by_fault"] == {"cut": 2}


# ----------------------------------------------------------------------------- Retry-After pacing


def test_a_closed_gate_holds_a_new_request_and_refuses_one_it_would_make_late(twin: Impl, stub: Any) -> None:
    """Four 429s in a row are a burst: the gate stays closed until the last one's Retry-After has run.
    A request that could not be sent before its deadline fails at once, sending nothing; one without
    a deadline waits for the gate, then goes."""
    stub.set_options(retry_after_s=2.5)
    stub.queue_faults(["429"] * 4)
    with llm_of(twin, stub.url, max_retries=0) as llm:
        for _ in range(4):
            last = time.monotonic()
            with pytest.raises(LLMRateLimited):  # no retry left: the 429 ends its request
                llm.chat(chat_messages())
        [endpoint] = llm.pool.endpoints()
        assert endpoint.tail.gate.burst
        started = time.monotonic()
        with pytest.raises(LLMRateLimited, match="past this request's deadline"):
            llm.chat(chat_messages(), deadline=started + 0.8)  # the gate has 1.7 s or more to go
        assert time.monotonic() - started < 0.8
        assert chat_requests(stub) == 4
        assert "notes.txt" in llm.chat(chat_messages())
        assert time.monotonic() >= last + 2.5  # not before the gate opened
        assert endpoint.tail.gate.paced == 1
    assert chat_requests(stub) == 5


async def test_a_burst_of_429s_holds_every_request_until_the_latest_retry_after(stub: Any) -> None:
    """Once 429s are a quarter of the recent answers, nothing is sent while the latest Retry-After runs:
    not the retries, not new requests (the first one released meets the next 429 and closes the gate again).
    """
    stub.set_options(retry_after_s=0.3)
    events: list[tuple[float, str]] = []

    def on_request() -> None:
        events.append((time.monotonic(), "send"))

    def on_response(response: AsyncAnswer) -> None:
        events.append((time.monotonic(), str(response.status_code)))

    async with client(stub.url, max_retries=8, tail=TailPolicy(hedge=False)) as llm:
        await llm.chat(chat_messages())
        [endpoint] = llm.pool.endpoints()
        endpoint.on_request.append(on_request)
        endpoint.on_response.append(on_response)
        stub.queue_faults(["429"] * 8)
        calls = []
        for _ in range(8):  # eight requests, 30 ms apart
            calls.append(asyncio.ensure_future(llm.chat(chat_messages())))
            await asyncio.sleep(0.03)
        results = await asyncio.gather(*calls)
        assert endpoint.tail.gate.paced >= 4
    assert all("notes.txt" in r for r in results)
    limited = [at for at, what in events if what == "429"]
    assert len(limited) == 8
    held = [at for at, what in events if what == "send" and at > limited[3]]  # once the burst is seen
    assert held
    for sent in held:
        latest = max(at for at in limited if at < sent)
        assert sent >= latest + 0.3 - 0.01  # not while the latest Retry-After runs


async def test_without_pacing_each_429_retries_on_its_own_schedule(stub: Any) -> None:
    stub.set_options(retry_after_s=0.3)
    sent: list[float] = []
    limited: list[float] = []

    def on_request() -> None:
        sent.append(time.monotonic())

    def on_response(response: AsyncAnswer) -> None:
        if response.status_code == 429:
            limited.append(time.monotonic())

    policy = TailPolicy(hedge=False, pace_retry_after=False)
    async with client(stub.url, max_retries=2, tail=policy) as llm:
        await llm.chat(chat_messages())
        [endpoint] = llm.pool.endpoints()
        endpoint.on_request.append(on_request)
        endpoint.on_response.append(on_response)
        stub.queue_faults(["429"] * 6)
        calls = []
        for _ in range(6):
            calls.append(asyncio.ensure_future(llm.chat(chat_messages())))
            await asyncio.sleep(0.03)
        await asyncio.gather(*calls)
    assert min(sorted(sent)[6:]) < max(limited) + 0.3 - 0.05


async def test_an_isolated_429_delays_only_its_own_request(stub: Any) -> None:
    stub.set_options(retry_after_s=2.0, latency_ms=5)
    async with client(stub.url, tail=TailPolicy(hedge=False)) as llm:
        for _ in range(15):
            await llm.chat(chat_messages())
        stub.queue_faults(["429"])
        limited = asyncio.ensure_future(llm.chat(chat_messages()))
        await asyncio.sleep(0.05)
        await asyncio.gather(*(llm.chat(chat_messages()) for _ in range(10)))
        # Held behind the 429's 2 s, the others would end after it: they end while it still waits.
        assert not limited.done()
        await limited
        assert llm.pool.endpoints()[0].tail.gate.paced == 0


# ----------------------------------------------------------------------------- idle, config


async def test_an_idle_client_keeps_no_task_and_no_timer(long_tail: Any) -> None:
    """Once its calls are over, a client that hedged (a copy that won, one that lost, and a batch over a
    long tail with a hedge timer armed for every attempt) leaves no task and no timer on the loop, and
    no request at the server."""
    stub = long_tail
    loop = asyncio.get_running_loop()

    async def idle() -> None:
        await _until(lambda: stub.stats(recent=0)["in_flight"] == 0)  # the loser's connection was closed
        # A cancelled loser is not awaited by the winner (its cleanup would add to the answer's latency):
        # it may take a few turns of the loop to unwind out of aiohttp, and then it is gone.
        await _until(lambda: asyncio.all_tasks() == {asyncio.current_task()}, seconds=2.0)
        assert [h for h in loop._scheduled if not h.cancelled()] == []  # type: ignore[attr-defined]

    async with AsyncEndpointPool(HTTPVersion.HTTP1) as pool:
        p95 = await _learned_p95(pool, stub.url, 40, 1)  # and room for two hedges in the 5% budget
        tail = pool.endpoints()[0].tail
        async with client(stub.url, pool=pool, timeout=60, max_retries=0, batch_concurrency=10) as llm:
            stub.set_options(hang_s=30)
            stub.queue_faults(["hang", "ok"])  # the first attempt hangs: its copy answers and wins
            assert "notes.txt" in await llm.chat(chat_messages())
            await idle()
            stub.set_options(latency_ms=max(0.5, 5 * p95) * 1000)
            stub.queue_faults(["ok", "hang"])  # the first is slow but answers; its copy would hang
            assert "notes.txt" in await llm.chat(chat_messages())
            await idle()
            assert (tail.hedges, tail.hedge_wins) == (2, 1)
            stub.set_options(latency_ms=2, latency_p99_ms=40)
            assert all(isinstance(r, str) for r in await llm.complete_many([chat_messages()] * 60))
            await idle()


async def test_aiohttp_keeps_a_timer_only_while_idle_connections_are_kept(stub: Any) -> None:
    loop = asyncio.get_running_loop()
    pool = AsyncEndpointPool(limits=PoolLimits(keepalive_expiry=0.3))
    async with pool, client(stub.url, pool=pool) as llm:
        await llm.complete_many([chat_messages()] * 20)
        assert asyncio.all_tasks() == {asyncio.current_task()}
        await asyncio.sleep(1.5)  # the connector closes its expired connections, then stops its timer
        assert [h for h in loop._scheduled if not h.cancelled()] == []  # type: ignore[attr-defined]


def test_the_switches_are_in_the_configuration() -> None:
    config = parse_config(
        '{"llm": {"transport": "http2", "hedge": false, "stream": true,'
        ' "stream_idle_timeout": null, "pace_retry_after": false}}'
    )
    llm = build_llm(config, "http://127.0.0.1:9/v1")
    assert llm.transport is HTTPVersion.HTTP2
    assert llm.tail == TailPolicy(hedge=False, stream_idle_timeout=None, pace_retry_after=False)
    assert llm.stream
    default = build_llm(AgentConfig(), "http://127.0.0.1:9/v1")
    assert default.tail == TailPolicy()
    assert default.transport is HTTPVersion.AUTO
    assert not default.stream
    assert build_llm(AgentConfig(), "http://127.0.0.1:9/v1", replay=True).tail == TailPolicy.off()
    with pytest.raises(ConfigError, match="transport"):
        parse_config('{"llm": {"transport": "http3"}}')


def test_every_transport_answers_and_says_which_it_is(twin: Impl, stub: Any) -> None:
    with pool_of(twin) as pool:
        for version in ["auto", "aiohttp", "http1", "http2", "probe"]:
            llm = twin.llm(stub.url, max_retries=0, pool=pool.target, transport=version)
            assert "notes.txt" in llm.chat(chat_messages())
        endpoints = pool.endpoints()
        views = [e.tail.view() for e in endpoints]
    # The async client's default is aiohttp (auto and aiohttp share one endpoint); the twin has no
    # aiohttp, and speaks HTTP/1.1 on httpcore for both (auto and http1 share one endpoint then).
    # probe found HTTP/2 and speaks it on an endpoint of its own.
    default = "aiohttp" if twin.is_async else "http1"
    assert sorted((e.transport, e.http_version) for e in endpoints) == sorted(
        [(default, "HTTP/1.1"), ("http1", "HTTP/1.1"), ("http2", "HTTP/2"), ("http2", "HTTP/2")]
    )
    assert sorted(v["requests"] for v in views) == [1, 1, 1, 2]
    assert all(v["attempts"] == v["requests"] and v["ttfb_samples"] == v["requests"] for v in views)
