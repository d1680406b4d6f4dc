"""Fixtures of the async-specific suite: one stub LLM per module, reset before each test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.parity._support import fresh_stub, stub_server_fixture


@pytest.fixture(scope="module")
def stub_server() -> Iterator[Any]:
    yield from stub_server_fixture()


@pytest.fixture
def stub(stub_server: Any) -> Any:
    return fresh_stub(stub_server)
