"""The LLM client against the stub over real loopback HTTP: same answers, retries and typed errors.

Run for legacy (HTTP/1.1 on httpx), the generated twin and the async client,
each over its default transport (HTTP/1.1: aiohttp for the async client,
httpcore for the twin) and over HTTP/2 where the server speaks it (``probe``);
the async client also over HTTP/1.1 on httpcore.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from codeagent.errors import (
    LLMConnectionError,
    LLMHTTPError,
    LLMMalformedResponse,
    LLMQuotaExceeded,
    LLMRateLimited,
    LLMTimeout,
)
from tests.parity._support import HTTP1OnlyServer, Impl, chat_messages
from tests.parity.canned import CannedServer

VARIANTS = [
    ("legacy", "auto"),
    ("core_sync", "auto"),
    ("core_sync", "probe"),
    ("core_async", "auto"),
    ("core_async", "http1"),
    ("core_async", "probe"),
]


@pytest.fixture(params=VARIANTS, ids=[f"{n}-{v}" for n, v in VARIANTS])
def client_impl(request: pytest.FixtureRequest, runner: asyncio.Runner) -> Impl:
    name, version = request.param
    return Impl(name, runner, http_version=version)


@pytest.fixture
def make_llm(client_impl: Impl) -> Iterator[Any]:
    made: list[Any] = []

    def make(url: str, **kwargs: Any) -> Any:
        llm = client_impl.llm(url, **kwargs)
        made.append(llm)
        return llm

    yield make
    for llm in made:
        client_impl.close_llm(llm)


def _chat_requests(stub: Any) -> int:
    return int(stub.stats()["by_path"].get("/v1/chat/completions", 0))


def _expected_version(impl: Impl) -> str:
    return "2" if impl.name != "legacy" and impl.http_version == "probe" else "1.1"


def test_answer_and_protocol(client_impl: Impl, make_llm: Any, stub: Any) -> None:
    reply = make_llm(stub.url).chat(chat_messages())
    assert "notes.txt" in reply
    assert "<<<<<<< SEARCH" in reply
    stats = stub.stats()
    assert stats["by_http_version"] == {_expected_version(client_impl): stats["requests_total"]}


@pytest.mark.parametrize("faults", [["500", "500"], ["reset"], ["500", "reset"]])
def test_transient_failures_are_retried(make_llm: Any, stub: Any, faults: list[str]) -> None:
    stub.queue_faults(faults)
    assert "notes.txt" in make_llm(stub.url).chat(chat_messages())
    assert _chat_requests(stub) == len(faults) + 1


def test_429_waits_what_the_server_asks(make_llm: Any, stub: Any) -> None:
    stub.queue_faults(["429"])
    started = time.monotonic()
    make_llm(stub.url).chat(chat_messages())
    assert time.monotonic() - started >= 0.2  # retry_after_s of the stub
    assert _chat_requests(stub) == 2


def test_retries_are_bounded(make_llm: Any, stub: Any) -> None:
    stub.queue_faults(["500", "500", "500"])
    with pytest.raises(LLMHTTPError) as caught:
        make_llm(stub.url, max_retries=1).chat(chat_messages())
    assert caught.value.status == 500
    assert _chat_requests(stub) == 2


def test_rate_limited_after_every_retry(make_llm: Any, stub: Any) -> None:
    stub.set_options(retry_after_s=0.01)
    stub.queue_faults(["429", "429"])
    with pytest.raises(LLMRateLimited):
        make_llm(stub.url, max_retries=1).chat(chat_messages())


def test_quota_is_fatal_at_once(make_llm: Any, stub: Any) -> None:
    stub.queue_faults(["quota"])
    with pytest.raises(LLMQuotaExceeded):
        make_llm(stub.url).chat(chat_messages())
    assert _chat_requests(stub) == 1


def test_a_cut_short_body_is_retried(make_llm: Any, stub: Any) -> None:
    """The stub's ``malformed`` fault: a 200 whose JSON stops mid-way. A transport fault, retried
    like a reset (the legacy client too: a bug fix, it used to fail the todo at once)."""
    stub.queue_faults(["malformed", "malformed"])
    assert "notes.txt" in make_llm(stub.url).chat(chat_messages())
    assert _chat_requests(stub) == 3


def test_a_body_cut_short_after_every_retry_is_malformed(make_llm: Any, stub: Any) -> None:
    stub.queue_faults(["malformed", "malformed"])
    with pytest.raises(LLMMalformedResponse, match="not JSON"):
        make_llm(stub.url, max_retries=1).chat(chat_messages())
    assert _chat_requests(stub) == 2


def test_json_without_a_completion_is_not_retried(make_llm: Any) -> None:
    """A well-formed JSON answer that lacks the completion is a protocol error: it fails at once."""
    with CannedServer(200, b'{"id": "chatcmpl-1", "object": "chat.completion", "choices": []}') as server:
        with pytest.raises(LLMMalformedResponse, match="no choices"):
            make_llm(server.url).chat(chat_messages())
        assert server.requests == 1


def test_client_errors_are_not_retried(make_llm: Any, stub: Any) -> None:
    with pytest.raises(LLMHTTPError) as caught:
        make_llm(stub.url).chat([{"role": "system", "content": "no user message"}])
    assert caught.value.status == 400
    assert _chat_requests(stub) == 1


def test_hang_times_out(make_llm: Any, stub: Any) -> None:
    stub.queue_faults(["hang"])
    started = time.monotonic()
    with pytest.raises(LLMTimeout):
        make_llm(stub.url, timeout=0.3, max_retries=0).chat(chat_messages())
    assert time.monotonic() - started < 3


def test_refused_connection(make_llm: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(LLMConnectionError):
        make_llm(f"http://127.0.0.1:{port}/v1", max_retries=1).chat(chat_messages())


def test_http1_only_server(client_impl: Impl, make_llm: Any) -> None:
    """HTTP/2 by default, yet a server that only speaks HTTP/1.1 works (probe, then fallback)."""
    with HTTP1OnlyServer() as server:
        llm = make_llm(server.url)
        assert llm.chat(chat_messages()) == "hello over HTTP/1.1"
        assert llm.chat(chat_messages()) == "hello over HTTP/1.1"
        if client_impl.name != "legacy":
            assert [e.http_version for e in llm.target.pool.endpoints()] == ["HTTP/1.1"]
