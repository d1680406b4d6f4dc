"""The OpenAI chat-completions wire format and the retry policy, without I/O.

Pure functions over already-read answers (:class:`AsyncAnswer`: an
``httpx.Response``, or the direct aiohttp path's own), shared by
the async client and (generated) its sync twin: request bodies, answer
parsing, error classification, ``Retry-After`` / ``retry-after-ms`` parsing and
full-jitter backoff. The classification matches the legacy client: retry 5xx,
429 (honouring the server's wait), connection failures and timeouts; fail at
once on quota exhaustion (429 ``insufficient_quota``) and on other 4xx answers.

A 200 whose body cannot be decoded (cut short in transit: not JSON, not UTF-8,
an SSE chunk that is not JSON, a stream that ends without ``[DONE]``) is a
transport fault, :class:`LLMCutShort`, retried like a reset; a well-formed JSON
answer that lacks the completion is a protocol error,
:class:`~codeagent.errors.LLMMalformedResponse`, and fails at once.

The tail-latency bookkeeping of an endpoint lives here too, without I/O: the
sliding window of times to first byte (:class:`QuantileWindow`), the hedge
budget (:class:`HedgeBudget`) and the switches (:class:`TailPolicy`).
"""

from __future__ import annotations

import bisect
import email.utils
import json
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from codeagent.errors import (
    LLMError,
    LLMHTTPError,
    LLMMalformedResponse,
    LLMQuotaExceeded,
    LLMRateLimited,
)

Message = dict[str, str]


class LLMCutShort(LLMMalformedResponse):
    """A 200 whose body cannot be decoded: cut short in transit, so retried like a reset.

    A subclass of :class:`LLMMalformedResponse`, so a caller that handled the
    old "response body is not JSON" failure still does, once the retries are spent.
    """


class AsyncAnswer(Protocol):
    """An answer whose headers have arrived: what the client reads of it (``httpx.Response`` is one)."""

    @property
    def status_code(self) -> int:
        """The HTTP status."""

    @property
    def reason_phrase(self) -> str:
        """The status line's reason."""

    @property
    def headers(self) -> Mapping[str, str]:
        """The headers (case-insensitive)."""

    @property
    def text(self) -> str:
        """The body (once read) as text."""

    def json(self) -> Any:
        """The body (once read) parsed as JSON."""

    async def aread(self) -> bytes:
        """Read the whole body."""

    def aiter_lines(self) -> AsyncIterator[str]:
        """The body's lines as they arrive."""

    async def aclose(self) -> None:
        """Let the connection go (back to its pool, or closed if the body was not read)."""


class AsyncSender(Protocol):
    """A transport the client may hand a plain POST to without httpx's client (the aiohttp path)."""

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], io_timeout: float) -> AsyncAnswer:
        """POST ``body``; the answer once its headers have arrived (every connect and read within ``io_timeout``)."""

    def transport(self) -> httpx.AsyncBaseTransport:
        """httpx's transport interface on the same connections."""

    async def aclose(self) -> None:
        """Close every connection."""


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


def chat_body(model: str, messages: list[Message], temperature: float, *, stream: bool = False) -> bytes:
    """:func:`chat_payload` encoded as httpx encodes ``json=`` (compact, UTF-8, no NaN): the same bytes
    whichever transport carries them, so a recorded exchange replays whatever recorded it."""
    payload = chat_payload(model, messages, temperature, stream=stream)
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def error_detail(response: AsyncAnswer) -> tuple[str, str | None]:
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


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
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


def classify_error_status(response: AsyncAnswer, policy: RetryPolicy) -> Retry:
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


def completion_content(response: AsyncAnswer) -> str:
    """The assistant message of a chat completion.

    Raises :class:`LLMCutShort` when the body cannot be decoded (retry it) and
    :class:`LLMMalformedResponse` when it is JSON but not a completion (do not).
    """
    try:
        body: Any = response.json()
    except (ValueError, RecursionError) as exc:  # not JSON, or nested too deeply to decode
        raise LLMCutShort(f"response body is not JSON: {response.text[:80]!r}") from exc
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
    deltas, ``[DONE]``); raises :class:`LLMCutShort` for a data line that is not
    JSON and :class:`LLMMalformedResponse` for JSON that is not a chunk.
    """
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if not data or data == "[DONE]":
        return None
    try:
        chunk: Any = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise LLMCutShort(f"stream chunk is not JSON: {data[:80]!r}") from exc
    try:
        choice = chunk["choices"][0]
    except (KeyError, IndexError, TypeError) as exc:
        raise LLMMalformedResponse(f"stream chunk is not a completion chunk: {data[:80]!r}") from exc
    if not isinstance(choice, dict):
        raise LLMMalformedResponse("stream chunk choice is not an object")
    delta = choice.get("delta") or {}
    content = delta.get("content") if isinstance(delta, dict) else None
    return content if isinstance(content, str) and content else None


def sse_done(line: str) -> bool:
    """Whether a server-sent-events line is the stream's last (``data: [DONE]``)."""
    return line.startswith("data:") and line[5:].strip() == "[DONE]"


