"""Short tails of the async LLM client: hedged requests, the idle timeout, shared Retry-After pacing.

And their pure parts (the time-to-first-byte window, the hedge budget, the gate), the
configuration switches, and that an idle client keeps no task and no timer of its own.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from codeagent.config import AgentConfig, parse_config
from codeagent.errors import ConfigError, LLMTimeout
from core_async.components import build_llm
from core_async.llm import AsyncLLMClient
from core_async.llm_transport import AsyncEndpointPool, HTTPVersion, PoolLimits
from core_async.llm_wire import HedgeBudget, QuantileWindow, TailPolicy
from core_async.ratelimit import AsyncRetryGate
from tests.core_async.test_llm_client import client
from tests.parity._support import chat_messages

# ----------------------------------------------------------------------------- the pure parts


def test_the_quantile_window_is_exact_over_its_last_samples() -> None:
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


def test_the_hedge_budget_holds_its_ratio_over_a_sliding_window() -> None:
    budget = HedgeBudget(ratio=0.05, window=100, buckets=10)
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


def test_an_isolated_429_closes_the_gate_for_nobody_but_a_burst_does() -> None:
    now = [100.0]
    gate = AsyncRetryGate(
        window=16, burst_share=0.25, spread=0.25, clock=lambda: now[0], rng=random.Random(1)
    )
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


async def test_a_gate_wait_looks_again_and_gives_up_at_the_deadline() -> None:
    gate = AsyncRetryGate(spread=0.0)
    for _ in range(4):
        gate.answered(True, 0.2)
    started = time.monotonic()
    assert not await gate.wait(deadline=started + 0.1)  # would pass the deadline: no wait at all
    assert time.monotonic() - started < 0.05

    async def another_429() -> None:
        await asyncio.sleep(0.1)
        gate.answered(True, 0.2)  # moves the gate to 0.3 s from the start

    mover = asyncio.ensure_future(another_429())
    assert await gate.wait()
    assert time.monotonic() - started >= 0.29
    assert gate.paced == 1
    await mover


# ----------------------------------------------------------------------------- hedging


@pytest.fixture
def long_tail(stub: Any) -> Iterator[Any]:
    """The stub with a lognormal latency (median 2-5 ms, p99 40-60 ms), put back as it was afterwards."""
    yield stub
    stub.set_options(latency_p99_ms=None)


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


async def test_hedges_stay_within_the_budget_under_a_long_tail(long_tail: Any) -> None:
    stub = long_tail
    stub.set_options(latency_ms=5, latency_p99_ms=60)
    async with client(stub.url, max_retries=0, batch_concurrency=20) as llm:  # 20 at a time: the window fills
        results = await llm.complete_many([chat_messages()] * 400, per_request_timeout=10)
        tail = llm.pool.endpoints()[0].tail
    assert all(isinstance(r, str) for r in results)
    assert tail.requests == 400
    assert 0 < tail.hedges <= 0.05 * tail.requests
    # a copy cancelled before it was written never reaches the stub
    assert tail.attempts <= stub.stats()["by_path"]["/v1/chat/completions"] <= tail.attempts + tail.hedges


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


async def test_streamed_chat_joins_the_deltas(stub: Any) -> None:
    async with client(stub.url, stream=True) as llm:
        streamed = await llm.chat(chat_messages())
    async with client(stub.url) as llm:
        assert await llm.chat(chat_messages()) == streamed
    assert stub.stats()["by_path"]["/v1/chat/completions"] == 2


async def test_a_streamed_answer_cut_short_is_retried(stub: Any) -> None:
    stub.queue_faults(["malformed"])  # streamed: a chunk that is not JSON
    async with client(stub.url, stream=True) as llm:
        assert "notes.txt" in await llm.chat(chat_messages())
        assert llm.pool.endpoints()[0].tail.cut_short == 1
    assert stub.stats()["by_path"]["/v1/chat/completions"] == 2


# ----------------------------------------------------------------------------- Retry-After pacing


async def test_a_burst_of_429s_holds_every_request_until_the_latest_retry_after(stub: Any) -> None:
    """Once 429s are a quarter of the recent answers, nothing is sent while the latest Retry-After runs:
    not the retries, not new requests (the first one released meets the next 429 and closes the gate again).
    """
    stub.set_options(retry_after_s=0.3)
    events: list[tuple[float, str]] = []

    async def on_request(request: httpx.Request) -> None:
        events.append((time.monotonic(), "send"))

    async def on_response(response: httpx.Response) -> None:
        events.append((time.monotonic(), str(response.status_code)))

    async with client(stub.url, max_retries=8, tail=TailPolicy(hedge=False)) as llm:
        await llm.chat(chat_messages())
        [endpoint] = llm.pool.endpoints()
        endpoint.client.event_hooks["request"].append(on_request)
        endpoint.client.event_hooks["response"].append(on_response)
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

    async def on_request(request: httpx.Request) -> None:
        sent.append(time.monotonic())

    async def on_response(response: httpx.Response) -> None:
        if response.status_code == 429:
            limited.append(time.monotonic())

    policy = TailPolicy(hedge=False, pace_retry_after=False)
    async with client(stub.url, max_retries=2, tail=policy) as llm:
        await llm.chat(chat_messages())
        [endpoint] = llm.pool.endpoints()
        endpoint.client.event_hooks["request"].append(on_request)
        endpoint.client.event_hooks["response"].append(on_response)
        stub.queue_faults(["429"] * 6)
        calls = []
        for _ in range(6):
            calls.append(asyncio.ensure_future(llm.chat(chat_messages())))
            await asyncio.sleep(0.03)
        await asyncio.gather(*calls)
    assert min(sorted(sent)[6:]) < max(limited) + 0.3 - 0.05


async def test_an_isolated_429_delays_only_its_own_request(stub: Any) -> None:
    stub.set_options(retry_after_s=0.5, latency_ms=5)
    async with client(stub.url, tail=TailPolicy(hedge=False)) as llm:
        for _ in range(15):
            await llm.chat(chat_messages())
        stub.queue_faults(["429"])
        limited = asyncio.ensure_future(llm.chat(chat_messages()))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await asyncio.gather(*(llm.chat(chat_messages()) for _ in range(10)))
        assert time.monotonic() - started < 0.3  # not held behind the 429's half second
        await limited
        assert llm.pool.endpoints()[0].tail.gate.paced == 0


# ----------------------------------------------------------------------------- idle, config


async def test_an_idle_client_keeps_no_task_and_no_timer(long_tail: Any) -> None:
    stub = long_tail
    stub.set_options(latency_ms=2, latency_p99_ms=40)
    loop = asyncio.get_running_loop()
    async with client(stub.url, http_version=HTTPVersion.HTTP1, batch_concurrency=10) as llm:
        await llm.complete_many([chat_messages()] * 200)
        assert llm.pool.endpoints()[0].tail.hedges > 0  # hedges were armed, sent, won and lost
        await asyncio.sleep(0.05)
        assert asyncio.all_tasks() == {asyncio.current_task()}
        assert [h for h in loop._scheduled if not h.cancelled()] == []  # type: ignore[attr-defined]


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


async def test_every_transport_answers_and_says_which_it_is(stub: Any) -> None:
    async with AsyncEndpointPool() as pool:
        for version in ["auto", "aiohttp", "http1", "http2", "probe"]:
            llm = AsyncLLMClient(stub.url, "k", "stub-coder", 5.0, 0, pool=pool, transport=version)
            assert "notes.txt" in await llm.chat(chat_messages())
        endpoints = pool.endpoints()
    # auto and aiohttp share one endpoint; probe found HTTP/2 and speaks it on an endpoint of its own
    assert sorted((e.transport, e.http_version) for e in endpoints) == [
        ("aiohttp", "HTTP/1.1"),
        ("http1", "HTTP/1.1"),
        ("http2", "HTTP/2"),
        ("http2", "HTTP/2"),
    ]
