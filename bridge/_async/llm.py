"""The LLM component's facade, and the transports that record and replay its exchanges.

In shadow the served client makes the one real request while its transport
records the exchange (``bridge/tape.py``); the candidate client, built on a
replay transport with no waits between retries, parses the same bytes after
it. The candidate needs the recording, so it runs after the served call, and
is judged in the background.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Protocol, TypeVar

import httpx

from bridge._async._compat import AResult, aspawn
from bridge._async.dispatch import AsyncDispatcher
from bridge.ledger import Outcome
from bridge.routing import Route
from bridge.tape import Exchange, is_chat, record, recording, replay, replaying
from codeagent.protocols import AsyncLLM, Message, SyncLLM

T = TypeVar("T")


class _Closeable(Protocol):
    async def aclose(self) -> None: ...


class AsyncRecordingTransport(httpx.AsyncBaseTransport):
    """Wraps a real transport; copies chat exchanges onto the tape when one is being recorded."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Forward the request; record the exchange when a recording is active."""
        response = await self.inner.handle_async_request(request)
        if not is_chat(request) or recording.get() is None:
            return response
        try:
            body = await response.aread()
        finally:
            await response.aclose()
        return record(response, body)

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self.inner.aclose()


class AsyncReplayTransport(httpx.AsyncBaseTransport):
    """Answers chat requests from the tape being replayed; never touches the network."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Answer from the recording (no I/O)."""
        return replay(request)


async def _on_tape(
    var: ContextVar[list[Exchange] | None], tape: list[Exchange], call: Callable[[], AResult[T]]
) -> T:
    token = var.set(tape)
    try:
        return await call()
    finally:
        var.reset(token)


class AsyncLLMFacade:
    """The LLM client, routed."""

    def __init__(
        self,
        dispatcher: AsyncDispatcher,
        legacy: SyncLLM,
        new: AsyncLLM,
        legacy_replay: SyncLLM,
        new_replay: AsyncLLM,
        *,
        closing: Sequence[_Closeable] = (),
    ) -> None:
        self.d = dispatcher
        self.legacy, self.new = legacy, new
        self.legacy_replay, self.new_replay = legacy_replay, new_replay
        self.closing = list(closing)

    async def chat(self, messages: list[Message]) -> str:
        """One chat completion through the path the flags choose."""
        d = self.d
        ledger = d.ledger
        decision = ledger.router.decide("llm")
        counters = ledger.count("llm")
        if decision.route is Route.LEGACY:
            counters.legacy += 1
            return await d.blocking.run(lambda: self.legacy.chat(messages))
        if decision.route is Route.NEW:
            counters.new += 1
            outcome = await d.timed(lambda: self.new.chat(messages))
            ledger.record_new("llm", failed=outcome.error is not None)
            return _text(outcome)
        counters.shadow += 1
        serve_new = decision.serve == "new"

        async def served_call() -> str:
            if serve_new:
                return await self.new.chat(messages)
            return await d.blocking.run(lambda: self.legacy.chat(messages))

        async def replayed_call() -> str:
            if serve_new:
                return await d.blocking.run(lambda: self.legacy_replay.chat(messages))
            return await self.new_replay.chat(messages)

        tape: list[Exchange] = []
        served = await d.timed(lambda: _on_tape(recording, tape, served_call))
        candidate = aspawn(d.timed(lambda: _on_tape(replaying, list(tape), replayed_call)))

        async def judge() -> None:
            other = await candidate.result_within(d.shadow_timeout)
            if other is None:
                ledger.candidate_timed_out("llm", serve_new)
                return
            legacy, new = (other, served) if serve_new else (served, other)
            ledger.compare("llm", "chat", decision.serve, legacy, new)

        d.background.start(judge)
        return _text(served)

    async def aclose(self) -> None:
        """Close every client this facade holds (and what was handed over for closing)."""
        for client in (self.new, self.new_replay, *self.closing):
            await client.aclose()
        for sync_client in (self.legacy, self.legacy_replay):
            await self.d.blocking.run(sync_client.close)


def _text(outcome: Outcome) -> str:
    value = outcome.unwrap()
    assert isinstance(value, str)
    return value
