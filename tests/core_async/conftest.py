"""Fixtures of the async-specific suite: one stub LLM per module, reset before each test, and the twins
(the async client and its generated sync twin) for the tests that hold for both."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.parity._support import Impl, debug_runner, fresh_stub, stub_server_fixture


@pytest.fixture(scope="module")
def stub_server() -> Iterator[Any]:
    yield from stub_server_fixture()


@pytest.fixture
def stub(stub_server: Any) -> Any:
    return fresh_stub(stub_server)


@pytest.fixture(params=["core_sync", "core_async"])
def twin(request: pytest.FixtureRequest) -> Iterator[Impl]:
    """The generated sync twin, then the async client (its calls run on a debug-mode loop of its own)."""
    with debug_runner() as runner:
        yield Impl(request.param, runner)
