"""Fixtures of the parity suites: every test runs once per implementation."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from tests.parity._support import IMPLS, Impl, debug_runner, fresh_stub, stub_server_fixture


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    """The test's own debug-mode event loop (the async implementation's calls run on it)."""
    with debug_runner() as runner:
        yield runner


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest, runner: asyncio.Runner) -> Impl:
    """legacy, core_sync (generated) and core_async, each in turn."""
    return Impl(request.param, runner)


@pytest.fixture(scope="module")
def stub_server() -> Iterator[Any]:
    yield from stub_server_fixture()


@pytest.fixture
def stub(stub_server: Any) -> Any:
    return fresh_stub(stub_server)
