"""The stub is the far end of every benchmark: 1,000 concurrent requests on HTTP/2 and HTTP/1.1.

Clients and their limits, measured on this 2-core machine:

* httpx (httpcore 1.0) never runs more than 100 streams at once on one HTTP/2
  connection (it advertises and honours MAX_CONCURRENT_STREAMS=100 on its own
  side), so through httpx 1,000 requests share one connection 100 at a time;
  a bare h2 client proves the stub holds all 1,000 at once on one connection.
* httpx's connection pool costs O(requests x connections) per event: one
  AsyncClient driving 1,000 HTTP/1.1 connections spends ~30 s of client CPU,
  so the HTTP/1.1 test spreads 1,000 connections over 20 clients, and a bare
  asyncio client opens 1,000 connections from one place.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

import httpx

from llm_stub import StubOptions, StubServer
from tests.stub.h2_client import BareH2Client, post_many
from tests.stub.helpers import apply_reply, chat_body, reply_text

N = 1000
BODY = chat_body('append a line "x" to file notes.txt', {"notes.txt": "a\nb\n"})

#: The stub answers nothing until all N requests are in flight at once, so ``max_in_flight == N``
#: proves the stub held them together whatever the load on the machine (a fixed latency only
#: hoped the last request would arrive before the first answer: 2 s once fell short, and a 200 ms
#: run measured its wall time). A hold that times out lets the answers go, and the count falls short.
HOLD = StubOptions(hold_until_in_flight=N, hold_timeout_s=45)
#: Longer than the hold: a client waits out the longest hold and the answers after it.
CLIENT_TIMEOUT_S = 60


async def test_1000_concurrent_over_one_http2_connection_with_httpx() -> None:
    # The first answers wait until 50 streams are in flight together (half httpx's cap), then 200 ms each.
    options = StubOptions(latency_ms=200, hold_until_in_flight=50, hold_timeout_s=45)
    with StubServer(options) as stub:
        async with httpx.AsyncClient(http1=False, http2=True, timeout=CLIENT_TIMEOUT_S) as client:
            responses = await asyncio.gather(
                *(client.post(f"{stub.url}/chat/completions", json=BODY) for _ in range(N))
            )
        stats = stub.stats(recent=0)
    assert [r.status_code for r in responses] == [200] * N
    assert {r.http_version for r in responses} == {"HTTP/2"}
    assert apply_reply(reply_text(responses[-1].json()), {"notes.txt": "a\nb\n"}) == {
        "notes.txt": "a\nb\nx\n"
    }
    assert stats["by_http_version"] == {"2": N}
    assert stats["connections_seen"] == 1
    # httpx runs at most 100 streams at once on a connection; sequential requests would show 1 (and
    # never open the hold: every request would wait out its 45 s).
    assert stats["max_in_flight"] >= 50


async def test_1000_concurrent_streams_at_once_on_one_http2_connection() -> None:
    # Every stream is held until all 1,000 are in flight (see HOLD), however loaded the machine.
    with StubServer(HOLD) as stub:
        results = await post_many(stub.url, "/v1/chat/completions", [BODY] * N, deadline_s=CLIENT_TIMEOUT_S)
        stats = stub.stats(recent=0)
    assert [(r.status, r.reset) for r in results] == [(200, False)] * N
    assert all(r.json()["object"] == "chat.completion" for r in results)
    assert stats["by_http_version"] == {"2": N}
    assert stats["connections_seen"] == 1
    assert stats["max_in_flight"] == N


async def test_more_than_1000_requests_on_one_http2_connection_without_goaway() -> None:
    """hypercorn's default keep_alive_max_requests=1000 would send GOAWAY here."""
    with StubServer() as stub:
        async with httpx.AsyncClient(http1=False, http2=True, timeout=30) as client:
            for _ in range(3):
                batch = await asyncio.gather(*(client.get(f"{stub.url}/models") for _ in range(500)))
                assert {r.status_code for r in batch} == {200}
        stats = stub.stats(recent=0)
    assert stats["requests_total"] == 1500
    assert stats["connections_seen"] == 1


async def test_1000_concurrent_http1_connections_with_httpx() -> None:
    clients, per_client = 20, N // 20
    limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
    with StubServer(HOLD) as stub:
        pool = [httpx.AsyncClient(limits=limits, timeout=CLIENT_TIMEOUT_S) for _ in range(clients)]
        try:
            responses = await asyncio.gather(
                *(c.post(f"{stub.url}/chat/completions", json=BODY) for c in pool for _ in range(per_client))
            )
        finally:
            await asyncio.gather(*(c.aclose() for c in pool))
        stats = stub.stats(recent=0)
    assert [r.status_code for r in responses] == [200] * N
    assert stats["by_http_version"] == {"1.1": N}
    assert stats["connections_seen"] == N
    assert stats["max_in_flight"] == N  # all 1,000 connections served at once


async def _raw_http1_post(host: str, port: int, body: bytes) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode()
        writer.write(head + body)
        await writer.drain()
        status_line = await reader.readline()
        payload = await reader.read()
        assert payload.rstrip().endswith(b"}")
        return int(status_line.split()[1])
    finally:
        writer.close()
        await writer.wait_closed()


async def test_1000_concurrent_http1_connections_from_one_client() -> None:
    with StubServer(HOLD) as stub:
        parts = urlsplit(stub.url)
        assert parts.hostname is not None and parts.port is not None
        body = json.dumps(BODY).encode()
        async with asyncio.timeout(CLIENT_TIMEOUT_S):
            statuses = await asyncio.gather(
                *(_raw_http1_post(parts.hostname, parts.port, body) for _ in range(N))
            )
        stats = stub.stats(recent=0)
    assert statuses == [200] * N
    assert stats["by_http_version"] == {"1.1": N}
    assert stats["connections_seen"] == N
    assert stats["max_in_flight"] == N


async def test_early_answer_to_an_oversized_body_keeps_the_http2_connection() -> None:
    """A 413 sent before the body has all arrived; the rest of the body must not kill the connection.

    Unfixed hypercorn raises KeyError on that late DATA and drops the connection.
    """
    huge = {**BODY, "padding": "x" * (9 * 1024 * 1024)}
    with StubServer() as stub:
        async with asyncio.timeout(30), BareH2Client(stub.url) as client:
            [too_large] = await client.post_many("/v1/chat/completions", [huge])
            while client.unsent:  # the client goes on sending the body, as httpx does
                await client.post_many("/v1/models", [{}])
            after = await client.post_many("/v1/chat/completions", [BODY, BODY])
        stats = stub.stats(recent=0)
    assert too_large.status == 413
    assert too_large.json()["error"]["code"] == "request_too_large"
    assert [r.status for r in after] == [200, 200]
    assert stats["connections_seen"] == 1
