"""The wire format and retry policy helpers (pure functions shared by the client and its twin)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

import core_async.llm_wire
import core_sync.llm_wire
from codeagent.errors import LLMHTTPError, LLMMalformedResponse, LLMQuotaExceeded, LLMRateLimited


@pytest.fixture(params=[core_async.llm_wire, core_sync.llm_wire], ids=["core_async", "core_sync"])
def wire(request: pytest.FixtureRequest) -> Any:
    """The module and its generated twin (identical pure code)."""
    return request.param


def response(status: int, body: bytes | str = b"", headers: dict[str, str] | None = None) -> httpx.Response:
    content = body.encode() if isinstance(body, str) else body
    return httpx.Response(status, content=content, headers=headers or {})


def test_payload(wire: Any) -> None:
    messages = [{"role": "user", "content": "x"}]
    assert wire.chat_payload("m", messages, 0.5) == {"model": "m", "messages": messages, "temperature": 0.5}
    assert wire.chat_payload("m", messages, 0.0, stream=True)["stream"] is True


def test_error_detail_shapes(wire: Any) -> None:
    assert wire.error_detail(response(500, '{"error": {"message": "bad", "code": "x"}}')) == ("bad", "x")
    assert wire.error_detail(response(500, '{"error": {"type": "server_error"}}')) == (
        "Internal Server Error",
        "server_error",
    )
    assert wire.error_detail(response(502, "upstream down")) == ("upstream down", None)
    assert wire.error_detail(response(503, "")) == ("Service Unavailable", None)
    assert wire.error_detail(response(500, '["not", "an", "object"]')) == ('["not", "an", "object"]', None)


def test_retry_after_forms(wire: Any) -> None:
    assert wire.retry_after(httpx.Headers({"retry-after-ms": "250", "retry-after": "9"})) == 0.25
    assert wire.retry_after(httpx.Headers({"retry-after-ms": "soon", "retry-after": "2"})) == 2.0
    assert wire.retry_after(httpx.Headers({"retry-after": "-3"})) == 0.0
    assert wire.retry_after(httpx.Headers({})) is None
    assert wire.retry_after(httpx.Headers({"retry-after": "whenever"})) is None
    now = datetime(2026, 1, 1, tzinfo=UTC)
    date = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert wire.retry_after(httpx.Headers({"retry-after": date}), now=now.timestamp()) == pytest.approx(30)
    assert wire.retry_after(httpx.Headers({"retry-after": date})) >= 0 or True


def test_classification(wire: Any) -> None:
    policy = wire.RetryPolicy(max_retry_after=1.0)
    with pytest.raises(LLMQuotaExceeded):
        wire.classify_error_status(
            response(429, '{"error": {"code": "insufficient_quota", "message": "q"}}'), policy
        )
    limited = wire.classify_error_status(response(429, "{}", {"retry-after": "60"}), policy)
    assert isinstance(limited.error, LLMRateLimited)
    assert limited.wait == 1.0  # capped
    assert wire.classify_error_status(response(429, "{}"), policy).wait is None
    server = wire.classify_error_status(response(503, "down"), policy)
    assert isinstance(server.error, LLMHTTPError)
    assert server.error.status == 503
    with pytest.raises(LLMHTTPError) as caught:
        wire.classify_error_status(response(404, "nope"), policy)
    assert caught.value.status == 404


def test_backoff_is_full_jitter_and_capped(wire: Any) -> None:
    policy = wire.RetryPolicy(backoff_base=1.0, backoff_max=4.0)
    rng = random.Random(1)
    draws = [policy.backoff(5, rng) for _ in range(200)]
    assert all(0.0 <= d <= 4.0 for d in draws)
    assert min(draws) < 0.5 < 3.5 < max(draws)
    assert 0.0 <= policy.backoff(0) <= 1.0


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"choices": []}', b'{"choices": [{"message": {"content": 3}}]}', b"[1]"],
)
def test_malformed_completions(wire: Any, body: bytes) -> None:
    with pytest.raises(LLMMalformedResponse):
        wire.completion_content(response(200, body))


def test_completion_content(wire: Any) -> None:
    assert wire.completion_content(response(200, '{"choices": [{"message": {"content": "hi"}}]}')) == "hi"


def test_sse_lines(wire: Any) -> None:
    assert wire.sse_delta('data: {"choices": [{"delta": {"content": "ab"}}]}') == "ab"
    assert wire.sse_delta('data: {"choices": [{"delta": {"role": "assistant"}}]}') is None
    assert wire.sse_delta('data: {"choices": [{"delta": null}]}') is None
    assert wire.sse_delta("data: [DONE]") is None
    assert wire.sse_delta("data:") is None
    assert wire.sse_delta(": keep-alive") is None
    assert wire.sse_delta("") is None
    for bad in ('data: {"choices": []}', "data: {oops", 'data: {"choices": ["x"]}'):
        with pytest.raises(LLMMalformedResponse):
            wire.sse_delta(bad)


@pytest.mark.parametrize(
    ("body", "cut_short"),
    [
        (
            b'{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,',
            True,
        ),  # the stub's malformed
        (b"not json", True),
        (b"\xff\xfe{", True),  # not even text
        (b'{"choices": []}', False),  # JSON, but no completion: a protocol error
        (b'{"choices": [{"message": {"content": 3}}]}', False),
        (b"[1]", False),
    ],
)
def test_a_body_cut_short_is_told_from_json_without_a_completion(
    wire: Any, body: bytes, cut_short: bool
) -> None:
    with pytest.raises(LLMMalformedResponse) as caught:
        wire.completion_content(response(200, body))
    assert isinstance(caught.value, wire.LLMCutShort) is cut_short


def test_stream_chunks_cut_short(wire: Any) -> None:
    with pytest.raises(wire.LLMCutShort):
        wire.sse_delta('data: {"id":"chatcmpl-1","choices":[{"index":0,')
    with pytest.raises(LLMMalformedResponse) as caught:
        wire.sse_delta('data: {"choices": []}')
    assert not isinstance(caught.value, wire.LLMCutShort)
    assert wire.sse_done("data: [DONE]")
    assert not wire.sse_done('data: {"choices": []}')
