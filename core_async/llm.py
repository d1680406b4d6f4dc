"""The async LLM client: chat completions over a pooled endpoint, with retries, deadlines and short tails.

Behaviour shared with the legacy client (same errors, same messages): bounded
retries (``max_retries`` after the first attempt) on 5xx, 429, connection
failures (refused, reset, GOAWAY), timeouts and 200s whose body is cut short
(not decodable JSON); a 429 waits what the server asks (``retry-after-ms``,
else ``Retry-After``, capped); quota exhaustion, other 4xx answers and 200s
that are JSON but not a completion fail at once. Added here:

* full-jitter backoff; every attempt and every wait bounded by the request's
  deadline (a hard ``atimeout`` in async code, the remaining time passed to
  httpx in the generated sync twin);
* HTTP/1.1 on aiohttp by default (:data:`~core_async.llm_transport.DEFAULT_TRANSPORT`;
  the generated sync twin: HTTP/1.1 keep-alive on httpcore), another
  transport per endpoint on request;
* the endpoint's slots as the only queue, shared with every client of the
  same :class:`~core_async.llm_transport.AsyncEndpointPool`;
* an optional shared :class:`~core_async.ratelimit.AsyncTokenBucket`;
* short tails (:class:`~core_async.llm_wire.TailPolicy`, every switch on by
  default): a hedged request when an attempt has no first byte by the
  endpoint's observed p95 time to first byte (at most one per request, at
  most 5% of requests, the loser cancelled and counted once); an idle timeout
  on every answer once it has started; during a burst of 429s every request to
  the endpoint waits for the latest ``Retry-After``
  (:class:`~core_async.ratelimit.AsyncRetryGate`). The sync twin never hedges
  and has no idle timer (a thread cannot be interrupted); it paces the same way;
* :meth:`AsyncLLMClient.complete_many`: a batch sent at once, one result or
  typed error per request, in order, never one failure sinking the batch;
* :meth:`AsyncLLMClient.stream_chat`: streamed deltas (server-sent events);
  ``stream=True`` makes :meth:`AsyncLLMClient.chat` itself stream and join them.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import httpx

from codeagent.config import LLMConfig
from codeagent.errors import LLMConnectionError, LLMError, LLMRateLimited, LLMTimeout
from core_async._compat import AsyncHedge, agather, asleep, atimeout
from core_async.llm_transport import DEFAULT_HTTP_VERSION, AsyncEndpointPool, Endpoint, HTTPVersion
from core_async.llm_wire import (
    AsyncAnswer,
    LLMCutShort,
    Message,
    RetryPolicy,
    TailPolicy,
    chat_body,
    classify_error_status,
    completion_content,
    sse_delta,
    sse_done,
)
from core_async.ratelimit import AsyncTokenBucket

log = logging.getLogger(__name__)


def _earliest(*deadlines: float | None) -> float | None:
    known = [d for d in deadlines if d is not None]
    return min(known) if known else None


def tail_policy(config: LLMConfig, *, replay: bool = False) -> TailPolicy:
    """The tail-latency switches of an LLM configuration (all off for a client that replays a tape)."""
    if replay:
        return TailPolicy.off()
    return TailPolicy(
        hedge=config.hedge,
        stream_idle_timeout=config.stream_idle_timeout,
        pace_retry_after=config.pace_retry_after,
    )


@dataclass(slots=True)
class _Outcome:
    """How one attempt ended: the answer, or an error and whether another attempt may fix it."""

    text: str | None = None
    error: LLMError | None = None
    #: The server's own wait before another attempt (a 429's Retry-After), if it gave one.
    wait: float | None = None
    #: No retry can fix it (quota, another 4xx, a 200 that is JSON but no completion).
    fatal: bool = False


def _settles(outcome: _Outcome) -> bool:
    """Whether an outcome ends a hedged race: an answer, or a failure no retry can fix."""
    return outcome.text is not None or outcome.fatal


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
        transport: HTTPVersion | str | None = None,
        rate_limiter: AsyncTokenBucket | None = None,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        max_retry_after: float = 30.0,
        rng: random.Random | None = None,
        batch_concurrency: int | None = None,
        tail: TailPolicy | None = None,
        stream: bool = False,
    ) -> None:
        """``http_version`` is the transport of the pool the client makes when none is given;
        ``transport`` the one it asks a pool for (``None``: that pool's default)."""
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.model = model
        self.timeout = timeout
        self.temperature = temperature
        self.policy = RetryPolicy(max_retries, backoff_base, backoff_max, max_retry_after)
        self.tail = tail if tail is not None else TailPolicy()
        self.stream = stream
        self.rate_limiter = rate_limiter
        self._owns_pool = pool is None
        self.pool = pool if pool is not None else AsyncEndpointPool(http_version)
        self.transport = None if transport is None else HTTPVersion(transport)
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json",
            "Content-Type": "application/json",
        }
        self._rng = rng or random.Random()
        limits = self.pool.limits
        self.batch_concurrency = batch_concurrency or max(limits.http1_connections, limits.http2_streams)
        self.retries = 0

    def _budget(self, deadline: float | None) -> float:
        if deadline is None:
            return self.timeout
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LLMTimeout(f"no answer from {self.url} before the deadline")
        return min(self.timeout, remaining)

    async def _endpoint(self) -> Endpoint:
        return await self.pool.endpoint(self.base_url, self.transport)

    async def _pace(self, endpoint: Endpoint, deadline: float | None, last: LLMError | None) -> None:
        """Wait while the endpoint's Retry-After gate is closed (a burst of 429s), within the deadline."""
        if not self.tail.pace_retry_after or await endpoint.tail.gate.wait(deadline):
            return
        if last is not None:
            raise last
        raise LLMRateLimited(429, f"{self.url} is rate limited past this request's deadline")

    def _hedge_delay(self, endpoint: Endpoint) -> float | None:
        """When to hedge an attempt: the observed quantile of time to first byte (``None``: do not)."""
        tail = self.tail
        if not tail.hedge:
            return None
        return endpoint.tail.ttfb.quantile(tail.hedge_quantile, tail.hedge_min_samples)

    def _may_hedge(self, endpoint: Endpoint) -> bool:
        """Whether a hedge may be sent now: a free slot, no burst of 429s, room in the budget."""
        state = endpoint.tail
        if endpoint.in_flight >= endpoint.capacity or state.gate.burst:
            return False
        if not state.budget.try_spend(self.tail.hedge_budget):
            return False
        state.hedges += 1
        return True

    async def _read(self, endpoint: Endpoint, response: AsyncAnswer, budget: float) -> _Outcome:
        """Read an answer whose headers have arrived and say how the attempt ended."""
        state = endpoint.tail
        idle = self.tail.stream_idle_timeout
        try:
            if response.status_code != 200:
                async with atimeout(idle):
                    await response.aread()
                try:
                    retry = classify_error_status(response, self.policy)
                except LLMError as exc:
                    state.gate.answered(False)
                    return _Outcome(error=exc, fatal=True)
                state.gate.answered(response.status_code == 429, retry.wait)
                return _Outcome(error=retry.error, wait=retry.wait)
            state.gate.answered(False)
            if self.stream:
                return _Outcome(text=await self._join_stream(response, idle))
            async with atimeout(idle):
                await response.aread()
            return _Outcome(text=completion_content(response))
        except TimeoutError:
            state.idle_timeouts += 1
            return _Outcome(error=LLMTimeout(f"answer from {self.url} stalled: no byte for {idle:g}s"))
        except httpx.TimeoutException as exc:
            return _Outcome(
                error=LLMTimeout(f"no answer from {self.url} within {budget:g}s ({type(exc).__name__})")
            )
        except httpx.TransportError as exc:
            return _Outcome(error=LLMConnectionError(f"{self.url}: {type(exc).__name__}: {exc}"))
        except LLMCutShort as exc:
            state.cut_short += 1
            return _Outcome(error=exc)
        except LLMError as exc:
            return _Outcome(error=exc, fatal=True)

    async def _join_stream(self, response: AsyncAnswer, idle: float | None) -> str:
        """The text of a streamed answer; :class:`LLMCutShort` if it ends before ``[DONE]``."""
        parts: list[str] = []
        lines = response.aiter_lines()
        while True:
            try:
                async with atimeout(idle):
                    line = await lines.__anext__()
            except StopAsyncIteration:
                raise LLMCutShort(f"the stream from {self.url} ended before [DONE]") from None
            if sse_done(line):
                return "".join(parts)
            delta = sse_delta(line)
            if delta is not None:
                parts.append(delta)

    async def _attempt(
        self,
        endpoint: Endpoint,
        messages: list[Message],
        budget: float,
        hedge: AsyncHedge[_Outcome],
        copy: bool,
    ) -> _Outcome:
        """One request, the first or its hedged copy, from slot to outcome; the slot is always given back."""
        state = endpoint.tail
        if self.rate_limiter is not None:
            await self.rate_limiter.acquire()
        await endpoint.slots.acquire()
        endpoint.in_flight += 1
        try:
            if not copy:
                state.attempts += 1
            started = time.monotonic()
            body = chat_body(self.model, messages, self.temperature, stream=self.stream)
            try:
                response = await endpoint.post(self.url, body, self._headers, budget)
            except httpx.TimeoutException as exc:
                return _Outcome(
                    error=LLMTimeout(f"no answer from {self.url} within {budget:g}s ({type(exc).__name__})")
                )
            except httpx.TransportError as exc:
                return _Outcome(error=LLMConnectionError(f"{self.url}: {type(exc).__name__}: {exc}"))
            if not copy:  # a copy's time is not sampled: only the copies that beat their first get that far
                state.ttfb.add(time.monotonic() - started)
                hedge.first_byte()
            try:
                return await self._read(endpoint, response, budget)
            finally:
                await response.aclose()
        finally:
            endpoint.in_flight -= 1
            endpoint.slots.release()

    async def _opened(self) -> tuple[Endpoint | None, LLMError | None]:
        """The endpoint, or why it cannot be had now (a ``probe`` that cannot connect: retried)."""
        try:
            return await self._endpoint(), None
        except httpx.TransportError as exc:
            return None, LLMConnectionError(f"{self.url}: {type(exc).__name__}: {exc}")

    async def _hedged(
        self, endpoint: Endpoint, messages: list[Message], budget: float, hedge_ok: bool
    ) -> tuple[_Outcome, bool]:
        """One attempt, raced by a hedge if it is slow to start (``hedge_ok``); ``(outcome, hedge sent)``."""
        state = endpoint.tail
        hedge: AsyncHedge[_Outcome] = AsyncHedge()
        started = time.monotonic()
        outcome = await hedge.run(
            functools.partial(self._attempt, endpoint, messages, budget, hedge),
            self._hedge_delay(endpoint) if hedge_ok else None,
            functools.partial(self._may_hedge, endpoint),
            _settles,
        )
        if hedge.won:
            state.hedge_wins += 1
            if not hedge.primary_started:  # the first attempt took at least this long to start
                state.ttfb.add(time.monotonic() - started)
        return outcome, hedge.sent

    def _next_wait(self, attempt: int, outcome: _Outcome, deadline: float | None) -> float | None:
        """Seconds to wait before the next attempt after ``outcome``; ``None``: no next attempt."""
        if attempt == self.policy.max_retries:
            return None
        delay = outcome.wait if outcome.wait is not None else self.policy.backoff(attempt, self._rng)
        if deadline is not None and time.monotonic() + delay >= deadline:
            return None
        self.retries += 1
        log.warning(
            "LLM attempt %d/%d failed (%s); retrying in %.2fs",
            attempt + 1,
            self.policy.max_retries + 1,
            outcome.error,
            delay,
        )
        return delay

    async def _complete(self, messages: list[Message], deadline: float | None) -> str:
        """Attempt (hedged) until an answer; raise the typed error of the last failure otherwise."""
        endpoint: Endpoint | None = None
        hedged = False
        last: LLMError | None = None
        for attempt in range(self.policy.max_retries + 1):
            outcome = _Outcome()
            if endpoint is None:
                endpoint, outcome.error = await self._opened()
                if endpoint is not None:
                    endpoint.tail.requests += 1
                    endpoint.tail.budget.request()
            if endpoint is not None:
                await self._pace(endpoint, deadline, last)
                budget = self._budget(deadline)
                outcome, sent = await self._hedged(endpoint, messages, budget, not hedged)
                hedged = hedged or sent
                if outcome.text is not None:
                    return outcome.text
            assert outcome.error is not None
            if outcome.fatal:
                raise outcome.error
            last = outcome.error
            delay = self._next_wait(attempt, outcome, deadline)
            if delay is None:
                break
            await asleep(delay)
        assert last is not None
        raise last

    async def chat(self, messages: list[Message], *, deadline: float | None = None) -> str:
        """Send one chat completion request; return the assistant's text.

        ``deadline`` (a ``time.monotonic()`` instant) bounds the whole call,
        waits and retries included. Raises :class:`LLMTimeout`,
        :class:`LLMConnectionError`, :class:`LLMRateLimited`,
        :class:`LLMHTTPError` or :class:`~core_async.llm_wire.LLMCutShort`
        (after the retries are spent), :class:`LLMQuotaExceeded` or
        :class:`LLMMalformedResponse` (at once).
        """
        if deadline is None:
            return await self._complete(messages, None)
        try:
            async with atimeout(max(0.0, deadline - time.monotonic())):
                return await self._complete(messages, deadline)
        except TimeoutError:
            raise LLMTimeout(f"no answer from {self.url} before the deadline") from None

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

        At most ``batch_concurrency`` requests are in flight (by default as many
        as an endpoint has slots), served by that many workers rather than one
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

    async def _open_stream(
        self, messages: list[Message], deadline: float | None
    ) -> tuple[Endpoint, AsyncAnswer]:
        """A streamed 200 whose body is still to be read (its slot held); failures before it are retried."""
        endpoint: Endpoint | None = None
        last: LLMError | None = None
        for attempt in range(self.policy.max_retries + 1):
            outcome = _Outcome()
            if endpoint is None:
                endpoint, outcome.error = await self._opened()
                if endpoint is not None:
                    endpoint.tail.requests += 1
                    endpoint.tail.budget.request()
            if endpoint is not None:
                await self._pace(endpoint, deadline, last)
                opened = await self._stream_attempt(endpoint, messages, self._budget(deadline))
                if not isinstance(opened, _Outcome):
                    return endpoint, opened
                outcome = opened
            assert outcome.error is not None
            if outcome.fatal:
                raise outcome.error
            last = outcome.error
            delay = self._next_wait(attempt, outcome, deadline)
            if delay is None:
                break
            await asleep(delay)
        assert last is not None
        raise last

    async def _stream_attempt(
        self, endpoint: Endpoint, messages: list[Message], budget: float
    ) -> AsyncAnswer | _Outcome:
        """One streamed request: the open 200 (its slot held until it is closed), or how it failed."""
        state = endpoint.tail
        if self.rate_limiter is not None:
            await self.rate_limiter.acquire()
        await endpoint.slots.acquire()
        endpoint.in_flight += 1
        state.attempts += 1
        opened = False
        try:
            body = chat_body(self.model, messages, self.temperature, stream=True)
            started = time.monotonic()
            try:
                response = await endpoint.post(self.url, body, self._headers, budget)
            except httpx.TimeoutException as exc:
                return _Outcome(
                    error=LLMTimeout(f"no answer from {self.url} within {budget:g}s ({type(exc).__name__})")
                )
            except httpx.TransportError as exc:
                return _Outcome(error=LLMConnectionError(f"{self.url}: {type(exc).__name__}: {exc}"))
            state.ttfb.add(time.monotonic() - started)
            if response.status_code == 200:
                state.gate.answered(False)
                opened = True
                return response
            try:
                return await self._read(endpoint, response, budget)
            finally:
                await response.aclose()
        finally:
            if not opened:
                endpoint.in_flight -= 1
                endpoint.slots.release()

    async def stream_chat(
        self, messages: list[Message], *, deadline: float | None = None
    ) -> AsyncIterator[str]:
        """Yield the assistant's text as it arrives (``stream: true``, server-sent events).

        Failures before the first byte are retried like :meth:`chat` (never
        hedged: the answer is handed out as it comes); after it they raise
        :class:`LLMTimeout` / :class:`LLMConnectionError`, or
        :class:`~core_async.llm_wire.LLMCutShort` for a chunk that is not JSON.
        Each read waits at most the client's timeout (or what is left of
        ``deadline``), and at most the idle timeout once the answer has started.
        """
        endpoint, response = await self._open_stream(messages, deadline)
        idle = self.tail.stream_idle_timeout
        try:
            lines = response.aiter_lines()
            while True:
                try:
                    async with atimeout(idle):
                        line = await lines.__anext__()
                except StopAsyncIteration:
                    return
                delta = sse_delta(line)
                if delta is not None:
                    yield delta
        except TimeoutError as exc:
            endpoint.tail.idle_timeouts += 1
            raise LLMTimeout(f"stream from {self.url} stalled: no byte for {idle:g}s") from exc
        except httpx.TimeoutException as exc:
            raise LLMTimeout(f"stream from {self.url} stalled ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise LLMConnectionError(f"{self.url}: stream broken: {type(exc).__name__}: {exc}") from exc
        finally:
            try:
                await response.aclose()
            finally:
                endpoint.in_flight -= 1
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
