"""The async LLM client under the stub's faults, at scale, and its batch / stream / pool semantics.

Each behaviour that holds for the generated sync twin too is one test run for both (the ``twin``
fixture: the sync client called directly, the async one on a debug-mode loop of its own through the
parity suite's :class:`~tests.parity._support.Driver`); the rest (thousands of requests at once, a
shared event loop) is the async client's own.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from codeagent.errors import (
    LLMConnectionError,
    LLMError,
    LLMMalformedResponse,
    LLMQuotaExceeded,
    LLMRateLimited,
    LLMTimeout,
)
from core_async.llm import AsyncLLMClient
from core_async.llm_transport import origin_of
from core_async.ratelimit import AsyncTokenBucket
from core_sync.ratelimit import SyncTokenBucket
from tests.parity._support import FAST_RETRY, Driver, HTTP1OnlyServer, Impl, chat_messages
from tests.parity.canned import CannedServer


def client(url: str, **kwargs: Any) -> AsyncLLMClient:
    options: dict[str, Any] = {"timeout": 5.0, "max_retries": 3, **FAST_RETRY, **kwargs}
    timeout, retries = options.pop("timeout"), options.pop("max_retries")
    return AsyncLLMClient(url, "sk-test", "stub-coder", timeout, retries, **options)


def twin_module(impl: Impl, module: str) -> Any:
    """``impl``'s own ``MODULE``: ``core_async.MODULE`` or (generated) ``core_sync.MODULE``."""
    return importlib.import_module(f"{impl.name}.{module}")


def twin_class(impl: Impl, module: str, name: str) -> Any:
    """``impl``'s own class ``NAME`` of ``MODULE``: ``core_async.MODULE.AsyncNAME`` or ``core_sync.MODULE.SyncNAME``."""
    return getattr(twin_module(impl, module), ("Async" if impl.is_async else "Sync") + name)


@contextmanager
def used_as_context_manager(impl: Impl, target: Any) -> Iterator[Driver]:
    """``with target`` (sync twin) or ``async with target`` (async), through ``impl``'s driver."""
    if impl.is_async:
        entered = impl.run(target.__aenter__())
        try:
            yield impl.wrap(entered)
        finally:
            impl.run(target.__aexit__(None, None, None))
    else:
        with target as entered:
            yield impl.wrap(entered)


@contextmanager
def llm_of(impl: Impl, url: str, **kwargs: Any) -> Iterator[Any]:
    """``impl``'s client of ``url`` (the same defaults as :func:`client`), closed on the way out."""
    with used_as_context_manager(impl, impl.llm(url, **kwargs).target) as llm:
        yield llm


@contextmanager
def pool_of(impl: Impl, *args: Any, **kwargs: Any) -> Iterator[Any]:
    """``impl``'s endpoint pool (``AsyncEndpointPool`` or ``SyncEndpointPool``), closed on the way out."""
    with used_as_context_manager(
        impl, twin_class(impl, "llm_transport", "EndpointPool")(*args, **kwargs)
    ) as pool:
        yield pool


def stream_of(impl: Impl, llm: Driver, parts: list[str], *args: Any, **kwargs: Any) -> list[str]:
    """Read ``llm.stream_chat(...)`` to its end into ``parts`` (what came before a failure stays there)."""
    stream = llm.target.stream_chat(*args, **kwargs)
    if not impl.is_async:
        for part in stream:
            parts.append(part)
        return parts

    async def read() -> list[str]:
        async for part in stream:
            parts.append(part)
        return parts

    result: list[str] = impl.runner.run(read())
    return result


def chat_requests(stub: Any) -> int:
    return int(stub.stats()["by_path"].get("/v1/chat/completions", 0))


class _Stalling(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _StallingHTTPServer

    def do_POST(self) -> None:
        stream = json.loads(self.rfile.read(int(self.headers.get("content-length", "0")))).get("stream")
        body = SSE if stream else COMPLETION
        self.send_response(200)
        self.send_header("content-type", "text/event-stream" if stream else "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])  # then nothing, until the server stops
        self.wfile.flush()
        self.server.stop.wait(30)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _StallingHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    stop: threading.Event


COMPLETION = b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}}]}'
SSE = (
    b'data: {"choices":[{"index":0,"delta":{"content":"hel"}}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{"content":"lo"}}]}\n\n'
    b"data: [DONE]\n\n"
)