@dataclass(frozen=True, slots=True)
class TailPolicy:
    """The async client's tail-latency switches (each one off turns that mechanism off).

    * ``hedge``: when an attempt has no first byte after the endpoint's observed
      ``hedge_quantile`` of time to first byte (once ``hedge_min_samples`` are
      known), send one copy of it; the first to settle wins, the other is
      cancelled. At most one hedge per request, and at most ``hedge_budget``
      hedges per request over the endpoint's last ``hedge_window`` requests.
    * ``stream_idle_timeout``: seconds an answer may go without a byte once it
      has started (streamed or not); a stalled answer is retried then. ``None``: off.
    * ``pace_retry_after``: during a burst of 429s (see
      :class:`~core_async.ratelimit.AsyncRetryGate`) every request to the
      endpoint waits for the latest ``Retry-After``, instead of each retrying
      on its own schedule.
    """

    hedge: bool = True
    hedge_quantile: float = 0.95
    hedge_budget: float = 0.05
    hedge_min_samples: int = 20
    hedge_window: int = 1000
    stream_idle_timeout: float | None = 10.0
    pace_retry_after: bool = True

    @classmethod
    def off(cls) -> TailPolicy:
        """No hedging, no idle timeout, no shared pacing (the legacy client's behaviour)."""
        return cls(hedge=False, stream_idle_timeout=None, pace_retry_after=False)


class QuantileWindow:
    """The last ``size`` samples, kept sorted: exact quantiles of a sliding window.

    ``add`` is two binary searches and two ``list`` moves of at most ``size``
    pointers (a few microseconds at 512); ``quantile`` is an index.
    """

    __slots__ = ("_order", "_size", "_sorted")

    def __init__(self, size: int = 512) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self._size = size
        self._order: deque[float] = deque()
        self._sorted: list[float] = []

    def __len__(self) -> int:
        return len(self._sorted)

    def add(self, sample: float) -> None:
        """Take one sample in, dropping the oldest once the window is full."""
        if len(self._order) == self._size:
            oldest = self._order.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, oldest)]
        self._order.append(sample)
        bisect.insort(self._sorted, sample)

    def quantile(self, q: float, min_samples: int = 1) -> float | None:
        """The nearest-rank ``q`` quantile, or ``None`` with fewer than ``min_samples`` samples."""
        n = len(self._sorted)
        if n == 0 or n < min_samples:
            return None
        rank = min(n - 1, max(0, int(q * n + 0.999999999) - 1))
        return self._sorted[rank]


class HedgeBudget:
    """At most ``ratio`` hedges per request over (about) the last ``window`` requests.

    The window slides in ``buckets`` steps: counts live in a ring of buckets of
    ``window / buckets`` requests each, and the oldest bucket is dropped as a
    new one starts. A hedge is allowed when, counting it, the hedges in the
    window stay within ``ratio`` times its requests.
    """

    __slots__ = ("_bucket_size", "_hedges", "_index", "_requests", "hedges", "ratio", "requests")

    def __init__(self, ratio: float = 0.05, window: int = 1000, buckets: int = 10) -> None:
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must be between 0 and 1, got {ratio}")
        if window < 1 or buckets < 1:
            raise ValueError("window and buckets must be >= 1")
        self.ratio = ratio
        self._bucket_size = max(1, window // buckets)
        self._requests = [0] * buckets
        self._hedges = [0] * buckets
        self._index = 0
        #: In the window now.
        self.requests = 0
        self.hedges = 0

    def request(self) -> None:
        """Count one request (call once per request, not per attempt)."""
        index = self._index
        if self._requests[index] >= self._bucket_size:
            index = self._index = (index + 1) % len(self._requests)
            self.requests -= self._requests[index]
            self.hedges -= self._hedges[index]
            self._requests[index] = 0
            self._hedges[index] = 0
        self._requests[index] += 1
        self.requests += 1

    def try_spend(self, ratio: float | None = None) -> bool:
        """Take one hedge from the budget if it has room (``ratio``: this caller's, else the budget's)."""
        if self.hedges + 1 > (self.ratio if ratio is None else ratio) * self.requests:
            return False
        self._hedges[self._index] += 1
        self.hedges += 1
        return True
