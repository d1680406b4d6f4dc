"""The LLM component's facades: legacy client, new client, and shadow by record-and-replay.

In shadow the served client makes the one real request, its exchange is
recorded (:mod:`bridge.llm_replay`), and the candidate client, built on a
replay transport with no backoff, parses the same bytes. The candidate runs
after the served call (it needs the recording) but costs no network time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import Protocol, TypeVar

from bridge.dispatch import Dispatcher, Outcome
from bridge.health import ERROR, OK
from bridge.llm_replay import Exchange, recording, replaying
from bridge.routing import Route
from codeagent.protocols import AsyncLLM, Message, SyncLLM

T = TypeVar("T")


class Closeable(Protocol):
    def close(self) -> None: ...


class AsyncCloseable(Protocol):
    async def aclose(self) -> None: ...


Tape = ContextVar[list[Exchange] | None]


def _run_with(var: Tape, value: list[Exchange], fn: Callable[[], T]) -> T:
    token = var.set(value)
    try:
        return fn()
    finally:
        var.reset(token)


class SyncLLMFacade:
    """The LLM client, routed, for the sync loop."""

    component = "llm"

    def __init__(
        self,
        dispatcher: Dispatcher,
        legacy: SyncLLM,
        new: SyncLLM,
        legacy_replay: SyncLLM,
        new_replay: SyncLLM,
        *,
        pools: Sequence[Closeable] = (),
    ) -> None:
        self.d = dispatcher
        self.legacy, self.new = legacy, new
        self.legacy_replay, self.new_replay = legacy_replay, new_replay
        self.pools = list(pools)

    def chat(self, messages: list[Message]) -> str:
        decision = self.d.router.decide("llm")
        counters = self.d.count("llm")
        if decision.route is Route.LEGACY:
            counters.legacy += 1
            return self.legacy.chat(messages)
        if decision.route is Route.NEW:
            counters.new += 1
            outcome = self.d.run_timed(lambda: self.new.chat(messages))
            self.d.monitor.record("llm", ERROR if outcome.error else OK)
            return _unwrap(outcome)
        counters.shadow += 1
        serve_new = decision.serve == "new"
        served_client, candidate = (
            (self.new, self.legacy_replay) if serve_new else (self.legacy, self.new_replay)
        )
        tape: list[Exchange] = []
        served = _run_with(recording, tape, lambda: self.d.run_timed(lambda: served_client.chat(messages)))
        other = _run_with(replaying, list(tape), lambda: self.d.run_timed(lambda: candidate.chat(messages)))
        lo, no = (other, served) if serve_new else (served, other)
        self.d.compare("llm", "chat", decision.serve, lo, no, _same)
        return _unwrap(served)

    def close(self) -> None:
        for client in (self.legacy, self.new, self.legacy_replay, self.new_replay, *self.pools):
            client.close()


class AsyncLLMFacade:
    """The LLM client, routed, for the async core (legacy client off the loop)."""

    component = "llm"

    def __init__(
        self,
        dispatcher: Dispatcher,
        legacy: SyncLLM,
        new: AsyncLLM,
        legacy_replay: SyncLLM,
        new_replay: AsyncLLM,
        *,
        pools: Sequence[AsyncCloseable] = (),
    ) -> None:
        self.d = dispatcher
        self.legacy, self.new = legacy, new
        self.legacy_replay, self.new_replay = legacy_replay, new_replay
        self.pools = list(pools)

    async def chat(self, messages: list[Message]) -> str:
        """One chat completion through the path the flags choose."""
        decision = self.d.router.decide("llm")
        counters = self.d.count("llm")
        if decision.route is Route.LEGACY:
            counters.legacy += 1
            return await self.d.off_loop(lambda: self.legacy.chat(messages))
        if decision.route is Route.NEW:
            counters.new += 1
            outcome = await self.d.arun_timed(lambda: self.new.chat(messages))
            self.d.monitor.record("llm", ERROR if outcome.error else OK)
            return _unwrap(outcome)
        counters.shadow += 1
        serve_new = decision.serve == "new"
        tape: list[Exchange] = []
        served = await self._with(recording, tape, serve_new, messages, replay=False)
        other = await self._with(replaying, list(tape), not serve_new, messages, replay=True)
        lo, no = (other, served) if serve_new else (served, other)
        self.d.compare("llm", "chat", decision.serve, lo, no, _same)
        return _unwrap(served)

    async def _with(
        self, var: Tape, tape: list[Exchange], use_new: bool, messages: list[Message], *, replay: bool
    ) -> Outcome:
        token = var.set(tape)
        try:
            if use_new:
                client = self.new_replay if replay else self.new
                call: Callable[[], Awaitable[str]] = lambda: client.chat(messages)  # noqa: E731
                return await self.d.arun_timed(call)
            sync_client = self.legacy_replay if replay else self.legacy
            return await self.d.arun_timed(lambda: self.d.off_loop(lambda: sync_client.chat(messages)))
        finally:
            var.reset(token)

    async def aclose(self) -> None:
        """Close every client this facade holds."""
        for client in (self.new, self.new_replay, *self.pools):
            await client.aclose()
        for sync_client in (self.legacy, self.legacy_replay):
            await self.d.off_loop(sync_client.close)


def _same(value: object) -> object:
    return value


def _unwrap(outcome: Outcome) -> str:
    if outcome.error is not None:
        raise outcome.error
    assert isinstance(outcome.value, str)
    return outcome.value