class StallingServer:
    """Starts every answer (a 200, half its body) and sends nothing more: a stalled answer, not a hang."""

    def __init__(self) -> None:
        self.server = _StallingHTTPServer(("127.0.0.1", 0), _Stalling)
        self.server.stop = threading.Event()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StallingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


#: With the stub, a stream held open by the ``hang`` fault sometimes delays the answers of other
#: streams on the same HTTP/2 connection until it is abandoned (server side: reproduced with bare
#: httpx against the stub in its own process, never against a plain hypercorn app). Over HTTP/2 the
#: guarantee checked is the contract itself: every request ends with a result or a typed error by
#: its deadline. Over HTTP/1.1 (a connection per request) the exact outcome of each fault is checked:
#: every fault but quota and hang is retried (a cut-short body too), quota fails at once.
FAULTS = ["500", "429", "hang", "reset", "malformed", "quota"]


@pytest.mark.parametrize("version", ["auto", "http1", "http2"])
async def test_every_fault_ends_with_a_result_or_typed_error_within_its_deadline(
    stub: Any, version: str
) -> None:
    stub.queue_faults(FAULTS)
    started = time.monotonic()
    async with client(stub.url, max_retries=2, http_version=version) as llm:
        results = await llm.complete_many(
            [chat_messages()] * 10, per_request_timeout=1.5, overall_timeout=3.0
        )
    elapsed = time.monotonic() - started
    assert elapsed < 2.5
    assert all(isinstance(r, str | LLMError) for r in results)
    kinds = Counter(type(r).__name__ for r in results)
    if version != "http2":
        assert kinds == {"str": 8, "LLMTimeout": 1, "LLMQuotaExceeded": 1}
    else:
        assert kinds["LLMTimeout"] >= 1
        assert set(kinds) <= {"str", "LLMTimeout", "LLMQuotaExceeded"}


@pytest.mark.parametrize("version", ["auto", "http2"])
def test_every_fault_but_hang_exactly(twin: Impl, stub: Any, version: str) -> None:
    """Whichever requests the faults fall on (one each when they go at once, all on the first when the
    sync twin sends one at a time), every transient one is retried and quota fails its request at once."""
    stub.queue_faults([f for f in FAULTS if f != "hang"])
    with llm_of(twin, stub.url, max_retries=4, http_version=version) as llm:
        results = llm.complete_many([chat_messages()] * 10, per_request_timeout=5, overall_timeout=8)
        expected = "HTTP/2" if version == "http2" else "HTTP/1.1"
        assert [e.http_version for e in llm.pool.endpoints()] == [expected]
    kinds = Counter(type(r).__name__ for r in results)
    assert kinds == {"str": 9, "LLMQuotaExceeded": 1}
    assert stub.stats()["by_fault"] == {"500": 1, "429": 1, "reset": 1, "malformed": 1, "quota": 1}


def test_retries_are_counted_and_retry_after_is_honoured(twin: Impl, stub: Any) -> None:
    stub.set_options(retry_after_s=0.3)
    stub.queue_faults(["429", "429"])
    with llm_of(twin, stub.url) as llm:
        started = time.monotonic()
        reply = llm.chat(chat_messages())
        elapsed = time.monotonic() - started
        assert "notes.txt" in reply
        assert llm.retries == 2
    assert chat_requests(stub) == 3
    assert stub.stats()["by_fault"] == {"429": 2}
    assert elapsed >= 2 * 0.3


def test_a_deadline_shorter_than_the_servers_wait_fails_fast(twin: Impl, stub: Any) -> None:
    stub.set_options(retry_after_s=5.0)
    stub.queue_faults(["429"])
    with llm_of(twin, stub.url) as llm:
        started = time.monotonic()
        with pytest.raises(LLMRateLimited):
            llm.chat(chat_messages(), deadline=time.monotonic() + 2.0)
        assert time.monotonic() - started < 2.0


def test_hang_ends_at_the_deadline(twin: Impl, stub: Any) -> None:
    stub.queue_faults(["hang"])
    with llm_of(twin, stub.url, timeout=30.0) as llm:
        started = time.monotonic()
        with pytest.raises(LLMTimeout):
            llm.chat(chat_messages(), deadline=time.monotonic() + 0.4)
        assert 0.35 < time.monotonic() - started < 1.5
        assert "notes.txt" in llm.chat(chat_messages())  # the client is still usable


