"""AsyncIoCContainer: lazy async factories, singletons, reverse-order close that survives failures."""

from __future__ import annotations

import asyncio
import logging

import pytest

from core_async.kernel.container import (
    AsyncIoCContainer,
    ContainerError,
    DependencyCycle,
    Token,
    default_close,
    key_name,
)


class Resource:
    def __init__(self, name: str, log: list[str], *, fail: bool = False, hang: bool = False) -> None:
        self.name = name
        self.log = log
        self.fail = fail
        self.hang = hang
        self.closed = False

    async def aclose(self) -> None:
        if self.hang:
            await asyncio.sleep(3600)
        self.log.append(self.name)
        self.closed = True
        if self.fail:
            raise RuntimeError(f"{self.name} refused to close")


A: Token[Resource] = Token("a")
B: Token[Resource] = Token("b")
C: Token[Resource] = Token("c")


def factory(name: str, log: list[str], made: list[str], *, needs: Token[Resource] | None = None, **kw: bool):
    async def make(c: AsyncIoCContainer) -> Resource:
        if needs is not None:
            await c.resolve(needs)
        await asyncio.sleep(0)
        made.append(name)
        return Resource(name, log, **kw)

    return make


async def test_components_are_created_lazily_once_and_closed_in_reverse_order() -> None:
    closed: list[str] = []
    made: list[str] = []
    container = AsyncIoCContainer()
    container.register(A, factory("a", closed, made))
    container.register(B, factory("b", closed, made, needs=A))
    container.register(C, factory("c", closed, made))
    assert made == []  # nothing until asked for

    b = await container.resolve(B)  # builds A first, then B
    c = await container.resolve(C)
    assert await container.resolve(B) is b
    assert made == ["a", "b", "c"]
    assert container.created() == ["a", "b", "c"]

    assert await container.aclose() == []
    assert closed == ["c", "b", "a"]
    assert b.closed and c.closed
    assert await container.aclose() == []  # idempotent


async def test_concurrent_first_resolves_create_one_singleton() -> None:
    made: list[str] = []
    container = AsyncIoCContainer()
    container.register(A, factory("a", [], made))
    results = await asyncio.gather(*(container.resolve(A) for _ in range(20)))
    assert len({id(r) for r in results}) == 1
    assert made == ["a"]
    await container.aclose()


async def test_a_failing_close_is_reported_and_the_others_still_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed: list[str] = []
    container = AsyncIoCContainer()
    container.register(A, factory("a", closed, []))
    container.register(B, factory("b", closed, [], fail=True))
    container.register(C, factory("c", closed, []))
    for key in (A, B, C):
        await container.resolve(key)
    with caplog.at_level(logging.ERROR, logger="codeagent.kernel.container"):
        failures = await container.aclose()
    assert closed == ["c", "b", "a"]
    assert [f.key for f in failures] == ["b"]
    assert isinstance(failures[0].error, RuntimeError)
    assert "closing b failed" in caplog.text


async def test_a_hanging_close_times_out_and_shutdown_goes_on() -> None:
    closed: list[str] = []
    container = AsyncIoCContainer(close_timeout=0.05)
    container.register(A, factory("a", closed, []))
    container.register(B, factory("b", closed, [], hang=True))
    await container.resolve(A)
    await container.resolve(B)
    failures = await container.aclose()
    assert [f.key for f in failures] == ["b"]
    assert isinstance(failures[0].error, TimeoutError)
    assert closed == ["a"]


async def test_misuse_is_reported() -> None:
    container = AsyncIoCContainer()
    with pytest.raises(ContainerError, match="nothing registered for a"):
        await container.resolve(A)

    async def loop_a(c: AsyncIoCContainer) -> Resource:
        return await c.resolve(B)

    async def loop_b(c: AsyncIoCContainer) -> Resource:
        return await c.resolve(A)

    container.register(A, loop_a)
    container.register(B, loop_b)
    with pytest.raises(DependencyCycle, match="a -> b -> a"):
        await container.resolve(A)

    container.register(C, factory("c", [], []))
    await container.resolve(C)
    with pytest.raises(ContainerError, match="already created"):
        container.register(C, factory("c", [], []))
    await container.aclose()
    assert container.closed
    with pytest.raises(ContainerError, match="closed"):
        await container.resolve(C)
    with pytest.raises(ContainerError, match="closed"):
        container.register(Token("late"), factory("late", [], []))
    with pytest.raises(ContainerError, match="closed"):
        container.register_instance(Token("late"), 1)


async def test_a_failed_factory_is_not_cached_and_can_be_retried() -> None:
    attempts = []

    async def flaky(_: AsyncIoCContainer) -> Resource:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("port in use")
        return Resource("ok", [])

    container = AsyncIoCContainer()
    container.register(A, flaky)
    with pytest.raises(OSError, match="port in use"):
        await container.resolve(A)
    assert (await container.resolve(A)).name == "ok"
    assert container.created() == ["a"]
    await container.aclose()


async def test_transient_components_and_instances() -> None:
    closed: list[str] = []
    container = AsyncIoCContainer()
    container.register(A, factory("t", closed, []), singleton=False)
    first, second = await container.resolve(A), await container.resolve(A)
    assert first is not second
    shown: list[str] = []
    given: Token[Resource] = Token("given")
    container.register_instance(given, Resource("given", shown), close=lambda r: shown.append("closed"))
    container.register_instance(Token("untouched"), Resource("untouched", shown))
    assert container.is_registered(A) and container.is_registered(given) and not container.is_registered(B)
    async with container:
        assert (await container.resolve(given)).name == "given"
    assert closed == ["t", "t"]
    assert shown == ["closed"]


async def test_a_factory_finishing_after_close_has_its_product_closed() -> None:
    closed: list[str] = []
    release = asyncio.Event()

    async def slow(_: AsyncIoCContainer) -> Resource:
        await release.wait()
        return Resource("slow", closed)

    container = AsyncIoCContainer()
    container.register(A, slow)
    pending = asyncio.create_task(container.resolve(A))
    await asyncio.sleep(0)
    await container.aclose()
    release.set()
    with pytest.raises(ContainerError, match="after the container closed"):
        await pending
    assert closed == ["slow"]


async def test_default_close_and_key_names() -> None:
    class SyncClose:
        closed = False

        def close(self) -> None:
            self.closed = True

    class AsyncViaClose:
        closed = False

        async def _done(self) -> None:
            self.closed = True

        def close(self):  # returns an awaitable, like some clients do
            return self._done()

    sync, via = SyncClose(), AsyncViaClose()
    await default_close(sync)
    await default_close(via)
    await default_close(object())
    assert sync.closed and via.closed
    assert key_name(Token("x")) == "x"
    assert key_name(SyncClose) == "test_default_close_and_key_names.<locals>.SyncClose"
    assert key_name(3) == "3"
    assert repr(Token("x")) == "Token('x')"
