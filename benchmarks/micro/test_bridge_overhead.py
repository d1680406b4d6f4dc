"""Bridge overhead per routed call (mode ``new``), sync and async faces, against a direct call.

The component is a no-op so the figure is the routing itself: flag snapshot
read, decision, counters, health record. Target: <= 2 microseconds.
Run: ``nox -s bench`` (or ``pytest benchmarks/micro/test_bridge_overhead.py --benchmark-only``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from bridge.dispatch import Dispatcher
from pytest_benchmark.fixture import BenchmarkFixture

from bridge.runtime import BridgeRuntime
from feature_flags import ComponentChange, Mode, update_flags

N = 1000


class Noop:
    def load(self) -> int:
        return 1


class AsyncNoop:
    async def load(self) -> int:
        return 1


@pytest.fixture
def dispatcher(tmp_path: Path) -> Iterator[Dispatcher]:
    update_flags(
        tmp_path / ".agent/flags.toml",
        components={"todos": ComponentChange(mode=Mode.NEW)},
        source="cli",
        reason="bench",
    )
    runtime = BridgeRuntime(tmp_path, watch=False, health_interval=3600)
    yield runtime.dispatcher
    runtime.close()


def test_direct_sync_call(benchmark: BenchmarkFixture) -> None:
    impl = Noop()

    def run() -> None:
        for _ in range(N):
            impl.load()

    benchmark(run)


def test_routed_sync_call_mode_new(benchmark: BenchmarkFixture, dispatcher: Dispatcher) -> None:
    legacy, new = Noop(), Noop()

    def run() -> None:
        for _ in range(N):
            dispatcher.call("todos", "load", legacy.load, new.load)

    benchmark(run)


def test_direct_async_call(benchmark: BenchmarkFixture) -> None:
    impl = AsyncNoop()

    async def many() -> None:
        for _ in range(N):
            await impl.load()

    loop = asyncio.new_event_loop()
    benchmark(lambda: loop.run_until_complete(many()))
    loop.close()


def test_routed_async_call_mode_new(benchmark: BenchmarkFixture, dispatcher: Dispatcher) -> None:
    legacy, new = Noop(), AsyncNoop()

    async def many() -> None:
        for _ in range(N):
            await dispatcher.acall("todos", "load", legacy.load, new.load)

    loop = asyncio.new_event_loop()
    benchmark(lambda: loop.run_until_complete(many()))
    loop.close()
