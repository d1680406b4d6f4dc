"""The async LLM client: chat completions over a pooled HTTP/2 endpoint, with retries and deadlines.

Behaviour shared with the legacy client (same errors, same messages): bounded
retries (``max_retries`` after the first attempt) on 5xx, 429, connection
failures (refused, reset, GOAWAY) and timeouts; a 429 waits what the server
asks (``retry-after-ms``, else ``Retry-After``, capped); quota exhaustion, other
4xx answers and malformed 200 bodies fail at once. Added here:

* full-jitter backoff; every attempt and every wait bounded by the request's
  deadline (a hard ``atimeout`` in async code, the remaining time passed to
  httpx in the generated sync twin);
* HTTP/2 by default (:data:`~core_async.llm_transport.DEFAULT_HTTP_VERSION`;
  the generated sync twin defaults to HTTP/1.1 keep-alive instead);
* the endpoint's slots as the only queue, shared with every client of the
  same :class:`~core_async.llm_transport.AsyncEndpointPool`;
* an optional shared :class:`~core_async.ratelimit.AsyncTokenBucket`;
* :meth:`AsyncLLMClient.complete_many`: a batch sent at once, one result or
  typed error per request, in order, never one failure sinking the batch;
* :meth:`AsyncLLMClient.stream_chat`: streamed deltas (server-sent events).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from types import TracebackType
from typing import Self

import httpx

from codeagent.errors import LLMConnectionError, LLMError, LLMTimeout
from core_async._compat import agather, asleep, atimeout
from core_async.llm_transport import DEFAULT_HTTP_VERSION, AsyncEndpointPool, Endpoint, HTTPVersion
from core_async.llm_wire import (
    Message,
    RetryPolicy,
    chat_payload,
    classify_error_status,
    completion_content,
    sse_delta,
)
from core_async.ratelimit import AsyncTokenBucket

log = logging.getLogger(__name__)


def _earliest(*deadlines: float | None) -> float | None:
    known = [d for d in deadlines if d is not None]
    return min(known) if known else None


class AsyncLLMClient:
    """A chat-completions client for one OpenAI-compatible endpoint."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        model: str,
        timeout: float,
        max_retries: int,
        temperature: float = 0.0,
        *,
        pool: AsyncEndpointPool | None = None,
        http_version: HTTPVersion | str = DEFAULT_HTTP_VERSION,
        rate_limiter: AsyncTokenBucket | None = None,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        max_retry_after: float = 30.0,
        rng: random.Random | None = None,
        batch_concurrency: int | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.model = model
        self.timeout = timeout
        self.temperature = temperature
        self.policy = RetryPolicy(max_retries, backoff_base, backoff_max, max_retry_after)
        self.rate_limiter = rate_limiter
        self._owns_pool = pool is None
        self.pool = pool if pool is not None else AsyncEndpointPool(http_version)
        self._headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
        self._rng = rng or random.Random()
        self.batch_concurrency = batch_concurrency or self.pool.limits.http2_streams
        self.retries = 0

    def _budget(self, deadline: float | None) -> float:
        if deadline is None:
            return self.timeout
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LLMTimeout(f"no answer from {self.url} before the deadline")
        return min(self.timeout, remaining)

    async def _attempt(
        self, messages: list[Message], stream: bool, budget: float
    ) -> tuple[Endpoint, httpx.Response]:
        """One request. A 200 stream stays open and keeps its slot; anything else is read and released."""
        if self.rate_limiter is not None:
            await self.rate_limiter.acquire()
        endpoint = await self.pool.endpoint(self.base_url)
        await endpoint.slots.acquire()
        try:
            request = endpoint.client.build_request(
                "POST",
                self.url,
                json=chat_payload(self.model, messages, self.temperature, stream=stream),
                headers=self._headers,
                timeout=httpx.Timeout(budget, pool=None),
                extensions=endpoint.extensions,
            )
            response = await endpoint.client.send(request, stream=stream)
            if stream and response.status_code != 200:
                try:
                    await response.aread()
                finally:
                    await response.aclose()
        except BaseException:
            endpoint.slots.release()
            raise
        if not stream or response.status_code != 200:
            endpoint.slots.release()
        return endpoint, response

    async def _request(
        self, messages: list[Message], *, stream: bool, deadline: float | None
    ) -> tuple[Endpoint, httpx.Response]:
        """Attempt until a 200 arrives; raise the typed error of the last failure otherwise."""
        last: LLMError | None = None
        for attempt in range(self.policy.max_retries + 1):
            budget = self._budget(deadline)
            wait: float | None = None
            try:
                endpoint, response = await self._attempt(messages, stream, budget)
            except httpx.TimeoutException as exc:
                last = LLMTimeout(f"no answer from {self.url} within {budget:g}s ({type(exc).__name__})")
            except httpx.TransportError as exc:
                last = LLMConnectionError(f"{self.url}: {type(exc).__name__}: {exc}")
            else:
                if response.status_code == 200:
                    return endpoint, response
                retry = classify_error_status(response, self.policy)
                last, wait = retry.error, retry.wait
            if attempt == self.policy.max_retries:
                break
            delay = wait if wait is not None else self.policy.backoff(attempt, self._rng)
            if deadline is not None and time.monotonic() + delay >= deadline:
                break
            self.retries += 1
            log.warning(
                "LLM attempt %d/%d failed (%s); retrying in %.2fs",
                attempt + 1,
                self.policy.max_retries + 1,
                last,
                delay,
            )
            await asleep(delay)
        assert last is not None
        raise last

    async def chat(self, messages: list[Message], *, deadline: float | None = None) -> str:
        """Send one chat completion request; return the assistant's text.

        ``deadline`` (a ``time.monotonic()`` instant) bounds the whole call,
        waits and retries included. Raises :class:`LLMTimeout`,
        :class:`LLMConnectionError`, :class:`LLMRateLimited`,
        :class:`LLMHTTPError` (after the retries are spent),
        :class:`LLMQuotaExceeded` or :class:`LLMMalformedResponse` (at once).
        """
        hard_limit = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            async with atimeout(hard_limit):
                _endpoint, response = await self._request(messages, stream=False, deadline=deadline)
        except TimeoutError:
            raise LLMTimeout(f"no answer from {self.url} before the deadline") from None
        return completion_content(response)

    async def _settle(self, messages: list[Message], deadline: float | None) -> str | LLMError:
        try:
            return await self.chat(messages, deadline=deadline)
        except LLMError as exc:
            return exc
        except Exception as exc:
            log.exception("LLM request failed unexpectedly")
            return LLMError(f"{type(exc).__name__}: {exc}")

    async def _drain(
        self,
        queue: Iterator[tuple[int, list[Message]]],
        results: list[str | LLMError],
        per_request_timeout: float | None,
        overall: float | None,
    ) -> int:
        """One worker of a batch: take the next request, settle it, repeat; return how many it settled."""
        settled = 0
        for index, messages in queue:
            started = time.monotonic()
            own = None if per_request_timeout is None else started + per_request_timeout
            results[index] = await self._settle(messages, _earliest(overall, own))
            settled += 1
        return settled

    async def complete_many(
        self,
        batch: Sequence[list[Message]],
        per_request_timeout: float | None = None,
        overall_timeout: float | None = None,
    ) -> list[str | LLMError]:
        """Send the requests of ``batch`` concurrently; return, in order, each answer or its typed error.

        At most ``batch_concurrency`` requests are in flight (by default the
        endpoint's HTTP/2 slots), served by that many workers rather than one
        task per request. Each request ends ``per_request_timeout`` seconds
        after it starts and by ``overall_timeout`` after the call at the latest;
        a request still unanswered then is an :class:`LLMTimeout`. One
        request's failure never affects another's result.
        """
        overall = None if overall_timeout is None else time.monotonic() + overall_timeout
        results: list[str | LLMError] = [LLMTimeout("not started") for _ in batch]
        queue = iter(enumerate(batch))
        workers = max(1, min(len(batch), self.batch_concurrency))
        await agather(*(self._drain(queue, results, per_request_timeout, overall) for _ in range(workers)))
        return results

    async def stream_chat(
        self, messages: list[Message], *, deadline: float | None = None
    ) -> AsyncIterator[str]:
        """Yield the assistant's text as it arrives (``stream: true``, server-sent events).

        Failures before the first byte are retried like :meth:`chat`; after it
        they raise :class:`LLMTimeout` / :class:`LLMConnectionError`. Each read
        waits at most the client's timeout (or what is left of ``deadline``).
        """
        endpoint, response = await self._request(messages, stream=True, deadline=deadline)
        try:
            async for line in response.aiter_lines():
                delta = sse_delta(line)
                if delta is not None:
                    yield delta
        except httpx.TimeoutException as exc:
            raise LLMTimeout(f"stream from {self.url} stalled ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise LLMConnectionError(f"{self.url}: stream broken: {type(exc).__name__}: {exc}") from exc
        finally:
            try:
                await response.aclose()
            finally:
                endpoint.slots.release()

    async def aclose(self) -> None:
        """Close the endpoint pool if this client created it (a shared pool is its owner's to close)."""
        if self._owns_pool:
            await self.pool.aclose()

    async def __aenter__(self) -> Self:
        """Use the client as an async context manager; it closes on exit."""
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the client (see :meth:`aclose`)."""
        await self.aclose()