def test_an_expired_deadline_sends_nothing(twin: Impl, stub: Any) -> None:
    with llm_of(twin, stub.url) as llm, pytest.raises(LLMTimeout):
        llm.chat(chat_messages(), deadline=time.monotonic() - 1)
    assert chat_requests(stub) == 0


async def test_1000_requests_in_flight_at_once_with_the_default_transport(stub: Any) -> None:
    """HTTP/1.1 on aiohttp: a connection per request in flight, all 1,000 held by the server at once.

    The stub answers none until all 1,000 are in flight together (or 45 s have passed, well within the
    client's 60 s timeout): however long a loaded CI machine takes to open 1,000 connections, the
    answers cannot start before the last request is sent, so ``max_in_flight`` shows whether the client
    held them all at once, not how fast the machine was (with a fixed 5 s latency, 777 were once seen).
    """
    stub.set_options(hold_until_in_flight=1000, hold_timeout_s=45)
    try:
        async with client(stub.url, timeout=60) as llm:
            results = await asyncio.gather(
                *(llm.chat(chat_messages()) for _ in range(1000)), return_exceptions=True
            )
            [endpoint] = llm.pool.endpoints()
    finally:
        stub.set_options(hold_until_in_flight=0)
    assert [r for r in results if not isinstance(r, str)] == []
    assert (endpoint.transport, endpoint.http_version) == ("aiohttp", "HTTP/1.1")
    stats = stub.stats()
    assert stats["max_in_flight"] == 1000
    assert endpoint.connections_opened == 1000
    assert endpoint.tail.requests == 1000
    assert endpoint.tail.hedges == 0  # no answer before the last request was sent: nothing to learn from
    assert stats["by_path"]["/v1/chat/completions"] == 1000


async def test_1000_concurrent_requests_over_one_http2_connection(stub: Any) -> None:
    stub.set_options(latency_ms=20)
    async with client(stub.url, http_version="http2") as llm:
        started = time.monotonic()
        results = await llm.complete_many(
            # Generous deadlines: under coverage and debug mode on a loaded 2-core machine the 1,000 requests
            # queue for the CPU (what is checked is that they all travel on one connection, concurrently).
            [chat_messages()] * 1000,
            per_request_timeout=60,
            overall_timeout=90,
        )
        elapsed = time.monotonic() - started
        endpoints = llm.pool.endpoints()
    assert [r for r in results if not isinstance(r, str)] == []
    assert [(e.http_version, e.connections_opened) for e in endpoints] == [("HTTP/2", 1)]
    stats = stub.stats()
    assert stats["by_http_version"] == {"2": stats["requests_total"]}
    [tail] = [e.tail for e in endpoints]
    assert tail.requests == 1000  # a hedged request counts once ...
    # ... its copy is counted apart (a copy cancelled before it was written never reaches the server)
    assert 1000 <= stats["by_path"]["/v1/chat/completions"] <= 1000 + tail.hedges
    assert tail.hedges <= 50
    assert stats["max_in_flight"] >= 50  # really concurrent, not one by one
    assert elapsed < 90


def test_complete_many_keeps_order_and_isolates_failures(twin: Impl, stub: Any) -> None:
    batch = [chat_messages(f'append a line "{n}" to file f{n}.txt') for n in range(6)]
    batch[2] = [{"role": "system", "content": "no user message"}]  # a 400 for this one only
    batch[4] = [{"role": "user", "content": object()}]  # type: ignore[dict-item]  # cannot even be encoded
    with llm_of(twin, stub.url) as llm:
        results = llm.complete_many(batch)
        assert llm.complete_many([]) == []
    for n in (0, 1, 3, 5):
        assert f"f{n}.txt" in results[n]  # type: ignore[operator]
    assert isinstance(results[2], LLMError)
    assert "HTTP 400" in str(results[2])
    assert isinstance(results[4], LLMError)
    assert "TypeError" in str(results[4])


