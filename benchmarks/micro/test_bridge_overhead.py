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
from pytest_benchmark.fixture import BenchmarkFixture

from bridge._async.dispatch import AsyncDispatcher
from bridge._sync.dispatch import SyncDispatcher
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
def runtime(tmp_path: Path) -> Iterator[BridgeRuntime]:
    update_flags(
        tmp_path / ".agent/flags.toml",
        components={"todos": ComponentChange(mode=Mode.NEW)},
        source="cli",
        reason="bench",
    )
    runtime = BridgeRuntime(tmp_path, watch=False, health_interval=3600)
    yield runtime
    runtime.close()


@pytest.fixture
def sync_dispatcher(runtime: BridgeRuntime) -> SyncDispatcher:
    """The sync face's dispatcher (the legacy loop's facades route through it)."""
    return runtime.sync_dispatcher()


@pytest.fixture
def async_dispatcher(runtime: BridgeRuntime) -> AsyncDispatcher:
    """The async face's dispatcher (the async core's facades route through it)."""
    return runtime.async_dispatcher()


def test_direct_sync_call(benchmark: BenchmarkFixture) -> None:
    impl = Noop()

    def run() -> None:
        for _ in range(N):
            impl.load()

    benchmark(run)


def test_routed_sync_call_mode_new(benchmark: BenchmarkFixture, sync_dispatcher: SyncDispatcher) -> None:
    legacy, new = Noop(), Noop()

    def run() -> None:
        for _ in range(N):
            sync_dispatcher.call("todos", "load", legacy.load, new.load)

    benchmark(run)


def test_direct_async_call(benchmark: BenchmarkFixture) -> None:
    impl = AsyncNoop()

    async def many() -> None:
        for _ in range(N):
            await impl.load()

    loop = asyncio.new_event_loop()
    benchmark(lambda: loop.run_until_complete(many()))
    loop.close()


def test_routed_async_call_mode_new(benchmark: BenchmarkFixture, async_dispatcher: AsyncDispatcher) -> None:
    legacy, new = Noop(), AsyncNoop()

    async def many() -> None:
        for _ in range(N):
            await async_dispatcher.call("todos", "load", legacy.load, new.load)

    loop = asyncio.new_event_loop()
    benchmark(lambda: loop.run_until_complete(many()))
    loop.close()
