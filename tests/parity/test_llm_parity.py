"""The LLM client against the stub over real loopback HTTP: same answers, retries and typed errors.

Run for legacy (HTTP/1.1), the generated twin and the async client, the
latter two both over HTTP/2 (the default, probed) and forced HTTP/1.1.
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

VARIANTS = [
    ("legacy", "auto"),
    ("core_sync", "auto"),
    ("core_sync", "http1"),
    ("core_async", "auto"),
    ("core_async", "http1"),
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
    return "1.1" if impl.name == "legacy" or impl.http_version == "http1" else "2"


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


def test_malformed_answer_is_not_retried(make_llm: Any, stub: Any) -> None:
    stub.queue_faults(["malformed"])
    with pytest.raises(LLMMalformedResponse):
        make_llm(stub.url).chat(chat_messages())
    assert _chat_requests(stub) == 1


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