async def test_complete_many_overall_timeout(stub: Any) -> None:
    stub.queue_faults(["hang"])
    async with client(stub.url, http_version="http1") as llm:  # see FAULTS above for why HTTP/1.1
        started = time.monotonic()
        results = await llm.complete_many([chat_messages()] * 4, overall_timeout=1.0)
        assert time.monotonic() - started < 2.0
    assert sum(isinstance(r, LLMTimeout) for r in results) == 1
    assert sum(isinstance(r, str) for r in results) == 3


def test_complete_many_with_one_worker(twin: Impl, stub: Any) -> None:
    with llm_of(twin, stub.url, batch_concurrency=1) as llm:
        results = llm.complete_many([chat_messages()] * 3, per_request_timeout=5)
    assert all(isinstance(r, str) for r in results)
    assert stub.stats()["max_in_flight"] == 1


def test_streaming_yields_the_same_text(twin: Impl, stub: Any) -> None:
    stub.queue_faults(["500"])  # retried before the first byte
    with llm_of(twin, stub.url) as llm:
        whole = llm.chat(chat_messages())
        parts = stream_of(twin, llm, [], chat_messages())
    assert len(parts) > 1
    assert "".join(parts) == whole
    assert stub.stats()["by_status"].get("500") == 1


@pytest.mark.parametrize(
    ("fault", "error"), [("malformed", LLMMalformedResponse), ("quota", LLMQuotaExceeded)]
)
def test_streaming_errors_are_typed(twin: Impl, stub: Any, fault: str, error: type[LLMError]) -> None:
    stub.queue_faults([fault])
    with llm_of(twin, stub.url) as llm:
        with pytest.raises(error):
            stream_of(twin, llm, [], chat_messages())
        [endpoint] = llm.pool.endpoints()
        assert endpoint.in_flight == 0  # the slot came back
        assert endpoint.slots._value == endpoint.capacity


def test_a_stalled_stream_times_out(twin: Impl, stub: Any) -> None:
    with llm_of(twin, stub.url, timeout=0.3) as llm:
        stub.set_options(latency_ms=1000)  # the server holds the headers back
        with pytest.raises(LLMTimeout):
            stream_of(twin, llm, [], chat_messages(), deadline=time.monotonic() + 0.5)


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_that_stalls_once_started_ends_at_the_request_timeout(twin: Impl, stream: bool) -> None:
    """A 200 and half its body, then nothing. With no idle timeout (the sync twin has none at all) the
    request's own timeout bounds every read of the answer, not only the wait for its first byte."""
    no_idle = twin_module(twin, "llm_wire").TailPolicy(hedge=False, stream_idle_timeout=None)
    with (
        StallingServer() as server,
        llm_of(twin, server.url, timeout=0.5, max_retries=0, tail=no_idle, stream=stream) as llm,
    ):
        started = time.monotonic()
        with pytest.raises(LLMTimeout, match="ReadTimeout"):
            llm.chat(chat_messages())
        assert time.monotonic() - started < 5  # not the server's 30 s
        assert llm.pool.endpoints()[0].in_flight == 0


def test_a_stream_that_stalls_mid_way_ends_at_the_request_timeout(twin: Impl) -> None:
    no_idle = twin_module(twin, "llm_wire").TailPolicy(hedge=False, stream_idle_timeout=None)
    with (
        StallingServer() as server,
        llm_of(twin, server.url, timeout=0.5, max_retries=0, tail=no_idle) as llm,
    ):
        parts: list[str] = []
        with pytest.raises(LLMTimeout, match="stalled"):
            stream_of(twin, llm, parts, chat_messages())
        assert parts == ["hel"]  # what came before the stall was handed out
        assert llm.pool.endpoints()[0].in_flight == 0


def test_a_streamed_answer_that_ends_before_done_is_cut_short(twin: Impl) -> None:
    """A stream that ends without ``data: [DONE]`` was cut short in transit: retried, then malformed."""
    with CannedServer(200, SSE.replace(b"data: [DONE]\n\n", b"")) as server:
        with llm_of(twin, server.url, max_retries=1, stream=True) as llm:
            with pytest.raises(LLMMalformedResponse, match=r"ended before \[DONE\]"):
                llm.chat(chat_messages())
            assert llm.pool.endpoints()[0].tail.cut_short == 2
        assert server.requests == 2


