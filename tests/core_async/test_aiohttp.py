"""The aiohttp path of the async LLM client (``core_async/_aiohttp.py``), against the stub over loopback.

The direct sender and the httpx transport on the same session must fail the same way (httpx's
exception types) and read answers the same way; the client's own behaviour over them is covered by
the parity and tails suites.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import aiohttp
import httpx
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from codeagent.errors import LLMConnectionError
from core_async._aiohttp import AiohttpSender, as_httpx_error
from core_async.llm import AsyncLLMClient
from core_async.llm_transport import AsyncEndpointPool, HTTPVersion
from core_async.llm_wire import TailPolicy, chat_body

MESSAGES = [{"role": "user", "content": "Todo t1: say hello\n"}]
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-test"}


def _request_info() -> aiohttp.RequestInfo:
    url = URL("http://127.0.0.1:1/v1/chat/completions")
    return aiohttp.RequestInfo(url, "POST", CIMultiDictProxy(CIMultiDict()), url)


@pytest.mark.parametrize(
    ("failure", "mapped"),
    [
        (aiohttp.ConnectionTimeoutError("connect"), httpx.ConnectTimeout),
        (aiohttp.SocketTimeoutError("read"), httpx.ReadTimeout),
        (TimeoutError(), httpx.ReadTimeout),
        (aiohttp.ServerDisconnectedError(), httpx.RemoteProtocolError),
        (aiohttp.ClientPayloadError("cut"), httpx.RemoteProtocolError),
        (aiohttp.ClientOSError(104, "reset"), httpx.ReadError),
        (aiohttp.ClientResponseError(_request_info(), ()), httpx.RemoteProtocolError),
        (aiohttp.InvalidURL("x"), httpx.NetworkError),
    ],
)
def test_aiohttp_failures_become_httpx_transport_errors(
    failure: BaseException, mapped: type[Exception]
) -> None:
    error = as_httpx_error(failure)
    assert type(error) is mapped
    assert type(failure).__name__ in str(error)


def test_a_wrapped_failure_is_mapped_by_its_cause_and_others_pass_through() -> None:
    outer = httpx.TransportError("wrapped")
    outer.__cause__ = aiohttp.ServerDisconnectedError()
    assert type(as_httpx_error(outer)) is httpx.RemoteProtocolError
    other = ValueError("not a transport failure")
    assert as_httpx_error(other) is other


async def test_the_direct_answer_reads_like_an_httpx_response(stub: Any) -> None:
    sender = AiohttpSender(connections=4, keepalive_expiry=5.0)
    try:
        stub.queue_faults(["500"])
        body = chat_body("stub-coder", MESSAGES, 0.0)
        answer = await sender.post(f"{stub.url}/chat/completions", body, HEADERS, 5.0)
        assert answer.status_code == 500
        assert answer.reason_phrase == "Internal Server Error"
        with pytest.raises(httpx.ResponseNotRead):
            answer.json()
        raw = await answer.aread()
        assert await answer.aread() is raw  # read once
        assert answer.json() == json.loads(raw)
        assert "error" in answer.text
        assert answer.headers.get("X-REQUEST-ID", "").startswith("req_stub_")  # case-insensitive
        await answer.aclose()
        ok = await sender.post(f"{stub.url}/chat/completions", body, HEADERS, 5.0)
        await ok.aread()
        assert ok.json()["choices"][0]["message"]["content"]
        await ok.aclose()
    finally:
        await sender.aclose()
    assert stub.stats()["requests_total"] == 2


async def test_a_refused_connection_is_a_connect_error_on_both_paths() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    sender = AiohttpSender(connections=1, keepalive_expiry=1.0)
    try:
        with pytest.raises(httpx.ConnectError):
            await sender.post(url, b"{}", HEADERS, 2.0)
        async with httpx.AsyncClient(transport=sender.transport()) as client:
            with pytest.raises(httpx.ConnectError):
                await client.post(url, content=b"{}", headers=HEADERS)
    finally:
        await sender.aclose()


@pytest.mark.parametrize("wrapped", [False, True], ids=["direct", "through-httpx"])
async def test_a_body_cut_short_is_retried_then_reported_the_same_on_both_paths(
    stub: Any, wrapped: bool
) -> None:
    pool = AsyncEndpointPool(HTTPVersion.AIOHTTP, wrap_transport=(lambda inner: inner) if wrapped else None)
    async with (
        pool,
        AsyncLLMClient(stub.url, "sk", "stub-coder", 5.0, 1, pool=pool, tail=TailPolicy.off()) as llm,
    ):
        stub.queue_faults(["cut", "cut"])
        with pytest.raises(LLMConnectionError, match="RemoteProtocolError: ClientPayloadError"):
            await llm.chat(MESSAGES)
        [endpoint] = pool.endpoints()
        assert endpoint.direct is not wrapped
        assert llm.retries == 1
        assert await llm.chat(MESSAGES)  # the next request is answered (nothing left broken)
    assert stub.stats()["requests_total"] == 3


async def test_a_stream_cut_short_is_a_connection_error(stub: Any) -> None:
    async with AsyncLLMClient(stub.url, "sk", "stub-coder", 5.0, 0, tail=TailPolicy.off()) as llm:
        stub.queue_faults(["cut"])
        with pytest.raises(LLMConnectionError, match="stream broken"):
            async for _delta in llm.stream_chat(MESSAGES):
                pass
        [endpoint] = llm.pool.endpoints()
        assert endpoint.direct


async def test_the_sender_counts_each_connection_it_opens_and_caches_few_timeouts(stub: Any) -> None:
    opened: list[int] = []
    sender = AiohttpSender(connections=4, keepalive_expiry=5.0, on_connect=lambda: opened.append(1))
    try:
        body = chat_body("stub-coder", MESSAGES, 0.0)
        for i in range(70):  # a deadline's remainder differs per request: the cache stays small
            answer = await sender.post(f"{stub.url}/chat/completions", body, HEADERS, 5.0 + i / 1000)
            await answer.aread()
            await answer.aclose()
        assert len(sender._timeouts) == 64
        assert opened == [1]  # one keep-alive connection for 70 requests in a row
    finally:
        await sender.aclose()
    await sender.aclose()  # closing twice is harmless
