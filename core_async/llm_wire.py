"""The OpenAI chat-completions wire format and the retry policy, without I/O.

Pure functions over already-read :class:`httpx.Response` objects, shared by
the async client and (generated) its sync twin: request bodies, answer
parsing, error classification, ``Retry-After`` / ``retry-after-ms`` parsing and
full-jitter backoff. The classification matches the legacy client: retry 5xx,
429 (honouring the server's wait), connection failures and timeouts; fail at
once on quota exhaustion (429 ``insufficient_quota``), on other 4xx answers and
on a 200 whose body is not a chat completion.
"""

from __future__ import annotations

import email.utils
import json
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx

from codeagent.errors import (
    LLMError,
    LLMHTTPError,
    LLMMalformedResponse,
    LLMQuotaExceeded,
    LLMRateLimited,
)

Message = dict[str, str]

QUOTA_CODES = frozenset({"insufficient_quota", "quota_exceeded"})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times and how long to wait between attempts.

    ``backoff`` is full jitter: a uniform draw in ``[0, min(backoff_max,
    backoff_base * 2**attempt)]``. A server's own wait (``retry-after-ms``,
    then ``Retry-After``) replaces the draw, capped at ``max_retry_after``.
    """

    max_retries: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    max_retry_after: float = 30.0

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """The full-jitter wait before retry number ``attempt + 1`` (attempt counts from 0)."""
        ceiling = min(self.backoff_max, self.backoff_base * 2.0**attempt)
        return (rng or random).uniform(0.0, ceiling)


@dataclass(frozen=True, slots=True)
class Retry:
    """An attempt failed in a way another attempt may fix; ``wait`` is the server's wish, if any."""

    error: LLMError
    wait: float | None = None


def chat_payload(
    model: str, messages: list[Message], temperature: float, *, stream: bool = False
) -> dict[str, Any]:
    """The JSON body of a chat completion request."""
    payload: dict[str, Any] = {"model": model, "messages": messages, "temperature": temperature}
    if stream:
        payload["stream"] = True
    return payload


def error_detail(response: httpx.Response) -> tuple[str, str | None]:
    """``(message, code)`` from an OpenAI-style error body, falling back to the raw text."""
    try:
        body: Any = response.json()
    except ValueError:
        return (response.text.strip()[:200] or response.reason_phrase), None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        message = error.get("message") or response.reason_phrase
        return str(message), str(code) if code else None
    return (response.text.strip()[:200] or response.reason_phrase), None


def retry_after(headers: httpx.Headers, now: float | None = None) -> float | None:
    """Seconds the server asks us to wait: ``retry-after-ms`` first, then ``Retry-After``.

    ``Retry-After`` may be delta-seconds or an HTTP date. Unparseable values are ignored.
    """
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def classify_error_status(response: httpx.Response, policy: RetryPolicy) -> Retry:
    """Turn a non-200 (already read) answer into a :class:`Retry`, or raise the fatal error."""
    message, code = error_detail(response)
    status = response.status_code
    if status == 429:
        if code in QUOTA_CODES:
            raise LLMQuotaExceeded(429, message)
        wait = retry_after(response.headers)
        return Retry(
            LLMRateLimited(429, message), None if wait is None else min(wait, policy.max_retry_after)
        )
    if status >= 500:
        return Retry(LLMHTTPError(status, message))
    raise LLMHTTPError(status, message)


def completion_content(response: httpx.Response) -> str:
    """The assistant message of a chat completion, or :class:`LLMMalformedResponse`."""
    try:
        body: Any = response.json()
    except ValueError as exc:
        raise LLMMalformedResponse(f"response body is not JSON: {response.text[:80]!r}") from exc
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise LLMMalformedResponse(f"response has no choices[0].message.content: {str(body)[:120]}") from exc
    if not isinstance(content, str):
        raise LLMMalformedResponse("choices[0].message.content is not a string")
    return content


def sse_delta(line: str) -> str | None:
    """The content delta carried by one server-sent-events line of a streamed completion.

    Returns ``None`` for lines without content (comments, blank lines, role-only
    deltas, ``[DONE]``); raises :class:`LLMMalformedResponse` for a data line
    that is not a chunk.
    """
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if not data or data == "[DONE]":
        return None
    try:
        chunk: Any = json.loads(data)
        choice = chunk["choices"][0]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise LLMMalformedResponse(f"stream chunk is not a completion chunk: {data[:80]!r}") from exc
    if not isinstance(choice, dict):
        raise LLMMalformedResponse("stream chunk choice is not an object")
    delta = choice.get("delta") or {}
    content = delta.get("content") if isinstance(delta, dict) else None
    return content if isinstance(content, str) and content else None
