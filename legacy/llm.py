"""The legacy LLM client: ``httpx.Client`` (HTTP/1.1, keep-alive) against an OpenAI-compatible API.

Retries are bounded (``max_retries`` after the first attempt) with exponential
backoff and jitter, on 5xx, 429, connection errors, timeouts and 200 answers
whose body is cut short (not decodable as JSON: a transport fault, like a
reset). A 429 with a ``Retry-After`` (or ``retry-after-ms``) header waits that
long (capped at ``max_retry_after``); a 429 whose error code is
``insufficient_quota`` is fatal at once. Other 4xx answers and 200 answers that
are JSON but not a chat completion are not retried.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from typing import Any

import httpx

from codeagent.errors import (
    LLMConnectionError,
    LLMError,
    LLMHTTPError,
    LLMMalformedResponse,
    LLMQuotaExceeded,
    LLMRateLimited,
    LLMTimeout,
)

Message = dict[str, str]
log = logging.getLogger("codeagent.legacy.llm")

_QUOTA_CODES = {"insufficient_quota", "quota_exceeded"}


def _error_detail(response: httpx.Response) -> tuple[str, str | None]:
    """``(message, code)`` from an OpenAI-style error body, falling back to the raw text."""
    try:
        body: Any = response.json()
    except (ValueError, RecursionError):
        return (response.text.strip()[:200] or response.reason_phrase), None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        message = error.get("message") or response.reason_phrase
        return str(message), str(code) if code else None
    return (response.text.strip()[:200] or response.reason_phrase), None


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asks to wait, if it says.

    ``retry-after-ms`` (OpenAI's finer-grained header) wins over ``Retry-After``
    (delta-seconds or an HTTP-date).
    """
    millis = response.headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = response.headers.get("retry-after")
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
    return max(0.0, when.timestamp() - time.time())


class _CutShort(LLMMalformedResponse):
    """A 200 whose body cannot be decoded: cut short in transit, so retried like a reset.

    (A bug fix: it used to fail at once, and so fail its todo, on a transient fault.)
    """


def _content(response: httpx.Response) -> str:
    """The assistant message of a chat completion.

    Raises :class:`_CutShort` (retried) when the body is not JSON, and
    :class:`LLMMalformedResponse` when it is JSON but not a completion.
    """
    try:
        body: Any = response.json()
    except (ValueError, RecursionError) as exc:  # nested too deeply is as malformed as not JSON
        raise _CutShort(f"response body is not JSON: {response.text[:80]!r}") from exc
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise LLMMalformedResponse(f"response has no choices[0].message.content: {str(body)[:120]}") from exc
    if not isinstance(content, str):
        raise LLMMalformedResponse("choices[0].message.content is not a string")
    return content


class LLMClient:
    """A synchronous chat-completions client with bounded retries."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        model: str,
        timeout: float,
        max_retries: int,
        temperature: float = 0.0,
        *,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        max_retry_after: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.max_retries = max_retries
        self.temperature = temperature
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self._client = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(timeout),
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
        )

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: about ``base * 2**attempt``, capped."""
        delay: float = min(self.backoff_max, self.backoff_base * 2.0**attempt)
        return delay * (0.5 + random.random() / 2)

    def chat(self, messages: list[Message]) -> str:
        """Send one chat completion request; return the assistant's text.

        Raises :class:`LLMTimeout`, :class:`LLMConnectionError`, :class:`LLMRateLimited`,
        :class:`LLMHTTPError` or :class:`LLMMalformedResponse` for a body cut short
        (after the retries are spent), :class:`LLMQuotaExceeded` or
        :class:`LLMMalformedResponse` for JSON that is no completion (at once).
        """
        payload = {"model": self.model, "messages": messages, "temperature": self.temperature}
        url = f"{self.base_url}/chat/completions"
        last: LLMError | None = None
        for attempt in range(self.max_retries + 1):
            delay: float | None = None
            try:
                response = self._client.post(url, json=payload)
            except httpx.TimeoutException as exc:
                last = LLMTimeout(f"no answer from {url} within {self.timeout:g}s ({type(exc).__name__})")
            except httpx.TransportError as exc:
                last = LLMConnectionError(f"{url}: {type(exc).__name__}: {exc}")
            else:
                if response.status_code == 200:
                    try:
                        return _content(response)
                    except _CutShort as exc:
                        last = exc
                else:
                    message, code = _error_detail(response)
                    if response.status_code == 429:
                        if code in _QUOTA_CODES:
                            raise LLMQuotaExceeded(429, message)
                        last = LLMRateLimited(429, message)
                        after = _retry_after(response)
                        if after is not None:
                            delay = min(after, self.max_retry_after)
                    elif response.status_code >= 500:
                        last = LLMHTTPError(response.status_code, message)
                    else:
                        raise LLMHTTPError(response.status_code, message)
            if attempt == self.max_retries:
                break
            if delay is None:
                delay = self._backoff(attempt)
            log.warning(
                "LLM attempt %d/%d failed (%s); retrying in %.2fs",
                attempt + 1,
                self.max_retries + 1,
                last,
                delay,
            )
            time.sleep(delay)
        assert last is not None
        raise last

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()