@pytest.mark.parametrize("version", ["auto", "probe"])
def test_a_stream_to_a_refused_port_is_a_connection_error(twin: Impl, version: str) -> None:
    """Refused at the first request (auto) or already by the probe that opens the endpoint: retried, then
    a connection error."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    with llm_of(twin, url, max_retries=1, http_version=version) as llm, pytest.raises(LLMConnectionError):
        stream_of(twin, llm, [], chat_messages())


@pytest.mark.parametrize("version", ["auto", "http1", "http2"])
def test_a_shared_pool_serves_many_clients_on_one_connection(twin: Impl, stub: Any, version: str) -> None:
    with pool_of(twin, version) as pool:
        first = twin.llm(stub.url, pool=pool.target)
        second = twin.llm(stub.url + "/", pool=pool.target)
        first.chat(chat_messages())
        second.chat(chat_messages())
        twin.close_llm(first)  # not the owner: the pool stays open
        second.chat(chat_messages())
        assert [e.connections_opened for e in pool.endpoints()] == [1]
    assert pool.endpoints() == []
    with pytest.raises(RuntimeError, match="closed"):
        pool.endpoint(stub.url)


@pytest.mark.parametrize(("version", "probe"), [("auto", 0), ("http1", 0), ("probe", 1)])
def test_http1_queues_in_slots_not_the_pool(twin: Impl, version: str, probe: int) -> None:
    """120 requests, 32 at a time, to an HTTP/1.1-only server: no PoolTimeout, no more connections than slots.

    (Hedging off: a hedge that wins closes the loser's connection, so a new one opens later. A request's
    time includes its wait for a slot, so its timeout is generous. The sync twin sends one at a time, on
    one connection: 20 requests show it as well as 120, and this server answers each one 40 ms late,
    its body held back by Nagle's algorithm until the client's delayed ACK.)
    """
    limits = twin_module(twin, "llm_transport").PoolLimits(http1_connections=8)
    no_hedge = twin_module(twin, "llm_wire").TailPolicy(hedge=False)
    n = 120 if twin.is_async else 20
    with HTTP1OnlyServer() as server, pool_of(twin, version, limits=limits) as pool:
        with llm_of(twin, server.url, pool=pool.target, tail=no_hedge, batch_concurrency=32) as llm:
            results = llm.complete_many([chat_messages()] * n, per_request_timeout=60)
        [endpoint] = pool.endpoints()
    assert results == ["hello over HTTP/1.1"] * n
    assert endpoint.http_version == "HTTP/1.1"
    assert endpoint.connections_opened <= 8 + probe  # the probe's own connection, then the pool


def test_forced_http2_cannot_talk_to_an_http1_server(twin: Impl) -> None:
    with (
        HTTP1OnlyServer() as server,
        llm_of(twin, server.url, http_version="http2", max_retries=0) as llm,
        pytest.raises(LLMConnectionError),
    ):
        llm.chat(chat_messages())


def test_a_failed_probe_decides_nothing(twin: Impl) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    with pool_of(twin, "probe") as pool:
        with pytest.raises(httpx.ConnectError):
            pool.endpoint(url)
        assert pool.endpoints() == []


def test_origin_of() -> None:
    assert origin_of("http://127.0.0.1:8080/v1") == ("http", "http://127.0.0.1:8080")
    assert origin_of("https://api.example.com/v1") == ("https", "https://api.example.com:443")
    assert origin_of("http://[::1]/v1") == ("http", "http://[::1]:80")
    with pytest.raises(ValueError, match="not an http"):
        origin_of("ftp://x/")


def test_token_bucket_limits_the_rate(twin: Impl, stub: Any) -> None:
    bucket = twin_class(twin, "ratelimit", "TokenBucket")(rate=20, burst=2)
    with llm_of(twin, stub.url, rate_limiter=bucket) as llm:
        started = time.monotonic()
        results = llm.complete_many([chat_messages()] * 6)
        elapsed = time.monotonic() - started
    assert all(isinstance(r, str) for r in results)
    assert elapsed >= (6 - 2) / 20 * 0.9  # two from the burst, then one per 50 ms


@pytest.mark.parametrize("bucket", [AsyncTokenBucket, SyncTokenBucket])
def test_token_bucket_validates(bucket: type[Any]) -> None:
    with pytest.raises(ValueError, match="rate"):
        bucket(rate=0)
    with pytest.raises(ValueError, match="burst"):
        bucket(rate=1, burst=0.5)
