"""The legacy LLM client against the stub LLM over real loopback HTTP."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx
import pytest

from codeagent.errors import (
    LLMConnectionError,
    LLMHTTPError,
    LLMMalformedResponse,
    LLMQuotaExceeded,
    LLMRateLimited,
    LLMTimeout,
)
from codeagent.models import Todo
from codeagent.prompts import build_messages
from legacy.llm import LLMClient

MESSAGES = build_messages(
    Todo(id="t-0001", text='append a line "hello world" to file notes.txt', files=["notes.txt"]),
    {"notes.txt": "first line\n"},
)


def _client(url: str, **kw: Any) -> LLMClient:
    options: dict[str, Any] = {"timeout": 5.0, "max_retries": 3, "backoff_base": 0.01}
    options.update(kw)
    return LLMClient(url, "sk-test", "stub-coder", **options)


def _chat_requests(stub: Any) -> int:
    stats = stub.stats()
    return int(sum(n for path, n in stats["by_path"].items() if path.endswith("/chat/completions")))


def test_chat_returns_edit_blocks(stub: Any) -> None:
    client = _client(stub.url)
    try:
        reply = client.chat(MESSAGES)
    finally:
        client.close()
    assert "<<<<<<< SEARCH" in reply
    assert "hello world" in reply
    assert _chat_requests(stub) == 1


def test_connection_is_kept_alive_over_http11(stub: Any) -> None:
    client = _client(stub.url)
    try:
        for _ in range(3):
            client.chat(MESSAGES)
    finally:
        client.close()
    assert stub.stats()["by_http_version"] == {"1.1": 3}


def test_retries_500_then_succeeds(stub: Any) -> None:
    stub.queue_faults(["500", "500"])
    client = _client(stub.url)
    try:
        assert "hello world" in client.chat(MESSAGES)
    finally:
        client.close()
    assert _chat_requests(stub) == 3
    assert stub.stats()["by_fault"] == {"500": 2}


def test_500_after_every_retry_is_an_http_error(stub: Any) -> None:
    stub.queue_faults(["500"] * 3)
    client = _client(stub.url, max_retries=2)
    try:
        with pytest.raises(LLMHTTPError) as info:
            client.chat(MESSAGES)
    finally:
        client.close()
    assert info.value.status == 500
    assert _chat_requests(stub) == 3


def test_429_retry_after_is_honoured(stub: Any) -> None:
    stub.queue_faults(["429"])
    # A large backoff base: had the client ignored Retry-After (0.2 s) it would wait >= 2.5 s.
    client = _client(stub.url, backoff_base=5.0)
    try:
        started = time.monotonic()
        assert "hello world" in client.chat(MESSAGES)
        elapsed = time.monotonic() - started
    finally:
        client.close()
    assert 0.2 <= elapsed < 2.0
    assert _chat_requests(stub) == 2
    assert stub.stats()["by_status"].get("429") == 1


def test_429_retry_after_is_capped(stub: Any) -> None:
    stub.set_options(retry_after_s=30.0)
    stub.queue_faults(["429"])
    client = _client(stub.url, max_retry_after=0.05)
    try:
        started = time.monotonic()
        client.chat(MESSAGES)
    finally:
        client.close()
    assert time.monotonic() - started < 2.0


def test_429_after_every_retry_is_rate_limited(stub: Any) -> None:
    stub.queue_faults(["429", "429"])
    client = _client(stub.url, max_retries=1, max_retry_after=0.01)
    try:
        with pytest.raises(LLMRateLimited) as info:
            client.chat(MESSAGES)
    finally:
        client.close()
    assert info.value.status == 429
    assert _chat_requests(stub) == 2


def test_quota_is_fatal_without_retry(stub: Any) -> None:
    stub.queue_faults(["quota"])
    client = _client(stub.url)
    try:
        with pytest.raises(LLMQuotaExceeded, match="quota"):
            client.chat(MESSAGES)
    finally:
        client.close()
    assert _chat_requests(stub) == 1


def test_a_cut_short_body_is_retried(stub: Any) -> None:
    """A 200 whose JSON stops mid-way is a transport fault (a bug fix: it used to fail at once)."""
    stub.queue_faults(["malformed"])
    client = _client(stub.url)
    try:
        assert "notes.txt" in client.chat(MESSAGES)
    finally:
        client.close()
    assert _chat_requests(stub) == 2


def test_a_body_cut_short_after_every_retry_is_a_typed_error(stub: Any) -> None:
    stub.queue_faults(["malformed", "malformed"])
    client = _client(stub.url, max_retries=1)
    try:
        with pytest.raises(LLMMalformedResponse, match="not JSON"):
            client.chat(MESSAGES)
    finally:
        client.close()
    assert _chat_requests(stub) == 2


def test_hang_times_out(stub: Any) -> None:
    stub.queue_faults(["hang"])
    client = _client(stub.url, timeout=0.3, max_retries=0)
    try:
        started = time.monotonic()
        with pytest.raises(LLMTimeout):
            client.chat(MESSAGES)
    finally:
        client.close()
    assert time.monotonic() - started < 2.0


def test_hang_is_retried_after_timeout(stub: Any) -> None:
    stub.queue_faults(["hang"])
    client = _client(stub.url, timeout=0.3, max_retries=1)
    try:
        assert "hello world" in client.chat(MESSAGES)
    finally:
        client.close()
    assert _chat_requests(stub) == 2


def test_reset_is_retried(stub: Any) -> None:
    stub.queue_faults(["reset"])
    client = _client(stub.url)
    try:
        assert "hello world" in client.chat(MESSAGES)
    finally:
        client.close()
    assert _chat_requests(stub) == 2


def test_refused_connection_is_a_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = _client(f"http://127.0.0.1:{port}/v1", max_retries=1)
    try:
        with pytest.raises(LLMConnectionError):
            client.chat(MESSAGES)
    finally:
        client.close()


def test_client_error_is_not_retried(stub: Any) -> None:
    client = _client(stub.url.rsplit("/v1", 1)[0] + "/nope")
    try:
        with pytest.raises(LLMHTTPError) as info:
            client.chat(MESSAGES)
    finally:
        client.close()
    assert info.value.status == 404


def test_retry_after_header_forms() -> None:
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    from legacy.llm import _retry_after

    def response(**headers: str) -> httpx.Response:
        return httpx.Response(429, headers=headers)

    assert _retry_after(response()) is None
    assert _retry_after(response(**{"retry-after": "2"})) == 2.0
    assert _retry_after(response(**{"retry-after": "1", "retry-after-ms": "250"})) == 0.25
    assert _retry_after(response(**{"retry-after": "soon"})) is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    after = _retry_after(response(**{"retry-after": later}))
    assert after is not None
    assert 25 < after <= 30
    past = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert _retry_after(response(**{"retry-after": past})) == 0.0


def test_error_detail_of_various_bodies() -> None:
    from legacy.llm import _error_detail

    quota = httpx.Response(429, json={"error": {"message": "no money", "type": "insufficient_quota"}})
    assert _error_detail(quota) == ("no money", "insufficient_quota")
    assert _error_detail(httpx.Response(502, text="bad gateway")) == ("bad gateway", None)
    assert _error_detail(httpx.Response(503, json=["x"])) == ('["x"]', None)
    assert _error_detail(httpx.Response(500, text="")) == ("Internal Server Error", None)
