"""Latency guards of the endpoint pool: no head-of-line wait over HTTP/2, no pool churn over HTTP/1.1."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpcore
import httpx

from core_async import _httpcore_fixes as httpcore_fixes
from core_async.llm_transport import AsyncEndpointPool, AsyncLaneTransport, HTTPVersion, PoolLimits
from core_async.llm_wire import TailPolicy
from tests.core_async.test_llm_client import client
from tests.parity._support import chat_messages


async def _until(predicate: Any) -> None:
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached within 5 s")


async def test_an_answered_stream_does_not_wait_behind_streams_still_waiting(stub: Any) -> None:
    """Two hanging streams on the connection must not hold back a third stream's answer.

    httpcore's own read lock hands the connection to the streams in arrival order: the second
    hanging stream would read (and block) while the third one's answer is already in memory.
    """
    stub.set_options(hang_s=3.0)
    stub.queue_faults(["hang", "hang"])
    async with client(stub.url, max_retries=0, http_version="http2") as llm:
        hanging = [asyncio.ensure_future(llm.chat(chat_messages())) for _ in range(2)]
        await _until(lambda: stub.stats()["in_flight"] == 2)
        started = time.monotonic()
        assert isinstance(await llm.chat(chat_messages()), str)
        elapsed = time.monotonic() - started
        assert [e.http_version for e in llm.pool.endpoints()] == ["HTTP/2"]
        for task in hanging:
            task.cancel()
        await asyncio.gather(*hanging, return_exceptions=True)
    assert elapsed < 1.0


async def test_streams_cancelled_while_waiting_for_a_read_never_stall_the_others(stub: Any) -> None:
    """Half the requests give up mid-wait (some while they are the reader, some while woken to read
    next); every other request on the connection still gets its answer."""
    stub.set_options(latency_ms=40, jitter_ms=40)
    async with client(stub.url, max_retries=0, http_version="http2") as llm:
        for _ in range(3):
            quitters = [
                asyncio.ensure_future(llm.chat(chat_messages(), deadline=time.monotonic() + 0.005 * i))
                for i in range(1, 101)
            ]
            keepers = [llm.chat(chat_messages(), deadline=time.monotonic() + 5.0) for _ in range(100)]
            results = await asyncio.gather(*keepers, return_exceptions=True)
            assert all(isinstance(r, str) for r in results), results
            await asyncio.gather(*quitters, return_exceptions=True)
        assert [e.connections_opened for e in llm.pool.endpoints()] == [1]


async def test_http1_requests_never_fight_over_a_connection(stub: Any) -> None:
    """64 at once over 64 lanes: no ``ConnectionNotAvailable`` round trips, one connection per lane."""
    stub.set_options(latency_ms=20)
    failovers = 0
    original = httpcore.AsyncHTTP11Connection.handle_async_request

    async def counting(self: Any, request: Any) -> Any:
        nonlocal failovers
        try:
            return await original(self, request)
        except httpcore.ConnectionNotAvailable:
            failovers += 1
            raise

    httpcore.AsyncHTTP11Connection.handle_async_request = counting  # type: ignore[method-assign]
    try:
        async with client(stub.url, http_version=HTTPVersion.HTTP1, tail=TailPolicy(hedge=False)) as llm:
            for _ in range(3):
                results = await asyncio.gather(*(llm.chat(chat_messages()) for _ in range(64)))
                assert all(isinstance(r, str) for r in results)
            [endpoint] = llm.pool.endpoints()
    finally:
        httpcore.AsyncHTTP11Connection.handle_async_request = original  # type: ignore[method-assign]
    assert failovers == 0
    assert endpoint.connections_opened == 64


async def test_lanes_are_reused_last_in_first_out(stub: Any) -> None:
    pool = AsyncEndpointPool(HTTPVersion.HTTP1, limits=PoolLimits(http1_connections=4))
    async with client(stub.url, pool=pool) as llm:
        for _ in range(5):
            await llm.chat(chat_messages())
        await asyncio.gather(*(llm.chat(chat_messages()) for _ in range(3)))
        await llm.chat(chat_messages())
        [endpoint] = pool.endpoints()
        assert endpoint.connections_opened == 3
    await pool.aclose()


async def test_a_lane_comes_back_after_a_failure_and_after_a_stream() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ConnectError("refused")
        return httpx.Response(200, content=b"ok")

    lanes: list[httpx.AsyncBaseTransport] = []

    def make_lane() -> httpx.AsyncBaseTransport:
        lanes.append(httpx.MockTransport(handler))
        return lanes[-1]

    async with httpx.AsyncClient(transport=AsyncLaneTransport(make_lane, 1)) as http:
        try:
            await http.get("http://x/")
        except httpx.ConnectError:
            pass
        async with http.stream("GET", "http://x/") as response:
            assert await response.aread() == b"ok"
        assert (await asyncio.wait_for(http.get("http://x/"), 1.0)).content == b"ok"
    assert len(lanes) == 1


def test_the_h2_read_fix_is_installed_once() -> None:
    from httpcore._async.http2 import AsyncHTTP2Connection

    assert httpcore_fixes.install()
    wrapped = AsyncHTTP2Connection._receive_events
    assert httpcore_fixes.install()
    assert AsyncHTTP2Connection._receive_events is wrapped
    assert getattr(wrapped, "codeagent_shared_read", False)
